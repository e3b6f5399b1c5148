"""Size- and depth-capped CBOR decoding for untrusted upgrade envelopes.

cbor2 happily allocates whatever a length header claims and recurses as deep
as the input nests, so every byte string from outside is first walked header
by header (no allocation, no recursion) and only then handed to cbor2.
Indefinite lengths are refused: SUIT and COSE require deterministic encoding.
"""

from __future__ import annotations

from collections.abc import Collection

import cbor2

from agent.errors import DecodeError, TooLargeError

MAX_DEPTH = 16
MAX_ITEMS = 4096
ALLOWED_TAGS: frozenset[int] = frozenset({18, 107})


def _argument(data: bytes, pos: int, info: int) -> tuple[int, int]:
    if info < 24:
        return info, pos
    if info > 27:
        raise DecodeError(f"CBOR: reserved or indefinite length at offset {pos - 1}")
    width = 1 << (info - 24)
    if pos + width > len(data):
        raise DecodeError("CBOR: truncated header")
    return int.from_bytes(data[pos : pos + width], "big"), pos + width


def check_structure(
    data: bytes,
    *,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    allowed_tags: Collection[int] = ALLOWED_TAGS,
) -> None:
    """Walk one CBOR item's headers; raise unless it is bounded and fills ``data`` exactly."""
    if len(data) > max_bytes:
        raise TooLargeError(f"CBOR item of {len(data)} bytes exceeds {max_bytes}")
    if not data:
        raise DecodeError("CBOR: empty input")
    pending = [1]  # items still expected at each open nesting level
    pos = 0
    items = 0
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= len(data):
            raise DecodeError("CBOR: truncated item")
        items += 1
        if items > max_items:
            raise TooLargeError(f"CBOR: more than {max_items} items")
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        pos += 1
        if major == 7:
            if info == 31 or info in (28, 29, 30):
                raise DecodeError(f"CBOR: unexpected break/reserved value at offset {pos - 1}")
            _, pos = _argument(data, pos, info) if info >= 24 else (0, pos)
            continue
        value, pos = _argument(data, pos, info)
        if major in (2, 3):
            if value > len(data) - pos:
                raise DecodeError("CBOR: string longer than the remaining input")
            pos += value
        elif major in (4, 5):
            children = value * (2 if major == 5 else 1)
            if children > max_items:
                raise TooLargeError(f"CBOR: container of {value} entries")
            pending.append(children)
        elif major == 6:
            if value not in allowed_tags:
                raise DecodeError(f"CBOR: tag {value} is not allowed here")
            pending.append(1)
        if len(pending) - 1 > max_depth:
            raise TooLargeError(f"CBOR: nesting deeper than {max_depth}")
    if pos != len(data):
        raise DecodeError(f"CBOR: {len(data) - pos} bytes of trailing data")


def loads(data: bytes, *, max_bytes: int, allowed_tags: Collection[int] = ALLOWED_TAGS) -> object:
    """Decode one bounded CBOR item; every failure is a DecodeError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected CBOR bytes, got {type(data).__name__}")
    raw = bytes(data)
    check_structure(raw, max_bytes=max_bytes, allowed_tags=allowed_tags)
    try:
        return cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"CBOR: {exc}") from exc


def dumps(value: object) -> bytes:
    """Canonical encoding (sorted map keys, shortest lengths) for what we sign."""
    return cbor2.dumps(value, canonical=True)
