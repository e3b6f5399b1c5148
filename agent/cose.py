"""COSE_Sign1 structure (RFC 9052 section 4.2), shared by signed commands and upgrade manifests.

Only the structure: a tagged array of four, the protected header map (decoded
by the caller's capped decoder), the unprotected map, the payload (embedded
or nil when detached) and the signature; and the ``Sig_structure`` both sides
sign.  What a caller accepts on top (algorithms, key ids, detached or not) and
which keys verify is theirs: :mod:`agent.auth.cose` for commands,
:mod:`agent.upgrade.keys` for manifests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import cbor2

from agent.errors import DecodeError

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_KID = 4


@dataclasses.dataclass(frozen=True)
class Sign1Parts:
    protected: bytes  # the serialized protected header, exactly as signed
    headers: Mapping[object, object]  # protected, decoded
    unprotected: Mapping[object, object]
    payload: bytes | None  # None: detached
    signature: bytes

    @property
    def algorithm(self) -> object:
        return self.headers.get(HEADER_ALG)

    @property
    def key_id(self) -> object:
        """The kid, protected header first (as RFC 9052 prefers), then unprotected."""
        return self.headers.get(HEADER_KID, self.unprotected.get(HEADER_KID))


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """What a COSE_Sign1 signature covers (external_aad empty)."""
    return cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)


def parse_sign1(
    item: object, decode_header: Callable[[bytes], object], what: str = "COSE_Sign1"
) -> Sign1Parts:
    """The parts of an already decoded, tagged COSE_Sign1; nothing is verified here.

    ``decode_header`` decodes the protected header bytes with the caller's caps.
    The algorithm must sit in the protected header, never the unprotected one.
    """
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise DecodeError(f"{what}: not a tagged COSE_Sign1 (tag 18)")
    value = item.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise DecodeError(f"{what}: COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = value
    if not isinstance(protected, bytes):
        raise DecodeError(f"{what}: protected header must be a byte string")
    headers = decode_header(protected) if protected else {}
    if not isinstance(headers, Mapping):
        raise DecodeError(f"{what}: protected header must be a map")
    if not isinstance(unprotected, Mapping) or HEADER_ALG in unprotected:
        raise DecodeError(f"{what}: unprotected header malformed (alg must be protected)")
    if payload is not None and not isinstance(payload, bytes):
        raise DecodeError(f"{what}: payload must be a byte string or nil")
    if not isinstance(signature, bytes):
        raise DecodeError(f"{what}: signature must be a byte string")
    return Sign1Parts(protected, headers, unprotected, payload, signature)
