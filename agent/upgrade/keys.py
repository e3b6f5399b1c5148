"""Trusted manifest keys and COSE_Sign1 (detached payload) verification.

Pure: keys are parsed from PEM/DER bytes the driver read; signatures are
checked with ``cryptography`` only; the COSE_Sign1 structure is
:mod:`agent.cose`'s, shared with signed commands.  Our key id is the first 16
bytes of the SHA-256 of the key's SubjectPublicKeyInfo, carried in the
protected header (label 4) by our signer.  A kid that is one of ours selects
that key; any other kid (another tool's format) or none means every trusted key
of a fitting type is tried, and a refusal names the real reason
(:func:`refusal_error`).

``cryptography`` is imported lazily, at the first key parse or signature
check, so importing this module (as the upgrade service does at boot) does
not load it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from agent import cose
from agent.errors import DecodeError, PolicyError, VerificationError
from agent.upgrade import cborguard
from agent.upgrade.algorithms import (
    ALG_ED25519,
    ALG_EDDSA,
    ALG_ES256,
    COSE_ALG_IDS,
    SignatureAlgorithm,
)
from agent.upgrade.errors import BadSignatureError, UnknownKeyError, UnsupportedAlgorithmError

HEADER_ALG = cose.HEADER_ALG
HEADER_KID = cose.HEADER_KID
COSE_SIGN1_TAG = cose.COSE_SIGN1_TAG
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


def _header_decoder(protected: bytes) -> object:
    return cborguard.loads(protected, max_bytes=MAX_HEADER_BYTES)


def parse_cose_sign1(data: bytes) -> CoseSign1:
    """A detached-payload COSE_Sign1 of an authentication wrapper (structure: agent.cose)."""
    parts = cose.parse_sign1(cborguard.loads(data, max_bytes=4096), _header_decoder)
    if parts.payload is not None:
        raise DecodeError("COSE_Sign1 payload must be detached (nil)")
    alg = parts.algorithm
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise DecodeError("COSE protected header lacks an integer alg")
    kid = parts.key_id
    if kid is not None and not isinstance(kid, bytes):
        raise DecodeError("COSE kid must be a byte string")
    return CoseSign1(parts.protected, alg, kid, parts.signature)


def _verify_one(key: TrustedKey, alg: int, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if alg not in key.algorithms:
        return False
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
    return True


class Refusal(enum.Enum):
    """Why a signature verified with none of the keys, most telling first."""

    BAD_SIGNATURE = "bad-signature"  # its kid names a trusted key, which rejects it
    NO_FITTING_KEY = "no-fitting-key"  # no trusted key can make this algorithm's signatures
    UNKNOWN_KEY = "unknown-key"  # a kid we do not know, and no trusted key verifies it
    NO_KEY_VERIFIES = "no-key-verifies"  # no kid; no trusted key verifies it


@dataclasses.dataclass(frozen=True)
class SignatureCheck:
    key: TrustedKey | None
    refusal: Refusal | None = None
    detail: str = ""


def check_sign1(
    sign1: CoseSign1, payload: bytes, keys: Iterable[TrustedKey], accepted: frozenset[int]
) -> SignatureCheck:
    """Which trusted key made this signature over the detached ``payload``, or why none did.

    A kid that is one of ours selects that key alone; any other kid (another
    tool's format, e.g. suit-generator's CBOR-encoded integer) or none means
    every trusted key able to make the algorithm's signatures is tried.
    """
    if sign1.algorithm not in accepted:
        raise UnsupportedAlgorithmError(
            f"signature algorithm {sign1.algorithm} is not accepted by policy "
            f"(accepted: {sorted(accepted)})"
        )
    message = cose.sig_structure(sign1.protected, payload)
    keys = tuple(keys)
    named = [k for k in keys if sign1.key_id is not None and k.key_id == sign1.key_id]
    if named:
        key = named[0]
        if _verify_one(key, sign1.algorithm, sign1.signature, message):
            return SignatureCheck(key)
        return SignatureCheck(None, Refusal.BAD_SIGNATURE, key.key_id.hex())
    fitting = [k for k in keys if sign1.algorithm in k.algorithms]
    for key in fitting:
        if _verify_one(key, sign1.algorithm, sign1.signature, message):
            return SignatureCheck(key)
    if not fitting:
        return SignatureCheck(None, Refusal.NO_FITTING_KEY, str(sign1.algorithm))
    if sign1.key_id is not None:
        return SignatureCheck(None, Refusal.UNKNOWN_KEY, sign1.key_id.hex()[:64])
    return SignatureCheck(None, Refusal.NO_KEY_VERIFIES)


def verify_sign1(
    sign1: CoseSign1, payload: bytes, keys: Iterable[TrustedKey], accepted: frozenset[int]
) -> TrustedKey | None:
    """Return the key that made this signature over the detached ``payload``, if any."""
    return check_sign1(sign1, payload, keys, accepted).key


def refusal_error(checks: Iterable[SignatureCheck], trusted: int) -> VerificationError:
    """The one error that names the real reason no signature verified."""
    found = {c.refusal: c.detail for c in checks if c.refusal is not None}
    if Refusal.BAD_SIGNATURE in found:
        return BadSignatureError(
            f"the signature by trusted key {found[Refusal.BAD_SIGNATURE]} does not verify: "
            "the manifest or its signature was altered"
        )
    if Refusal.UNKNOWN_KEY in found:
        return UnknownKeyError(
            f"signed by key id {found[Refusal.UNKNOWN_KEY]}, which is not a trusted key here; "
            f"none of the {trusted} trusted key(s) verifies the signature"
        )
    if Refusal.NO_FITTING_KEY in found:
        return UnknownKeyError(
            f"signed with algorithm {found[Refusal.NO_FITTING_KEY]}, but no trusted key "
            "is of a type that makes such signatures"
        )
    return UnknownKeyError(
        f"no trusted key verifies the signature (it names no key id; {trusted} trusted "
        "key(s) tried): an unknown signer or an altered manifest"
    )
