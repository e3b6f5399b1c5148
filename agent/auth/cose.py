"""The two COSE structures commands need, over ``cryptography`` (RFC 9052/9053).

* COSE_Sign1 (tag 18) with EdDSA/Ed25519 (alg -8) and the payload embedded:
  a signed command.
* COSE_Encrypt (tag 96) with one recipient using ECDH-ES + HKDF-256 (alg -25)
  over X25519 and AES-256-GCM (alg 3) for the content: a reply only the
  requester can read.  The sender's ephemeral key travels in the recipient's
  unprotected header (-1) as a COSE_Key; the KDF context is RFC 9053 5.2 with
  empty party info.

Only the CBOR arrays are built here; every primitive is ``cryptography``'s.
Parsing is capped and raises only :class:`~agent.errors.DecodeError` or
:class:`~agent.errors.VerificationError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import cbor2

from agent import cbor, cose
from agent.errors import DecodeError, VerificationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

# ``cryptography`` is imported where it is used: the CLI's start-up (``--help``,
# ``config check``) composes the command path but never signs or verifies.

COSE_SIGN1_TAG = cose.COSE_SIGN1_TAG
COSE_ENCRYPT_TAG = 96
HEADER_ALG = cose.HEADER_ALG
HEADER_KID = cose.HEADER_KID
HEADER_IV = 5
HEADER_EPHEMERAL_KEY = -1
ALG_EDDSA = -8
ALG_A256GCM = 3
ALG_ECDH_ES_HKDF_256 = -25
KTY_OKP = 1
CRV_X25519 = 4
KEY_KTY, KEY_CRV, KEY_X = 1, -1, -2
MAX_HEADER_BYTES = 512


def raw_public(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _headers(protected: object, what: str) -> Mapping[object, object]:
    if not isinstance(protected, bytes):
        raise DecodeError(f"{what}: protected header must be a byte string")
    if not protected:
        return {}
    headers = cbor.loads_untrusted(protected, max_bytes=MAX_HEADER_BYTES, max_depth=4)
    if not isinstance(headers, Mapping):
        raise DecodeError(f"{what}: protected header must be a map")
    return headers


# --- COSE_Sign1 (structure in agent.cose, shared with upgrade manifests) ------------


def _header_decoder(protected: bytes) -> object:
    return cbor.loads_untrusted(protected, max_bytes=MAX_HEADER_BYTES, max_depth=4)


@dataclasses.dataclass(frozen=True)
class Sign1:
    protected: bytes
    key_id: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return cose.sig_structure(self.protected, self.payload)


def sign1(private_key: ed25519.Ed25519PrivateKey, key_id: bytes, payload: bytes) -> bytes:
    protected = cbor.dumps({HEADER_ALG: ALG_EDDSA, HEADER_KID: key_id})
    signature = private_key.sign(cose.sig_structure(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def parse_sign1(item: object) -> Sign1:
    """Structure of an already decoded item; the signature is not checked here."""
    parts = cose.parse_sign1(item, _header_decoder, "COSE_Sign1")
    if parts.algorithm != ALG_EDDSA:
        raise DecodeError("COSE_Sign1: only EdDSA (alg -8) is accepted for commands")
    kid = parts.headers.get(HEADER_KID)
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= 32:
        raise DecodeError("COSE_Sign1: protected header needs a kid of 1..32 bytes")
    if parts.payload is None:
        raise DecodeError("COSE_Sign1: payload and signature must be byte strings")
    return Sign1(parts.protected, kid, parts.payload, parts.signature)


def verify_sign1(message: Sign1, public_key: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(public_key)
        key.verify(message.signature, message.to_be_signed())
    except (InvalidSignature, ValueError) as exc:
        raise VerificationError("command signature does not verify") from exc


# --- COSE_Encrypt to an X25519 key ---------------------------------------------


def _kdf_context(recipient_protected: bytes) -> bytes:
    return cbor.dumps(
        [ALG_A256GCM, [None, None, None], [None, None, None], [256, recipient_protected]]
    )


def _content_key(shared: bytes, recipient_protected: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_kdf_context(recipient_protected)
    )
    return hkdf.derive(shared)


def seal(recipient_public: bytes, plaintext: bytes, *, key_id: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` so that only the holder of ``recipient_public``'s key reads it."""
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        recipient = x25519.X25519PublicKey.from_public_bytes(recipient_public)
    except ValueError as exc:
        raise DecodeError("reply key must be a 32-byte X25519 public key") from exc
    ephemeral = x25519.X25519PrivateKey.generate()
    recipient_protected = cbor.dumps({HEADER_ALG: ALG_ECDH_ES_HKDF_256})
    key = _content_key(ephemeral.exchange(recipient), recipient_protected)
    protected = cbor.dumps({HEADER_ALG: ALG_A256GCM})
    iv = os.urandom(12)
    aad = cbor.dumps(["Encrypt", protected, b""])
    ciphertext = AESGCM(key).encrypt(iv, plaintext, aad)
    ephemeral_key = {
        KEY_KTY: KTY_OKP,
        KEY_CRV: CRV_X25519,
        KEY_X: raw_public(ephemeral.public_key()),
    }
    recipient_unprotected: dict[int, object] = {HEADER_EPHEMERAL_KEY: ephemeral_key}
    if key_id:
        recipient_unprotected[HEADER_KID] = key_id
    recipient_array = [recipient_protected, recipient_unprotected, b""]
    return cbor2.dumps(
        cbor2.CBORTag(COSE_ENCRYPT_TAG, [protected, {HEADER_IV: iv}, ciphertext, [recipient_array]])
    )


def open_sealed(private_key: x25519.X25519PrivateKey, data: bytes, *, max_bytes: int) -> bytes:
    """The requester's side of :func:`seal`."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    item = cbor.loads_untrusted(data, max_bytes=max_bytes, max_depth=8)
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_ENCRYPT_TAG:
        raise DecodeError("not a tagged COSE_Encrypt (tag 96)")
    value = item.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise DecodeError("COSE_Encrypt must be an array of 4")
    protected, unprotected, ciphertext, recipients = value
    if _headers(protected, "COSE_Encrypt").get(HEADER_ALG) != ALG_A256GCM:
        raise DecodeError("COSE_Encrypt: content must be A256GCM")
    iv = unprotected.get(HEADER_IV) if isinstance(unprotected, Mapping) else None
    if not isinstance(iv, bytes) or len(iv) != 12 or not isinstance(ciphertext, bytes):
        raise DecodeError("COSE_Encrypt: iv or ciphertext malformed")
    if not isinstance(recipients, list | tuple) or len(recipients) != 1:
        raise DecodeError("COSE_Encrypt: exactly one recipient expected")
    recipient = recipients[0]
    if not isinstance(recipient, list | tuple) or len(recipient) != 3:
        raise DecodeError("COSE_Encrypt: recipient malformed")
    r_protected, r_unprotected = recipient[0], recipient[1]
    if _headers(r_protected, "recipient").get(HEADER_ALG) != ALG_ECDH_ES_HKDF_256:
        raise DecodeError("COSE_Encrypt: recipient must use ECDH-ES + HKDF-256")
    ephemeral = (
        r_unprotected.get(HEADER_EPHEMERAL_KEY) if isinstance(r_unprotected, Mapping) else None
    )
    x = ephemeral.get(KEY_X) if isinstance(ephemeral, Mapping) else None
    if not isinstance(x, bytes) or len(x) != 32:
        raise DecodeError("COSE_Encrypt: ephemeral X25519 key malformed")
    assert isinstance(r_protected, bytes) and isinstance(protected, bytes)
    try:
        shared = private_key.exchange(x25519.X25519PublicKey.from_public_bytes(x))
        key = _content_key(shared, r_protected)
        return AESGCM(key).decrypt(iv, ciphertext, cbor.dumps(["Encrypt", protected, b""]))
    except (InvalidTag, ValueError) as exc:
        raise VerificationError("sealed reply does not decrypt with this key") from exc
