"""Replies to rights requests, signed so the cloud can trust the confirmation.

The signature is HMAC-SHA256 under the device key over the canonical CBOR of
the reply without its ``signature`` field.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from agent import cbor
from agent.errors import VerificationError

SIGNATURE_FIELD = "signature"


def sign_reply(reply: Mapping[str, object], device_key: bytes) -> dict[str, object]:
    body = {k: v for k, v in reply.items() if k != SIGNATURE_FIELD}
    mac = hmac.new(device_key, cbor.dumps(body), hashlib.sha256).hexdigest()
    return {**body, SIGNATURE_FIELD: mac}


def verify_reply(reply: Mapping[str, object], device_key: bytes) -> None:
    presented = reply.get(SIGNATURE_FIELD)
    if not isinstance(presented, str):
        raise VerificationError("reply is not signed")
    expected = sign_reply(reply, device_key)[SIGNATURE_FIELD]
    assert isinstance(expected, str)
    if not hmac.compare_digest(expected, presented):
        raise VerificationError("reply signature does not verify")
