"""The signed command: what a client sends and what the device checks.

On the wire, the MQTT payload of ``<prefix>/<device id>/cmd/<name>`` is a
COSE_Sign1 (EdDSA, the signer's ``kid`` in the protected header) whose
embedded payload is the CBOR map::

    {"v": 1, "dev": <device id>, "cmd": <name>, "args": {...},
     "ctr": <counter>, "ts": <unix seconds>}

``dev`` and ``cmd`` stop a command signed for another device or another name
being replayed there; ``ctr`` must exceed every counter the device has seen
from the same key (clients use microseconds since the epoch, so they need no
state of their own); ``ts`` bounds how late a captured command can arrive.
Arguments may carry ``reply_key`` (a 32-byte X25519 public key): the result
then travels sealed to it (COSE_Encrypt), which ``data.export`` requires.

JSON carriage (for clients that speak JSON, README "Commands in JSON"): the
same COSE_Sign1 bytes, standard base64 with padding, in ``{"cose": "..."}``.
The signature covers exactly those bytes, so JSON adds nothing to trust.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent import cbor
from agent.auth import cose
from agent.auth.principals import key_id
from agent.errors import DecodeError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

VERSION = 1
MAX_COUNTER = 2**63 - 1
REPLY_KEY = "reply_key"
_FIELDS = frozenset({"v", "dev", "cmd", "args", "ctr", "ts"})


@dataclasses.dataclass(frozen=True)
class CommandBody:
    device_id: str
    name: str
    args: dict[str, object]
    counter: int
    timestamp: int


def encode_body(body: CommandBody) -> bytes:
    return cbor.dumps(
        {
            "v": VERSION,
            "dev": body.device_id,
            "cmd": body.name,
            "args": body.args,
            "ctr": body.counter,
            "ts": body.timestamp,
        }
    )


def _int(value: object, what: str, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise DecodeError(f"signed command: {what} must be an integer in 0..{maximum}")
    return value


def decode_body(payload: bytes, *, max_bytes: int, max_depth: int) -> CommandBody:
    data = cbor.loads_untrusted(payload, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise DecodeError(f"signed command must be a map with exactly {sorted(_FIELDS)}")
    if data["v"] != VERSION:
        raise DecodeError("signed command: unsupported version")
    device, name, args = data["dev"], data["cmd"], data["args"]
    if not isinstance(device, str) or not isinstance(name, str) or len(name) > 64:
        raise DecodeError("signed command: dev and cmd must be text")
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise DecodeError("signed command: args must be a map with text keys")
    return CommandBody(
        device,
        name,
        args,
        _int(data["ctr"], "ctr", MAX_COUNTER),
        _int(data["ts"], "ts", 2**40),
    )


def sign_command(
    private_key: ed25519.Ed25519PrivateKey,
    device_id: str,
    name: str,
    args: Mapping[str, object],
    *,
    counter: int,
    now: float,
) -> bytes:
    """The bytes to publish; the client library and the CLI both call this."""
    body = CommandBody(device_id, name, dict(args), counter, int(now))
    kid = key_id(cose.raw_public(private_key.public_key()))
    return cose.sign1(private_key, kid, encode_body(body))


def json_carriage(
    signed: bytes, *, response_topic: str | None = None, correlation_id: str | None = None
) -> bytes:
    """A signed command (COSE_Sign1 bytes) as the JSON payload ``{"cose": ...}``."""
    item: dict[str, str] = {"cose": base64.b64encode(signed).decode("ascii")}
    if response_topic is not None:
        item["response_topic"] = response_topic
    if correlation_id is not None:
        item["correlation_id"] = correlation_id
    return json.dumps(item, separators=(",", ":")).encode()


def from_json_carriage(value: object) -> bytes:
    """The COSE_Sign1 bytes a JSON ``cose`` member carries; DecodeError if not base64."""
    if not isinstance(value, str) or not value:
        raise DecodeError("cose must be the base64 text of a COSE_Sign1")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise DecodeError("cose is not valid base64 (standard alphabet, padded)") from None
