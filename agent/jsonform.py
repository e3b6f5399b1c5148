"""JSON beside CBOR: the event converter and the strict reader of JSON commands.

The outbox stores every event as canonical CBOR; with ``mqtt.payload_format =
"json"`` the MQTT link converts each one as it is published
(:func:`cbor_to_json`).  The mapping, documented in README "Payload formats":

* maps, arrays, text, integers, floats, ``true``/``false``/``null`` map to the
  same JSON values (integers and floats as JSON numbers);
* byte strings become standard base64 text with padding (RFC 4648 section 4),
  so an event's picture ``img`` is a base64 JPEG, a sealed reply's ``sealed`` is
  base64 COSE_Encrypt;
* a non-finite float (never emitted by the agent) becomes ``null``; a tagged
  item becomes its content; a non-text map key becomes its JSON text.

:func:`loads_untrusted` is the JSON counterpart of
:func:`agent.cbor.loads_untrusted`: size cap, strict UTF-8, depth cap,
duplicate keys, ``NaN``/``Infinity`` and integers beyond 64 bits refused, and
only :class:`~agent.errors.DecodeError` escapes.
"""

from __future__ import annotations

import base64
import json
import json.encoder as json_encoder
import math
from typing import Any

import cbor2

from agent.errors import DecodeError, TooLargeError

JSON_CONTENT_TYPE = "application/json"
CBOR_CONTENT_TYPE = "application/cbor"
MAX_INT_DIGITS = 20  # 2**64 has 20 digits; the cap stops int() on a megabyte of digits
INT_RANGE = 2**64


def _default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, cbor2.CBORTag):
        return _plain(value.value)
    if isinstance(value, set | frozenset):
        return [_plain(v) for v in value]
    if value is cbor2.undefined:
        return None
    return str(value)


def _plain(value: object) -> object:
    """The slow path: a value json.dumps refused as it stood (NaN, bytes keys)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            text = key if isinstance(key, str) else json.dumps(_plain(key), default=_default)
            out[text] = _plain(item)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return _plain(_default(value))


_ENCODER = json.JSONEncoder(
    default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# The C encoder JSONEncoder.encode builds on every call, built once (every event is
# encoded on the way out: issue 12).  No circular-reference markers: CBOR-shaped
# values cannot hold a cycle, and a cycle still fails (RecursionError) rather than loop.
_MAKE_ENCODER = getattr(json_encoder, "c_make_encoder", None)
_C_ENCODER: Any = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(
        None, _default, json_encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def _encode(value: object) -> str:
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON of a CBOR-shaped value, by the mapping in the module doc."""
    try:
        text = _encode(value)
    except (ValueError, TypeError):
        text = json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def cbor_to_json(payload: bytes) -> bytes:
    """One stored CBOR item as JSON; raises DecodeError for bytes that are not CBOR."""
    try:
        value = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"stored message is not CBOR: {type(exc).__name__}") from exc
    return dumps(value)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DecodeError("invalid JSON: duplicate key in an object")
    return out


def _constant(name: str) -> object:
    raise DecodeError(f"invalid JSON: {name} is not a number JSON allows")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise DecodeError("invalid JSON: integer beyond 64 bits")
    value = int(text)
    if not -INT_RANGE < value < INT_RANGE:
        raise DecodeError("invalid JSON: integer beyond 64 bits")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError("invalid JSON: number out of range")
    return value


def _depth(value: object, max_depth: int) -> None:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise DecodeError(f"invalid JSON: nested deeper than {max_depth}")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise DecodeError("invalid JSON: a lone surrogate escape in a string") from None


def loads_untrusted(data: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Decode one JSON value from untrusted bytes; only DecodeError escapes."""
    if len(data) > max_bytes:
        raise TooLargeError(f"JSON of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid JSON: not UTF-8 at byte {exc.start}") from None
    # A cheap bound first: no more brackets than the cap means no deeper nesting.
    if text.count("[") + text.count("{") > max_depth and json_depth(text) > max_depth:
        raise DecodeError(f"invalid JSON: nested deeper than {max_depth}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except DecodeError:
        raise
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise DecodeError(f"invalid JSON: {type(exc).__name__}") from None
    _depth(value, max_depth)
    return value


def json_depth(text: str) -> int:
    """Bracket nesting depth of JSON text (strings skipped), counted before a recursive
    parser sees it: json.loads recurses once per level."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
