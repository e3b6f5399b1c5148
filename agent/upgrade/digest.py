"""SUIT_Digest handling (SHA-256 only)."""

from __future__ import annotations

import hashlib

import cbor2

from agent.errors import DecodeError
from agent.upgrade import cborguard
from agent.upgrade.errors import UnsupportedFeatureError

ALG_SHA256 = -16


def parse_digest(raw: object, what: str) -> bytes:
    """A SUIT_Digest ``[-16, h'..32 bytes..']``, possibly bstr-wrapped."""
    if isinstance(raw, bytes):
        raw = cborguard.loads(raw, max_bytes=128)
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise DecodeError(f"{what}: SUIT_Digest must be [alg, bytes]")
    alg, value = raw
    if alg != ALG_SHA256 or isinstance(alg, bool):
        raise UnsupportedFeatureError(f"{what}: digest algorithm {alg!r} (only SHA-256, -16)")
    if not isinstance(value, bytes) or len(value) != 32:
        raise DecodeError(f"{what}: SHA-256 digest must be 32 bytes")
    return value


def encode_digest(value: bytes) -> bytes:
    return cborguard.dumps([ALG_SHA256, value])


def wrapped_sha256(element: bytes) -> bytes:
    """SHA-256 over the bstr-wrapped element, CBOR header included (as SUIT signs it)."""
    return hashlib.sha256(cbor2.dumps(element)).digest()
