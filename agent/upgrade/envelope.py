"""SUIT envelope (tag 107) decoding and authentication, as a pure function over bytes.

``verify_envelope(data, keys)`` checks, in order: size/depth caps, the envelope
shape, the SHA-256 digest of the bstr-wrapped manifest against the
authentication wrapper, at least one COSE_Sign1 by a trusted key over that
digest, and -- for a key-rotation manifest -- a signature by every key it
introduces.  Only then is the manifest interpreted (:mod:`manifest`).
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Mapping

import cbor2

from agent.errors import DecodeError, PolicyError, VerificationError
from agent.upgrade import cborguard
from agent.upgrade.digest import parse_digest, wrapped_sha256
from agent.upgrade.errors import UnsupportedFeatureError
from agent.upgrade.keys import (
    KeySet,
    SignatureCheck,
    TrustedKey,
    check_sign1,
    parse_cose_sign1,
    refusal_error,
)
from agent.upgrade.manifest import Manifest, parse_manifest

ENVELOPE_TAG = 107
KEY_AUTH = 2
KEY_MANIFEST = 3
SEVERABLE_KEYS = frozenset({16, 20, 23})  # payload-fetch, install, text
MAX_SIGNATURES = 8


@dataclasses.dataclass(frozen=True)
class Envelope:
    digest_bytes: bytes  # the encoded SUIT_Digest the signatures cover
    manifest_digest: bytes  # SHA-256 of the bstr-wrapped manifest
    signatures: tuple[bytes, ...]
    manifest_bytes: bytes
    severable: dict[int, bytes]


@dataclasses.dataclass(frozen=True)
class VerifiedManifest:
    manifest: Manifest
    manifest_digest: bytes
    signers: tuple[bytes, ...]
    # Keys trusted after applying this manifest (rotation), else the input set.
    keys: KeySet
    envelope: bytes


def decode_envelope(data: bytes, *, max_bytes: int = 64 * 1024) -> Envelope:
    top = cborguard.loads(data, max_bytes=max_bytes)
    if not isinstance(top, cbor2.CBORTag) or top.tag != ENVELOPE_TAG:
        raise DecodeError("not a SUIT envelope (CBOR tag 107)")
    body = top.value
    if not isinstance(body, Mapping):
        raise DecodeError("SUIT envelope must be a map")
    severable: dict[int, bytes] = {}
    for key, value in body.items():
        if isinstance(key, str):
            raise UnsupportedFeatureError("integrated payloads in the envelope are not supported")
        if key in (KEY_AUTH, KEY_MANIFEST):
            continue
        if key in SEVERABLE_KEYS and isinstance(value, bytes):
            severable[key] = value
            continue
        raise UnsupportedFeatureError(f"envelope member {key!r} is not supported")
    auth_raw, manifest_bytes = body.get(KEY_AUTH), body.get(KEY_MANIFEST)
    if not isinstance(auth_raw, bytes):
        raise VerificationError("envelope has no authentication wrapper")
    if not isinstance(manifest_bytes, bytes):
        raise DecodeError("envelope has no bstr-wrapped manifest")
    auth = cborguard.loads(auth_raw, max_bytes=max_bytes)
    if not isinstance(auth, list | tuple) or not auth or not isinstance(auth[0], bytes):
        raise DecodeError("authentication wrapper must be [bstr digest, bstr signatures...]")
    if len(auth) - 1 > MAX_SIGNATURES:
        raise DecodeError(f"more than {MAX_SIGNATURES} signatures")
    signatures = tuple(auth[1:])
    if not all(isinstance(s, bytes) for s in signatures):
        raise DecodeError("each signature must be a bstr-wrapped COSE_Sign1")
    claimed = parse_digest(auth[0], "authentication digest")
    actual = wrapped_sha256(manifest_bytes)
    if not hmac.compare_digest(claimed, actual):
        raise VerificationError("manifest digest does not match the authentication wrapper")
    return Envelope(auth[0], actual, signatures, manifest_bytes, severable)


def _signers(
    envelope: Envelope, keys: tuple[TrustedKey, ...], accepted: frozenset[int]
) -> tuple[list[TrustedKey], list[SignatureCheck]]:
    found: list[TrustedKey] = []
    checks = []
    for raw in envelope.signatures:
        check = check_sign1(parse_cose_sign1(raw), envelope.digest_bytes, keys, accepted)
        checks.append(check)
        if check.key is not None and check.key not in found:
            found.append(check.key)
    return found, checks


def authenticate(envelope: Envelope, keys: KeySet) -> list[TrustedKey]:
    """The trusted keys that signed ``envelope``; raises unless there is at least one.

    The refusal says why: a malformed signature (DecodeError), a trusted key's
    signature that does not verify (BadSignatureError), or a signer this device
    does not trust (UnknownKeyError).
    """
    if not keys.keys:
        raise VerificationError("no trusted manifest keys are configured (upgrade.trusted_keys)")
    if not envelope.signatures:
        raise VerificationError("envelope is unsigned")
    signers, checks = _signers(envelope, keys.keys, keys.accepted_algorithms)
    if not signers:
        raise refusal_error(checks, len(keys.keys))
    return signers


def verify_envelope(data: bytes, keys: KeySet, *, max_bytes: int = 64 * 1024) -> VerifiedManifest:
    """Decode, authenticate and interpret an envelope; BadDataError subclasses only."""
    envelope = decode_envelope(data, max_bytes=max_bytes)
    signers = authenticate(envelope, keys)
    manifest = parse_manifest(envelope.manifest_bytes, envelope.severable)
    result_keys = keys
    if manifest.new_keys:
        introduced = tuple(manifest.new_keys)
        proven, _ = _signers(envelope, introduced, keys.accepted_algorithms)
        missing = {k.key_id for k in introduced} - {k.key_id for k in proven}
        if missing:
            raise PolicyError(
                "key rotation must be signed by every new key; unsigned: "
                + ", ".join(sorted(m.hex() for m in missing))
            )
        result_keys = keys.with_keys(introduced)
    return VerifiedManifest(
        manifest=manifest,
        manifest_digest=envelope.manifest_digest,
        signers=tuple(k.key_id for k in signers),
        keys=result_keys,
        envelope=bytes(data),
    )
