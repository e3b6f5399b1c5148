"""Trusted manifest keys and COSE_Sign1 (detached payload) verification.

Pure: keys are parsed from PEM/DER bytes the driver read; signatures are
checked with ``cryptography`` only.  A key id is the first 16 bytes of the
SHA-256 of the key's SubjectPublicKeyInfo, carried in the protected header
(label 4) by our signer; the SUIT draft's examples carry none, so without a
kid every trusted key of a matching type is tried.

``cryptography`` is imported lazily, at the first key parse or signature
check, so importing this module (as the upgrade service does at boot) does
not load it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import cbor2

from agent.errors import DecodeError, PolicyError, VerificationError
from agent.upgrade import cborguard
from agent.upgrade.algorithms import (
    ALG_ED25519,
    ALG_EDDSA,
    ALG_ES256,
    COSE_ALG_IDS,
    SignatureAlgorithm,
)
from agent.upgrade.errors import UnsupportedAlgorithmError

HEADER_ALG = 1
HEADER_KID = 4
COSE_SIGN1_TAG = 18
MAX_HEADER_BYTES = 1024

if TYPE_CHECKING:
    from typing import TypeAlias

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclasses.dataclass(frozen=True)
class TrustedKey:
    key_id: bytes
    public_key: PublicKey
    spki_der: bytes

    @property
    def algorithms(self) -> frozenset[int]:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        if isinstance(self.public_key, ed25519.Ed25519PublicKey):
            return frozenset({ALG_ED25519, ALG_EDDSA})
        return frozenset({ALG_ES256})


def key_from_bytes(data: bytes) -> TrustedKey:
    """Parse a PEM or DER SubjectPublicKeyInfo (Ed25519 or P-256)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DecodeError(f"not a public key: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise PolicyError(f"EC curve {key.curve.name} is not supported (P-256 only)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise PolicyError(f"key type {type(key).__name__} is not supported")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TrustedKey(hashlib.sha256(der).digest()[:16], key, der)


@dataclasses.dataclass(frozen=True)
class KeySet:
    keys: tuple[TrustedKey, ...]
    accepted_algorithms: frozenset[int] = frozenset({ALG_ED25519, ALG_EDDSA})

    @classmethod
    def from_keys(
        cls, keys: Iterable[TrustedKey], algorithms: Iterable[SignatureAlgorithm]
    ) -> KeySet:
        unique = {k.key_id: k for k in keys}
        return cls(tuple(unique.values()), frozenset(COSE_ALG_IDS[a] for a in algorithms))

    def with_keys(self, keys: Iterable[TrustedKey]) -> KeySet:
        return dataclasses.replace(self, keys=tuple({k.key_id: k for k in keys}.values()))

    @property
    def key_ids(self) -> frozenset[bytes]:
        return frozenset(k.key_id for k in self.keys)


@dataclasses.dataclass(frozen=True)
class CoseSign1:
    protected: bytes
    algorithm: int
    key_id: bytes | None
    signature: bytes


def parse_cose_sign1(data: bytes) -> CoseSign1:
    item = cborguard.loads(data, max_bytes=4096)
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise DecodeError("signature is not a tagged COSE_Sign1 (tag 18)")
    value = item.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise DecodeError("COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = value
    if not isinstance(protected, bytes) or not isinstance(unprotected, Mapping):
        raise DecodeError("COSE_Sign1 headers malformed")
    if payload is not None:
        raise DecodeError("COSE_Sign1 payload must be detached (nil)")
    if not isinstance(signature, bytes):
        raise DecodeError("COSE_Sign1 signature must be a byte string")
    headers = cborguard.loads(protected, max_bytes=MAX_HEADER_BYTES) if protected else {}
    if not isinstance(headers, Mapping):
        raise DecodeError("COSE protected header must be a map")
    alg = headers.get(HEADER_ALG)
    if HEADER_ALG in unprotected:
        raise DecodeError("COSE alg must be in the protected header")
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise DecodeError("COSE protected header lacks an integer alg")
    kid = headers.get(HEADER_KID, unprotected.get(HEADER_KID))
    if kid is not None and not isinstance(kid, bytes):
        raise DecodeError("COSE kid must be a byte string")
    return CoseSign1(protected, alg, kid, signature)


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cborguard.dumps(["Signature1", protected, b"", payload])


def _verify_one(key: TrustedKey, alg: int, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        if isinstance(key.public_key, ed25519.Ed25519PublicKey):
            key.public_key.verify(signature, message)
        else:
            if len(signature) != 64:
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return alg in key.algorithms


def verify_sign1(
    sign1: CoseSign1, payload: bytes, keys: Iterable[TrustedKey], accepted: frozenset[int]
) -> TrustedKey | None:
    """Return the key that made this signature over the detached ``payload``, if any."""
    if sign1.algorithm not in accepted:
        raise UnsupportedAlgorithmError(
            f"signature algorithm {sign1.algorithm} is not accepted by policy "
            f"(accepted: {sorted(accepted)})"
        )
    message = sig_structure(sign1.protected, payload)
    for key in keys:
        if sign1.algorithm not in key.algorithms:
            continue
        if sign1.key_id is not None and sign1.key_id != key.key_id:
            continue
        if _verify_one(key, sign1.algorithm, sign1.signature, message):
            return key
    return None


def require_signature(found: TrustedKey | None) -> TrustedKey:
    if found is None:
        raise VerificationError("no signature by a trusted key")
    return found
