"""Building and signing SUIT envelopes (the vendor side; used by ``upgrade sign`` and tests).

``cryptography`` is imported inside the signing functions: the device side
imports this module only for :func:`vendor_uuid`/:func:`class_uuid`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cbor2

from agent.cose import COSE_SIGN1_TAG, HEADER_ALG, HEADER_KID, sig_structure
from agent.errors import PolicyError
from agent.upgrade import cborguard
from agent.upgrade.algorithms import ALG_EDDSA, ALG_ES256
from agent.upgrade.digest import ALG_SHA256, encode_digest
from agent.upgrade.keys import TrustedKey, key_from_bytes
from agent.upgrade.manifest import (
    C_CLASS,
    C_IMAGE_MATCH,
    C_VENDOR,
    COMMON_COMPONENTS,
    COMMON_SHARED_SEQUENCE,
    D_FETCH,
    D_INVOKE,
    D_OVERRIDE_PARAMETERS,
    M_COMMON,
    M_EXPIRES,
    M_INSTALL,
    M_INVOKE,
    M_NEW_KEYS,
    M_PRECURSOR,
    M_SEQUENCE,
    M_SOFTWARE_VERSION,
    M_VALIDATE,
    M_VERSION,
    P_CLASS_ID,
    P_IMAGE_DIGEST,
    P_IMAGE_SIZE,
    P_URI,
    P_VENDOR_ID,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

REPORT = 15  # suit-reporting-policy: record success/failure, send both


def vendor_uuid(vendor_domain: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, vendor_domain)


def class_uuid(vendor_id: uuid.UUID, hardware_class: str) -> uuid.UUID:
    return uuid.uuid5(vendor_id, hardware_class)


@dataclasses.dataclass(frozen=True)
class ManifestSpec:
    sequence: int
    vendor_id: uuid.UUID
    class_id: uuid.UUID
    image_digest: bytes
    image_size: int
    uri: str
    software_version: str = ""
    expires_at: int | None = None
    precursor_digest: bytes | None = None
    new_keys: tuple[bytes, ...] = ()  # SubjectPublicKeyInfo DER


def _bstr(value: object) -> bytes:
    return cborguard.dumps(value)


def build_manifest(spec: ManifestSpec) -> bytes:
    shared = [
        D_OVERRIDE_PARAMETERS,
        {
            P_VENDOR_ID: spec.vendor_id.bytes,
            P_CLASS_ID: spec.class_id.bytes,
            P_IMAGE_DIGEST: encode_digest(spec.image_digest),
            P_IMAGE_SIZE: spec.image_size,
        },
        C_VENDOR,
        REPORT,
        C_CLASS,
        REPORT,
    ]
    common = {COMMON_COMPONENTS: [[b"\x00"]], COMMON_SHARED_SEQUENCE: _bstr(shared)}
    manifest: dict[int, object] = {
        M_VERSION: 1,
        M_SEQUENCE: spec.sequence,
        M_COMMON: _bstr(common),
        M_VALIDATE: _bstr([C_IMAGE_MATCH, REPORT]),
        M_INVOKE: _bstr([D_INVOKE, REPORT]),
        M_INSTALL: _bstr(
            [D_OVERRIDE_PARAMETERS, {P_URI: spec.uri}, D_FETCH, 2, C_IMAGE_MATCH, REPORT]
        ),
    }
    if spec.software_version:
        manifest[M_SOFTWARE_VERSION] = spec.software_version
    if spec.expires_at is not None:
        manifest[M_EXPIRES] = spec.expires_at
    if spec.precursor_digest is not None:
        manifest[M_PRECURSOR] = [ALG_SHA256, spec.precursor_digest]
    if spec.new_keys:
        manifest[M_NEW_KEYS] = list(spec.new_keys)
    return cborguard.dumps(manifest)


def public_key_of(private: PrivateKey) -> TrustedKey:
    from cryptography.hazmat.primitives import serialization

    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_from_bytes(der)


def sign1(private: PrivateKey, payload: bytes, *, algorithm: int | None = None) -> bytes:
    """A detached COSE_Sign1 over ``payload`` with our key id.

    ``algorithm``: None for the key's default -- EdDSA (-8) for Ed25519, which
    every COSE library reads, ES256 (-7) for P-256 -- or an id that fits the key
    (Ed25519 keys also sign as the fully specified Ed25519, -19).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = public_key_of(private)
    is_ed25519 = isinstance(private, ed25519.Ed25519PrivateKey)
    default = ALG_EDDSA if is_ed25519 else ALG_ES256
    alg = default if algorithm is None else algorithm
    if alg not in key.algorithms:
        kind = "an Ed25519" if is_ed25519 else "a P-256"
        raise PolicyError(f"algorithm {alg} does not fit {kind} key")
    protected = cborguard.dumps({HEADER_ALG: alg, HEADER_KID: key.key_id})
    if isinstance(private, ed25519.Ed25519PrivateKey):
        signature = private.sign(sig_structure(protected, payload))
    else:
        der = private.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, None, signature]))


def sign_envelope(
    manifest: bytes, signers: Sequence[PrivateKey], *, algorithm: int | None = None
) -> bytes:
    """Wrap ``manifest`` in a tag-107 envelope signed by each of ``signers``."""
    digest = encode_digest(hashlib.sha256(cbor2.dumps(manifest)).digest())
    auth = [digest, *(sign1(k, digest, algorithm=algorithm) for k in signers)]
    return cbor2.dumps(cbor2.CBORTag(107, {2: cborguard.dumps(auth), 3: manifest}))


def load_private_key(pem: bytes) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise PolicyError(f"key type {type(key).__name__} cannot sign manifests")
    return key


def private_key_pem(key: PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
