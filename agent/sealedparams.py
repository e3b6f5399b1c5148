"""Sealed parameters: a command's secret arguments, encrypted to the device.

A signed command (:mod:`agent.auth.envelope`) is authentic but readable by the
broker and by every client allowed to subscribe to ``cmd/#`` (a Home Assistant
or Node-RED with ``#``).  Arguments that are secrets -- a camera's password,
the ONVIF password -- therefore travel only in ``args["sealed"]``: a
COSE_Encrypt0-shaped message (RFC 9052 section 5.2) that only the device's
long-term X25519 *sealing key* opens.  Handlers refuse the secret in clear
(:func:`unseal_arguments`); the wire format with a worked example is in
``docs/sealed-parameters.md``::

    16([ << {1: -25} >>,                        / protected: alg ECDH-ES + HKDF-256 /
         {-1: {1: 1, -1: 4, -2: h'<32>'},       / ephemeral X25519 key (COSE_Key, OKP) /
           4: h'<16>',                          / kid of the device's sealing key /
           5: h'<12>'},                         / IV /
         h'<AES-256-GCM ciphertext and tag>' ])

* CEK = HKDF-SHA256(X25519(ephemeral, device), salt none, info
  ``[3, [nil, nil, nil], [nil, nil, nil], [256, protected]]``), the
  COSE_KDF_Context of RFC 9053 section 5.2 with the content algorithm A256GCM
  (3); the same derivation :mod:`agent.auth.cose` uses for sealed replies.
* AAD = ``["Encrypt0", protected, external_aad]`` with external_aad the CBOR
  array ``["edge-agent sealed parameters v1", dev, cmd, ctr, ts]`` taken from
  the signed command that carries the blob: a blob lifted into another
  command, device or (counter, timestamp) no longer opens.
* plaintext: a CBOR map of the secret arguments (``{"password": "..."}``).

The device's public key: created at the first start (wrapped by the device
key, :class:`~agent.keystore.DeviceKey`, in ``StateLayout.sealing_key``),
it is given by ``edge-agent auth device-id --json`` on the device (as
authentic as the ``auth enrol`` it goes with: root on the device) and by the
owner-only command ``device.sealing_key``.  Why these two and nothing more:
over MQTT alone the device has nothing the owner already trusts to sign with
-- its replies are unsigned, and a key sent retained on a topic or in a reply
is only as good as the broker that carried it (a retained key would add a
topic anyone with publish rights could overwrite, for nothing the reply does
not give).  Against a broker that only *reads* (the threat here: the broker
and its subscribers), the reply to the owner-signed request is sound, and the
CLI checks that the kid it names is the key's.  Against one that also rewrites
replies, the owner pins the key read on the device (``edge-agent remote
--sealing-key``): nothing the broker says is then trusted, and the device
refuses a blob sealed to any other key.  The LAN binding (SPAKE2, keyed by the
sticker code) could carry the key authenticated as well; it is left out to
keep this change to one feature.

Only the CBOR arrays are built here; every primitive is ``cryptography``'s.
Opening is capped and raises only :class:`~agent.errors.DecodeError`
(malformed) or :class:`~agent.errors.VerificationError` (wrong key, wrong
command, tampered), both answered ``bad_request``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import cbor2

from agent import cbor
from agent.atomicfile import read_optional, write_atomic
from agent.auth import cose
from agent.errors import DecodeError, DeviceIOError, VerificationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import x25519

SEALED = "sealed"
COSE_ENCRYPT0_TAG = 16
AAD_LABEL = "edge-agent sealed parameters v1"
WRAP_LABEL = b"edge-agent sealed parameters x25519 v1"
KEY_BYTES = 32
KID_BYTES = 16
IV_BYTES = 12
TAG_BYTES = 16
# A few passwords fit many times over; anything larger is not a sealed parameter.
MAX_SEALED_BYTES = 4096
MAX_PLAINTEXT_BYTES = MAX_SEALED_BYTES - 128
# The blob: tag / array / unprotected map / COSE_Key map. The plaintext: one flat map.
MAX_SEALED_DEPTH = 4
MAX_PLAINTEXT_DEPTH = 2
MAX_WRAPPED_BYTES = 256
CLI_HINT = "edge-agent remote seals it itself; see docs/sealed-parameters.md"


class KeyWrapper(Protocol):
    """The key-store protocol (:class:`agent.keystore.DeviceKey`)."""

    def wrap(self, secret: bytes, label: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, label: bytes) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class Binding:
    """What a sealed blob is bound to: the signed command that carries it."""

    device_id: str
    command: str
    counter: int
    timestamp: int

    def external_aad(self) -> bytes:
        return cbor.dumps([AAD_LABEL, self.device_id, self.command, self.counter, self.timestamp])


def sealing_kid(public_key: bytes) -> bytes:
    """16 bytes naming a sealing key (SHA-256 of the raw key, as principal kids are)."""
    return hashlib.sha256(public_key).digest()[:KID_BYTES]


def _protected() -> bytes:
    return cbor.dumps({cose.HEADER_ALG: cose.ALG_ECDH_ES_HKDF_256})


def _content_key(shared: bytes, protected: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    context = cbor.dumps(
        [cose.ALG_A256GCM, [None, None, None], [None, None, None], [256, protected]]
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(shared)


def _enc_structure(protected: bytes, binding: Binding) -> bytes:
    return cbor.dumps(["Encrypt0", protected, binding.external_aad()])


def seal_params(recipient_public: bytes, params: Mapping[str, object], binding: Binding) -> bytes:
    """The ``sealed`` argument: ``params`` encrypted to the device's sealing key."""
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not params or not all(isinstance(k, str) for k in params):
        raise DecodeError("sealed parameters are a non-empty map with text keys")
    try:
        recipient = x25519.X25519PublicKey.from_public_bytes(recipient_public)
    except ValueError:
        raise DecodeError("a sealing key is a raw 32-byte X25519 public key") from None
    plaintext = cbor.dumps(dict(params))
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise DecodeError(f"sealed parameters exceed {MAX_PLAINTEXT_BYTES} bytes")
    ephemeral = x25519.X25519PrivateKey.generate()
    protected = _protected()
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError:  # a low-order point: no key agreement, nothing secret
        raise DecodeError("the sealing key is not a usable X25519 public key") from None
    key = _content_key(shared, protected)
    iv = os.urandom(IV_BYTES)
    ciphertext = AESGCM(key).encrypt(iv, plaintext, _enc_structure(protected, binding))
    unprotected = {
        cose.HEADER_EPHEMERAL_KEY: {
            cose.KEY_KTY: cose.KTY_OKP,
            cose.KEY_CRV: cose.CRV_X25519,
            cose.KEY_X: cose.raw_public(ephemeral.public_key()),
        },
        cose.HEADER_KID: sealing_kid(recipient_public),
        cose.HEADER_IV: iv,
    }
    return bytes(
        cbor2.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, [protected, unprotected, ciphertext]))
    )


@dataclasses.dataclass(frozen=True)
class SealedParts:
    protected: bytes
    ephemeral: bytes
    kid: bytes
    iv: bytes
    ciphertext: bytes


def parse_sealed(blob: object) -> SealedParts:
    """The structure of a sealed blob, checked field by field; nothing is decrypted here."""
    if not isinstance(blob, bytes):
        raise DecodeError(f"{SEALED!r} must be the bytes of a COSE_Encrypt0")
    item = cbor.loads_untrusted(blob, max_bytes=MAX_SEALED_BYTES, max_depth=MAX_SEALED_DEPTH)
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_ENCRYPT0_TAG:
        raise DecodeError(f"{SEALED!r} is not a tagged COSE_Encrypt0 (tag 16)")
    value = item.value
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise DecodeError("COSE_Encrypt0 must be an array of 3")
    protected, unprotected, ciphertext = value
    if protected != _protected():
        raise DecodeError("COSE_Encrypt0: protected header must be exactly {1: -25}")
    if not isinstance(unprotected, Mapping) or set(unprotected) != {
        cose.HEADER_EPHEMERAL_KEY,
        cose.HEADER_KID,
        cose.HEADER_IV,
    }:
        raise DecodeError("COSE_Encrypt0: unprotected header must hold -1, 4 and 5")
    ephemeral, kid, iv = (
        unprotected[cose.HEADER_EPHEMERAL_KEY],
        unprotected[cose.HEADER_KID],
        unprotected[cose.HEADER_IV],
    )
    if (
        not isinstance(ephemeral, Mapping)
        or ephemeral.get(cose.KEY_KTY) != cose.KTY_OKP
        or ephemeral.get(cose.KEY_CRV) != cose.CRV_X25519
        or not isinstance(ephemeral.get(cose.KEY_X), bytes)
        or len(ephemeral[cose.KEY_X]) != KEY_BYTES
    ):
        raise DecodeError("COSE_Encrypt0: ephemeral key must be an X25519 COSE_Key (-1)")
    if not isinstance(kid, bytes) or len(kid) != KID_BYTES:
        raise DecodeError(f"COSE_Encrypt0: kid must be {KID_BYTES} bytes")
    if not isinstance(iv, bytes) or len(iv) != IV_BYTES:
        raise DecodeError(f"COSE_Encrypt0: IV must be {IV_BYTES} bytes")
    if not isinstance(ciphertext, bytes) or len(ciphertext) < TAG_BYTES:
        raise DecodeError("COSE_Encrypt0: ciphertext must be bytes with a 16-byte tag")
    return SealedParts(protected, ephemeral[cose.KEY_X], kid, iv, ciphertext)


def open_params(
    private_key: x25519.X25519PrivateKey, blob: object, binding: Binding
) -> dict[str, object]:
    """The device's side of :func:`seal_params`: the secret arguments, or an error."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    parts = parse_sealed(blob)
    own = cose.raw_public(private_key.public_key())
    if parts.kid != sealing_kid(own):
        raise VerificationError(
            f"{SEALED!r} is sealed to another key (kid {parts.kid.hex()}), not this device's "
            f"{sealing_kid(own).hex()}: fetch it again with device.sealing_key"
        )
    try:
        shared = private_key.exchange(x25519.X25519PublicKey.from_public_bytes(parts.ephemeral))
        key = _content_key(shared, parts.protected)
        plaintext = AESGCM(key).decrypt(
            parts.iv, parts.ciphertext, _enc_structure(parts.protected, binding)
        )
    except (InvalidTag, ValueError):
        raise VerificationError(
            f"{SEALED!r} does not open: it was sealed for another command, device or "
            "signature, or altered"
        ) from None
    params = cbor.loads_untrusted(
        plaintext, max_bytes=MAX_PLAINTEXT_BYTES, max_depth=MAX_PLAINTEXT_DEPTH
    )
    if not isinstance(params, dict) or not params or not all(isinstance(k, str) for k in params):
        raise DecodeError("sealed parameters must be a non-empty map with text keys")
    return params


class PlaintextSecretError(DecodeError):
    """A secret argument came in clear: refused before anything reads it."""


def unseal_arguments(
    args: Mapping[str, object],
    *,
    command: str,
    secret_fields: frozenset[str],
    opener: SealingKey,
    binding: Binding | None,
) -> dict[str, object]:
    """``args`` with ``sealed`` opened and merged; refuses a secret field sent in clear.

    ``binding``: the signed command being handled (None: it was not signed,
    which a secret-bearing command never is, the authoriser refuses it first).
    """
    clear = sorted(secret_fields & set(args))
    if clear:
        raise PlaintextSecretError(
            f"{command}: {', '.join(clear)} must not travel in clear; send it inside "
            f"{SEALED!r} (COSE_Encrypt0 to the device's sealing key; {CLI_HINT})"
        )
    rest = {k: v for k, v in args.items() if k != SEALED}
    if SEALED not in args:
        return rest
    if binding is None:
        raise DecodeError(f"{SEALED!r} needs a signed command to be bound to")
    opened = opener.open(args[SEALED], binding)
    extra = sorted(set(opened) - secret_fields)
    if extra:
        allowed = ", ".join(sorted(secret_fields))
        raise DecodeError(
            f"{command}: only {allowed} may travel sealed, not {', '.join(extra)[:80]}"
        )
    rest.update(opened)
    return rest


class SealingKey:
    """The device's long-term X25519 sealing key, made once and kept wrapped.

    The file holds the 32-byte private key wrapped by the device key (the
    key-store protocol); it is created exclusively at the first use and never
    replaced: a damaged file is an error, not a silent new key.  Thread-safe.
    """

    def __init__(self, path: pathlib.Path, wrapper: KeyWrapper) -> None:
        self.path = path
        self._wrapper = wrapper
        self._lock = threading.Lock()
        self._private: x25519.X25519PrivateKey | None = None

    def private_key(self) -> x25519.X25519PrivateKey:
        from cryptography.hazmat.primitives.asymmetric import x25519

        with self._lock:
            if self._private is None:
                raw = self._load_or_create()
                self._private = x25519.X25519PrivateKey.from_private_bytes(raw)
            return self._private

    def _load_or_create(self) -> bytes:
        wrapped = read_optional(self.path, MAX_WRAPPED_BYTES)
        if wrapped is None:
            from cryptography.hazmat.primitives.asymmetric import x25519

            raw = _raw_private(x25519.X25519PrivateKey.generate())
            # Another process (the CLI) may make it first: then use theirs.
            with contextlib.suppress(FileExistsError):
                write_atomic(self.path, self._wrapper.wrap(raw, WRAP_LABEL), exclusive=True)
            wrapped = read_optional(self.path, MAX_WRAPPED_BYTES)
        if wrapped is None:
            raise DeviceIOError(f"sealing key {self.path} vanished while it was made")
        try:
            raw = self._wrapper.unwrap(wrapped, WRAP_LABEL)
        except DecodeError:
            raise DeviceIOError(
                f"sealing key {self.path} is damaged; sealed parameters cannot be opened"
            ) from None
        if len(raw) != KEY_BYTES:
            raise DeviceIOError(f"sealing key {self.path} is damaged (not 32 bytes)")
        return raw

    def public_key(self) -> bytes:
        return cose.raw_public(self.private_key().public_key())

    def kid(self) -> bytes:
        return sealing_kid(self.public_key())

    def describe(self) -> dict[str, object]:
        """What ``device.sealing_key`` and ``auth device-id --json`` give the owner."""
        public = self.public_key()
        return {"alg": cose.ALG_ECDH_ES_HKDF_256, "key": public, "kid": sealing_kid(public).hex()}

    def open(self, blob: object, binding: Binding) -> dict[str, object]:
        return open_params(self.private_key(), blob, binding)

    def secrets(self) -> Iterable[str]:
        """The private key's spellings a log line must never carry (the redactor's)."""
        if self._private is None:
            return []
        return [_raw_private(self._private).hex()]


def _raw_private(key: x25519.X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
