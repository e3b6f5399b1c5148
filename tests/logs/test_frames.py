from __future__ import annotations

import struct
import zlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import BadDataError, DecodeError, TooLargeError, VerificationError
from agent.logs import frames


def _decode_all(decoder: frames.FrameDecoder) -> list[dict[str, object]]:
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


def _raw_frame(payload: bytes, *, length: int | None = None, crc: int | None = None) -> bytes:
    head = struct.pack(">2sI", frames.MAGIC, len(payload) if length is None else length)
    body_crc = zlib.crc32(head[2:] + payload) if crc is None else crc
    return head + payload + struct.pack(">I", body_crc)


def test_round_trip_byte_by_byte() -> None:
    message = {"t": "chunk", "i": 3, "data": b"\x00\xea L" * 100}
    decoder = frames.FrameDecoder()
    got = []
    for byte in frames.encode(message):
        decoder.feed(bytes([byte]))
        got.extend(_decode_all(decoder))
    assert got == [message]


def test_bad_crc_is_rejected_and_next_frame_still_decodes() -> None:
    good = frames.encode({"t": "hello"})
    bad = bytearray(frames.encode({"t": "get"}))
    bad[-1] ^= 0xFF
    decoder = frames.FrameDecoder()
    decoder.feed(bytes(bad) + good)
    with pytest.raises(VerificationError):
        decoder.next_message()
    assert _decode_all(decoder) == [{"t": "hello"}]


def test_oversized_length_is_rejected_before_buffering() -> None:
    decoder = frames.FrameDecoder(max_payload=1024)
    decoder.feed(struct.pack(">2sI", frames.MAGIC, 0xFFFFFFFF))
    with pytest.raises(TooLargeError):
        decoder.next_message()
    decoder.feed(frames.encode({"t": "hello"}))
    assert _decode_all(decoder) == [{"t": "hello"}]


def test_garbage_between_frames_is_skipped() -> None:
    decoder = frames.FrameDecoder()
    decoder.feed(b"login: \r\nATZ\x00\xff" + frames.encode({"t": "hello"}))
    assert _decode_all(decoder) == [{"t": "hello"}]


def test_endless_garbage_is_reported() -> None:
    decoder = frames.FrameDecoder()
    decoder.feed(b"\x00" * (frames.MAX_GARBAGE + 10))
    with pytest.raises(DecodeError):
        decoder.next_message()


def test_payload_that_is_not_a_typed_map_is_rejected() -> None:
    decoder = frames.FrameDecoder()
    decoder.feed(_raw_frame(cbor2.dumps([1, 2, 3])))
    with pytest.raises(DecodeError):
        decoder.next_message()


def test_invalid_cbor_payload_is_rejected() -> None:
    decoder = frames.FrameDecoder()
    decoder.feed(_raw_frame(b"\xff\xff\xff"))
    with pytest.raises(DecodeError):
        decoder.next_message()


def test_deeply_nested_payload_is_rejected() -> None:
    nested: object = 1
    for _ in range(50):
        nested = [nested]
    decoder = frames.FrameDecoder()
    decoder.feed(_raw_frame(cbor2.dumps({"t": "get", "query": nested})))
    with pytest.raises(DecodeError):
        decoder.next_message()


def test_truncated_frame_waits_for_more() -> None:
    data = frames.encode({"t": "hello"})
    decoder = frames.FrameDecoder()
    decoder.feed(data[:-3])
    assert decoder.next_message() is None
    decoder.feed(data[-3:])
    assert decoder.next_message() == {"t": "hello"}


def test_encode_refuses_oversized_payload() -> None:
    with pytest.raises(TooLargeError):
        frames.encode({"t": "chunk", "data": b"x" * 2048}, max_payload=1024)


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_arbitrary_bytes_only_raise_bad_data_errors(data: bytes, step: int) -> None:
    decoder = frames.FrameDecoder(max_payload=512)
    for start in range(0, len(data), step):
        decoder.feed(data[start : start + step])
        for _ in range(len(data) + 2):
            try:
                if decoder.next_message() is None:
                    break
            except BadDataError:
                continue


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=200)
@given(
    st.lists(st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=4), max_size=5),
    st.binary(max_size=20),
    st.integers(1, 50),
)
def test_messages_survive_noise_and_any_split(
    bodies: list[dict[str, object]], noise: bytes, step: int
) -> None:
    messages = [{**b, "t": "m"} for b in bodies]
    stream = noise.replace(frames.MAGIC[:1], b"") + b"".join(frames.encode(m) for m in messages)
    decoder = frames.FrameDecoder()
    got: list[dict[str, object]] = []
    for start in range(0, len(stream), step):
        decoder.feed(stream[start : start + step])
        got.extend(_decode_all(decoder))
    assert got == messages
