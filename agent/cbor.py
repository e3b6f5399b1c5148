"""CBOR in and out, with caps for anything that came from outside."""

from __future__ import annotations

from typing import Any

import cbor2

from agent.errors import DecodeError, TooLargeError

DEFAULT_MAX_DEPTH = 16


def loads_untrusted(data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode one CBOR item from untrusted bytes.

    The size is checked before decoding and the nesting depth while decoding;
    indefinite-length items and duplicate map keys are refused because honest
    senders never need them and they complicate canonical handling.  Only
    :class:`DecodeError` (or its subclass :class:`TooLargeError`) escapes.
    """
    if len(data) > max_bytes:
        raise TooLargeError(f"CBOR item of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    try:
        return cbor2.loads(
            data, max_depth=max_depth, allow_indefinite=False, allow_duplicate_keys=False
        )
    except cbor2.CBORDecodeError as exc:
        raise DecodeError(f"invalid CBOR: {str(exc)[:200]}") from exc
    except (ValueError, TypeError, OverflowError, MemoryError, RecursionError) as exc:
        raise DecodeError(f"invalid CBOR: {type(exc).__name__}") from exc


def dumps(value: object) -> bytes:
    """Canonical (deterministic) CBOR, so equal events encode to equal bytes."""
    return cbor2.dumps(value, canonical=True)
