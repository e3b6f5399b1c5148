"""The COSE signature algorithms a manifest may use, as configured and as on the wire.

A leaf module: :mod:`settings` names the accepted algorithms by
:class:`SignatureAlgorithm`, :mod:`keys` maps them to the COSE ids it checks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

ALG_ES256 = -7
ALG_EDDSA = -8
ALG_ED25519 = -19


class SignatureAlgorithm(enum.Enum):
    """COSE algorithms a manifest signature may use (RFC 9053 / RFC 9864 ids)."""

    ED25519 = "ed25519"  # -19, fully specified Ed25519
    EDDSA = "eddsa"  # -8, polymorphic EdDSA (only Ed25519 keys are accepted)
    ES256 = "es256"  # -7, ECDSA P-256 SHA-256 (the SUIT draft's examples)


COSE_ALG_IDS: Mapping[SignatureAlgorithm, int] = {
    SignatureAlgorithm.ED25519: ALG_ED25519,
    SignatureAlgorithm.EDDSA: ALG_EDDSA,
    SignatureAlgorithm.ES256: ALG_ES256,
}
