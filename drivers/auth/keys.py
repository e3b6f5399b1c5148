"""Command signing keys: an owner's (or another role's) Ed25519 key on disk.

The private key is unencrypted PKCS8 PEM, mode 0600, written crash-safe and
never over an existing file; it is read back only if nobody else can read it.
The device knows a key by its raw 32 bytes and names it by its kid (first 16
bytes of SHA-256 of them); :func:`parse_public_key` takes what an operator has
at hand (hex, a PEM public key, a hex or raw file).
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.atomicfile import write_atomic
from agent.auth import cose
from agent.auth.principals import key_id
from agent.errors import DecodeError, DeviceIOError, NotFoundError, PolicyError

MAX_KEY_FILE_BYTES = 16 * 1024
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


def generate_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_key_raw(key: ed25519.Ed25519PrivateKey) -> bytes:
    """The 32 bytes the device stores (``auth.grant``'s ``public_key``)."""
    return cose.raw_public(key.public_key())


def public_key_hex(key: ed25519.Ed25519PrivateKey) -> str:
    return public_key_raw(key).hex()


def public_key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id_hex(key: ed25519.Ed25519PrivateKey) -> str:
    """The kid the device names this key by (first 16 bytes of SHA-256 of the raw key)."""
    return key_id(public_key_raw(key)).hex()


def save_private_key(
    path: Path, key: ed25519.Ed25519PrivateKey, *, overwrite: bool = False
) -> None:
    """Write ``key`` as unencrypted PKCS8 PEM, mode 0600, crash-safe.

    Without ``overwrite`` an existing file is never replaced: the new file is
    hard-linked into place, which fails atomically if the name exists -- a
    check-then-write would let two runs clobber an owner key between them.
    """
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # A private key is the owner's alone: 0600 whatever the umask.
        write_atomic(path, data, 0o600, exclusive=not overwrite)
    except FileExistsError:
        raise PolicyError(f"{path} exists: refusing to overwrite a key") from None


def read_capped(path: Path, limit: int, what: str = "") -> bytes:
    """A small file read whole, refused past ``limit`` bytes (one clear error each way)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except OSError as exc:
        raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise DecodeError(f"{path} is larger than {limit} bytes{what}")
    return data


def _read_small(path: Path) -> bytes:
    return read_capped(path, MAX_KEY_FILE_BYTES, ": not a key")


def load_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 key from a PKCS8 PEM file that only its owner can read."""
    data = _read_small(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DeviceIOError(f"cannot stat {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # As ssh does: a key others can read may already be someone else's.
        raise PolicyError(f"{path} is accessible by others (mode {mode & 0o777:o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise DecodeError(f"{path} is encrypted; give an unencrypted PKCS8 key") from None
    except ValueError:
        raise DecodeError(f"{path} is not a PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DecodeError(f"{path} is not an Ed25519 key")
    return key


def parse_public_key(value: str) -> bytes:
    """The raw 32-byte Ed25519 key from 64 hex digits or a file (hex, PEM or raw bytes)."""
    if _HEX_KEY.match(value):
        return bytes.fromhex(value)
    path = Path(value)
    if not path.is_file():
        raise NotFoundError(f"{value[:80]!r} is neither 64 hex digits nor a readable file")
    data = _read_small(path)
    text = data.strip()
    if b"PRIVATE KEY" in text:
        # Enrolment takes the public half; a private key has no business on the device.
        raise DecodeError(f"{path} holds a private key: give the public key (hex or PEM)")
    if text.startswith(b"-----BEGIN PUBLIC KEY"):
        try:
            public = serialization.load_pem_public_key(text)
        except ValueError:
            raise DecodeError(f"{path} is not a PEM public key") from None
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise DecodeError(f"{path} is not an Ed25519 public key")
        return cose.raw_public(public)
    if _HEX_KEY.match(text.decode("ascii", "replace")):
        return bytes.fromhex(text.decode("ascii"))
    if len(data) == 32:
        return data
    raise DecodeError(f"{path} holds no Ed25519 public key (64 hex digits, PEM or 32 raw bytes)")
