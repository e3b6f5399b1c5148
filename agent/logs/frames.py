"""Framing for the technician's serial console protocol.

A frame is ``MAGIC (2) | length (4, big-endian) | CBOR payload | CRC32 (4)``,
the CRC covering length and payload.  The payload is one CBOR map with a
string ``"t"`` (message type).  Everything arriving here is untrusted: the
length is checked against a cap *before* buffering the body, the CRC before
decoding, and the CBOR is decoded with depth and size caps.  After any error
the decoder has already discarded the offending bytes, so the caller can
report the error and keep reading.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from agent import cbor
from agent.errors import DecodeError, TooLargeError, VerificationError

MAGIC = b"\xeaL"
HEADER = struct.Struct(">2sI")
CRC = struct.Struct(">I")
DEFAULT_MAX_PAYLOAD = 64 * 1024
MAX_GARBAGE = 4096  # bytes of noise tolerated before a frame before we complain
MAX_MESSAGE_DEPTH = 6


def encode(message: dict[str, Any], *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    payload = cbor.dumps(message)
    if len(payload) > max_payload:
        raise TooLargeError(f"frame payload of {len(payload)} bytes exceeds {max_payload}")
    head = HEADER.pack(MAGIC, len(payload))
    return head + payload + CRC.pack(zlib.crc32(head[2:] + payload))


def _validate(message: object) -> dict[str, Any]:
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise DecodeError("frame payload is not a map with a string 't'")
    return message


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` then call ``next_message()`` until None."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload
        self.garbage_bytes = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> dict[str, Any] | None:
        """The next complete message, None if more bytes are needed.

        Raises DecodeError (noise), TooLargeError (length over the cap) or
        VerificationError (CRC mismatch); the bad bytes are dropped first.
        """
        start = self._buffer.find(MAGIC)
        if start < 0:
            # Keep a trailing first magic byte: the rest may arrive next read.
            keep = 1 if self._buffer.endswith(MAGIC[:1]) else 0
            skipped = len(self._buffer) - keep
            del self._buffer[:skipped]
            self._count_garbage(skipped)
            return None
        if start:
            del self._buffer[:start]
            self._count_garbage(start)
        if len(self._buffer) < HEADER.size:
            return None
        _, length = HEADER.unpack_from(self._buffer)
        if length > self._max_payload:
            del self._buffer[: len(MAGIC)]
            raise TooLargeError(f"frame length {length} exceeds the {self._max_payload}-byte cap")
        total = HEADER.size + length + CRC.size
        if len(self._buffer) < total:
            return None
        frame = bytes(self._buffer[:total])
        (expected,) = CRC.unpack_from(frame, HEADER.size + length)
        if zlib.crc32(frame[2 : HEADER.size + length]) != expected:
            # Resynchronise on the next magic after this one, not after the claimed length.
            del self._buffer[: len(MAGIC)]
            raise VerificationError("frame CRC mismatch")
        del self._buffer[:total]
        self.garbage_bytes = 0
        payload = frame[HEADER.size : HEADER.size + length]
        message = cbor.loads_untrusted(
            payload, max_bytes=self._max_payload, max_depth=MAX_MESSAGE_DEPTH
        )
        return _validate(message)

    def _count_garbage(self, count: int) -> None:
        self.garbage_bytes += count
        if self.garbage_bytes > MAX_GARBAGE:
            self.garbage_bytes = 0
            raise DecodeError(f"more than {MAX_GARBAGE} bytes of noise between frames")
