"""Improv framing: the shared vectors, hostile frames and property tests."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError, TooLargeError
from agent.provisioning import improv
from agent.provisioning.improv import Command, ErrorCode, Frame, FrameType, State
from agent.provisioning.improv_device import DeviceInfo, ImprovDevice
from agent.provisioning.wifi import ConnectOutcome, ConnectResult
from tests.conftest import vector_path
from tests.provisioning.radio_double import RadioDouble


def load_vectors() -> dict[str, bytes]:
    vectors: dict[str, bytes] = {}
    for line in vector_path("improv/vectors.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, *hex_bytes = line.split()
        vectors[name] = bytes.fromhex("".join(hex_bytes))
    return vectors


@pytest.fixture
def vectors() -> dict[str, bytes]:
    return load_vectors()


def test_vector_get_state_rpc_is_produced_and_parsed(vectors: dict[str, bytes]) -> None:
    raw = vectors["get_state_rpc"]
    assert improv.encode_rpc(Command.REQUEST_CURRENT_STATE, b"") == raw
    rpc = improv.parse_command(improv.decode_frame(raw))
    assert (rpc.command, rpc.payload) == (Command.REQUEST_CURRENT_STATE, b"")


def test_vector_wifi_settings_is_produced_and_parsed(vectors: dict[str, bytes]) -> None:
    raw = vectors["wifi_settings"]
    assert improv.encode_wifi_settings(b"MyWirelessAP", b"mysecurepassword") == raw
    rpc = improv.parse_command(improv.decode_frame(raw))
    assert rpc.command == Command.SEND_WIFI_SETTINGS
    assert improv.decode_wifi_settings(rpc.payload) == ("MyWirelessAP", "mysecurepassword")


def test_vector_state_authorized_is_produced_and_parsed(vectors: dict[str, bytes]) -> None:
    raw = vectors["state_authorized"]
    assert improv.encode_state(State.AUTHORIZED) == raw
    assert improv.decode_frame(raw) == Frame(FrameType.CURRENT_STATE, bytes([State.AUTHORIZED]))


def test_bad_checksum_is_rejected(vectors: dict[str, bytes]) -> None:
    raw = bytearray(vectors["wifi_settings"])
    raw[-1] ^= 0x01
    with pytest.raises(DecodeError, match="checksum"):
        improv.decode_frame(bytes(raw))


def test_truncated_frame_is_rejected(vectors: dict[str, bytes]) -> None:
    raw = vectors["wifi_settings"]
    for cut in (3, 9, len(raw) - 1):
        with pytest.raises(DecodeError, match=r"truncated|header"):
            improv.decode_frame(raw[:cut])


def test_oversized_length_is_rejected() -> None:
    # a header claiming 255 bytes of data followed by far fewer
    body = improv.HEADER + bytes([1, FrameType.RPC_COMMAND, 0xFF, 0x01, 0x02])
    with pytest.raises(DecodeError, match="truncated"):
        improv.decode_frame(body + bytes([improv.checksum(body)]))
    with pytest.raises(TooLargeError):
        improv.decode_frame(b"\x00" * (improv.MAX_FRAME + 1))
    with pytest.raises(TooLargeError):
        improv.encode_frame(FrameType.RPC_COMMAND, b"\x00" * 256)


def test_rpc_inner_length_mismatch_is_rejected() -> None:
    frame = improv.decode_frame(improv.encode_frame(FrameType.RPC_COMMAND, b"\x01\x30\x02ab"))
    with pytest.raises(DecodeError, match="length"):
        improv.parse_command(frame)


def test_string_running_past_its_rpc_is_rejected() -> None:
    with pytest.raises(DecodeError, match="past the end"):
        improv.decode_wifi_settings(b"\x05ab")


def test_oversized_ssid_is_rejected() -> None:
    payload = improv.encode_strings([b"s" * 33, b"password"])
    with pytest.raises(TooLargeError):
        improv.decode_wifi_settings(payload)


def test_unknown_rpc_is_rejected() -> None:
    frame = improv.decode_frame(improv.encode_rpc(0x7E, b""))
    with pytest.raises(improv.UnknownCommandError):
        improv.parse_command(frame)


NOW = 1000.0


def _device(radio: RadioDouble | None = None) -> ImprovDevice:
    radio = radio or RadioDouble({"Home": "correct horse"})
    info = DeviceInfo("edge-agent", "0.1.0", "edge-cam-1/rev-a", "EA-1")
    return ImprovDevice(info, lambda: radio.scan(1.0), "http://{ip}/")


def test_device_answers_unknown_rpc_with_error_state() -> None:
    reply = _device().receive(improv.decode_frame(improv.encode_rpc(0x7E, b"")), NOW)
    assert reply.frames == (
        improv.encode_error(ErrorCode.NONE),
        improv.encode_error(ErrorCode.UNKNOWN_RPC),
    )


def test_device_answers_bad_packet_with_invalid_packet_error() -> None:
    reply = _device().receive(DecodeError("bad Improv checksum"), NOW)
    assert reply.frames == (improv.encode_error(ErrorCode.INVALID_PACKET),)


def test_device_wifi_settings_flow(vectors: dict[str, bytes]) -> None:
    device = _device()
    reply = device.receive(improv.decode_frame(vectors["wifi_settings"]), NOW)
    assert reply.connect is not None and reply.connect.ssid == "MyWirelessAP"
    assert improv.encode_state(State.PROVISIONING) in reply.frames
    done = device.connect_finished(
        ConnectResult(ConnectOutcome.CONNECTED, ip_address="192.0.2.7"), NOW
    )
    assert done == [
        improv.encode_state(State.PROVISIONED),
        improv.encode_result(Command.SEND_WIFI_SETTINGS, [b"http://192.0.2.7/"]),
    ]


def test_device_failed_connect_reports_unable_to_connect() -> None:
    device = _device()
    device.receive(improv.decode_frame(improv.encode_wifi_settings(b"Home", b"nope nope")), NOW)
    frames = device.connect_finished(ConnectResult(ConnectOutcome.WRONG_KEY), NOW)
    # The state before the error: the SDK fails the request on the error frame, and
    # a frame split across reads must not leave it seeing "provisioning" then.
    assert frames == [
        improv.encode_state(State.AUTHORIZED),
        improv.encode_error(ErrorCode.UNABLE_TO_CONNECT),
    ]
    assert device.state(NOW) is State.AUTHORIZED


def test_device_scan_sends_one_result_per_network_then_empty() -> None:
    radio = RadioDouble({"Home": "correct horse", "Cafe": None})
    reply = _device(radio).receive(
        improv.decode_frame(improv.encode_rpc(Command.REQUEST_SCANNED_NETWORKS, b"")), NOW
    )
    assert reply.frames[0] == improv.encode_error(ErrorCode.NONE)
    results = [improv.decode_rpc(improv.decode_frame(f)) for f in reply.frames[1:]]
    strings = [improv.decode_strings(r.payload) for r in results]
    assert strings == [[b"Home", b"-40", b"YES"], [b"Cafe", b"-45", b"NO"], []]


def test_device_info_result() -> None:
    reply = _device().receive(
        improv.decode_frame(improv.encode_rpc(Command.REQUEST_DEVICE_INFO, b"")), NOW
    )
    assert reply.frames[0] == improv.encode_error(ErrorCode.NONE)
    rpc = improv.decode_rpc(improv.decode_frame(reply.frames[1]))
    assert improv.decode_strings(rpc.payload) == [
        b"edge-agent",
        b"0.1.0",
        b"edge-cam-1/rev-a",
        b"EA-1",
    ]


def test_stream_decoder_recovers_valid_frame_after_truncated_one(
    vectors: dict[str, bytes],
) -> None:
    decoder = improv.StreamDecoder()
    truncated = vectors["wifi_settings"][:20]
    items = decoder.feed(b"noise" + truncated + vectors["get_state_rpc"] + b"\n")
    assert items == []  # still waiting for the truncated frame's 32 bytes
    items = decoder.flush_partial()
    assert isinstance(items[0], DecodeError)
    frames = [i for i in items if isinstance(i, Frame)]
    assert improv.decode_frame(vectors["get_state_rpc"]) in frames
    assert decoder.pending <= improv.MAX_FRAME


def test_stream_decoder_splits_byte_by_byte(vectors: dict[str, bytes]) -> None:
    decoder = improv.StreamDecoder()
    stream = vectors["state_authorized"] + vectors["wifi_settings"]
    out: list[Frame | DecodeError] = []
    for byte in stream:
        out.extend(decoder.feed(bytes([byte])))
    assert out == [
        improv.decode_frame(vectors["state_authorized"]),
        improv.decode_frame(vectors["wifi_settings"]),
    ]


@given(st.integers(0, 255), st.binary(max_size=255))
def test_frame_round_trip(frame_type: int, data: bytes) -> None:
    assert improv.decode_frame(improv.encode_frame(frame_type, data)) == Frame(frame_type, data)


@given(st.binary(min_size=1, max_size=32), st.binary(max_size=64))
def test_wifi_settings_round_trip(ssid: bytes, password: bytes) -> None:
    rpc = improv.decode_rpc(improv.decode_frame(improv.encode_wifi_settings(ssid, password)))
    assert improv.decode_strings(rpc.payload) == [ssid, password]


@given(st.binary(max_size=600))
def test_decode_frame_raises_only_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        improv.decode_frame(raw)


@given(st.binary(max_size=300))
def test_decoders_raise_only_decode_error_on_payloads(raw: bytes) -> None:
    frame = Frame(FrameType.RPC_COMMAND, raw[:255])
    for decode in (
        lambda: improv.parse_command(frame),
        lambda: improv.decode_wifi_settings(raw),
        lambda: improv.decode_strings(raw),
    ):
        with contextlib.suppress(DecodeError):
            decode()


@given(st.lists(st.binary(max_size=80), max_size=12))
def test_stream_decoder_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    decoder = improv.StreamDecoder()
    for chunk in chunks:
        decoder.feed(improv.HEADER + chunk)
        assert decoder.pending <= improv.MAX_FRAME + len(improv.HEADER) + 80
