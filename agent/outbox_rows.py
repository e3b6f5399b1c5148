"""How a queued message is kept in its outbox row: stamped, packed, sealed apart.

The payload is stamped with its sequence number and kept without its image
(the image has a column of its own, sealed under ``event_snapshots``' key, so
a withdrawal of snapshots leaves the event).  A sealed row packs the msg_id and
the topic inside the sealed payload, so nothing in clear names the event.
"""

from __future__ import annotations

from agent import cbor
from agent.errors import DecodeError
from agent.minimise import OutgoingMessage
from agent.sequence import SEQ_KEY, stamp


def stamped(message: OutgoingMessage, seq: int, keep_image: bool) -> tuple[bytes, bytes | None]:
    """The payload stamped with ``seq`` and without its image, and the image (if kept).

    One canonical encode from the minimiser's map where it is at hand; else the
    payload is decoded first (messages built elsewhere).
    """
    if message.body is not None:
        body = dict(message.body)
    elif not message.has_image:
        return stamp(message.payload, seq), None
    else:
        decoded = cbor.loads_untrusted(message.payload, max_bytes=len(message.payload))
        if not isinstance(decoded, dict):
            raise DecodeError("an event payload is a CBOR map")
        body = decoded
    image = body.pop("img", None)
    body[SEQ_KEY] = seq
    kept = bytes(image) if keep_image and isinstance(image, bytes | bytearray) else None
    return cbor.dumps(body), kept


def with_image(payload: bytes, image: bytes) -> bytes:
    body = cbor.loads_untrusted(payload, max_bytes=len(payload))
    if not isinstance(body, dict):
        raise DecodeError("an event payload is a CBOR map")
    body["img"] = image
    return cbor.dumps(body)


def sealing_context(purpose: str) -> bytes:
    return b"outbox:" + purpose.encode()


IMAGE_CONTEXT = b"outbox:image"


def pack_row(msg_id: str, topic: str, payload: bytes) -> bytes:
    """msg_id and topic (UTF-8, each after a 2-byte length), then the payload."""
    ident, where = msg_id.encode(), topic.encode()
    return (
        len(ident).to_bytes(2, "big") + ident + len(where).to_bytes(2, "big") + where + payload
    )


def unpack_row(inner: bytes) -> tuple[str, str, bytes]:
    try:
        first = int.from_bytes(inner[:2], "big")
        ident = inner[2 : 2 + first].decode()
        second = int.from_bytes(inner[2 + first : 4 + first], "big")
        where = inner[4 + first : 4 + first + second].decode()
    except UnicodeDecodeError:
        raise DecodeError("a sealed queued row's msg_id or topic is not UTF-8") from None
    if len(inner) < 4 + first + second:
        raise DecodeError("a sealed queued row lacks its msg_id and topic")
    return ident, where, inner[4 + first + second :]


def blob(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise DecodeError("a queued payload is not a blob")


def optional_blob(value: object) -> bytes | None:
    return None if value is None else blob(value)
