"""The at-rest format of personal data: AES-256-GCM under a data key per domain.

Every store of personal data (gallery, watch-list, queued events, snapshots,
log store, Wi-Fi credentials) writes only sealed blobs.  A blob names the key
it was sealed under, so a reader finds that key, and a blob whose key was
destroyed is simply gone (:class:`KeyDestroyed`): that is what makes erasure
hold for every copy SQLite, the journal or the file system left behind.

Layout of a sealed blob (all integers big-endian)::

    magic "EAS1" | domain length (1) | domain (ASCII) | key number (4) | nonce (12) | ciphertext+tag

The header is authenticated as associated data together with the caller's
``context`` (a row's topic, a file's role), so a blob cannot be moved to
another domain, key or place without failing to open.
"""

from __future__ import annotations

import dataclasses
import os
import struct

from agent.errors import DecodeError, NotFoundError

MAGIC = b"EAS1"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
MAX_DOMAIN_BYTES = 40
_NUMBER = struct.Struct(">I")


class SealedDataError(DecodeError):
    """A sealed blob is malformed or fails authentication (damaged or tampered)."""


class KeyDestroyed(NotFoundError):
    """The blob's data key no longer exists: its data was erased (crypto-erase)."""

    def __init__(self, domain: str, number: int) -> None:
        super().__init__(f"data key {domain}#{number} was destroyed")
        self.domain = domain
        self.number = number


@dataclasses.dataclass(frozen=True)
class DataKey:
    domain: str
    number: int
    secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes")


@dataclasses.dataclass(frozen=True)
class SealedHeader:
    domain: str
    number: int
    length: int  # bytes of header, nonce excluded


def header_bytes(domain: str, number: int) -> bytes:
    raw = domain.encode("ascii")
    if not raw or len(raw) > MAX_DOMAIN_BYTES:
        raise ValueError(f"bad key domain {domain!r}")
    return MAGIC + bytes([len(raw)]) + raw + _NUMBER.pack(number)


def is_sealed(blob: bytes) -> bool:
    return blob[:4] == MAGIC


def read_header(blob: bytes) -> SealedHeader:
    """The domain and key number a blob names; :class:`SealedDataError` if it is not one."""
    if not is_sealed(blob) or len(blob) < 5:
        raise SealedDataError("not a sealed blob")
    size = blob[4]
    end = 5 + size
    if size == 0 or size > MAX_DOMAIN_BYTES or len(blob) < end + 4 + NONCE_BYTES + TAG_BYTES:
        raise SealedDataError("sealed blob header is truncated")
    try:
        domain = blob[5:end].decode("ascii")
    except UnicodeDecodeError:
        raise SealedDataError("sealed blob names a non-ASCII key domain") from None
    (number,) = _NUMBER.unpack_from(blob, end)
    return SealedHeader(domain, number, end + 4)


def seal(key: DataKey, plaintext: bytes, context: bytes = b"") -> bytes:
    # Imported here: the CLI's --help and other light paths never load the crypto stack.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = header_bytes(key.domain, key.number)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(key.secret).encrypt(nonce, plaintext, header + context)


def open_sealed(key: DataKey, blob: bytes, context: bytes = b"") -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = read_header(blob)
    if (header.domain, header.number) != (key.domain, key.number):
        raise SealedDataError(
            f"blob is sealed under {header.domain}#{header.number}, not {key.domain}#{key.number}"
        )
    nonce = blob[header.length : header.length + NONCE_BYTES]
    try:
        return AESGCM(key.secret).decrypt(
            nonce, blob[header.length + NONCE_BYTES :], blob[: header.length] + context
        )
    except InvalidTag:
        raise SealedDataError(
            f"sealed blob under {key.domain}#{key.number} fails authentication"
        ) from None
