"""Improv Wi-Fi serial framing (https://www.improv-wifi.com/serial/), both ends.

A frame is ``"IMPROV" | version 1 | type | length | data | checksum`` where
the checksum is the low byte of the sum of every preceding byte.  RPC commands
carry ``command | data length | data`` and their strings are length-prefixed.
Everything here is pure: bytes in, values out; malformed input raises
:class:`~agent.errors.DecodeError` and nothing else.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from agent.errors import DecodeError, TooLargeError

HEADER = b"IMPROV"
VERSION = 1
# header + version + type + length, then data, then one checksum byte
_PREFIX_LEN = len(HEADER) + 3
MAX_DATA = 255
MAX_FRAME = _PREFIX_LEN + MAX_DATA + 1
MAX_SSID_BYTES = 32
MAX_PASSWORD_BYTES = 64


class FrameType(enum.IntEnum):
    CURRENT_STATE = 0x01
    ERROR_STATE = 0x02
    RPC_COMMAND = 0x03
    RPC_RESULT = 0x04


class State(enum.IntEnum):
    AUTHORIZATION_REQUIRED = 0x01
    AUTHORIZED = 0x02
    PROVISIONING = 0x03
    PROVISIONED = 0x04


class ErrorCode(enum.IntEnum):
    NONE = 0x00
    INVALID_PACKET = 0x01
    UNKNOWN_RPC = 0x02
    UNABLE_TO_CONNECT = 0x03
    # Improv's "not authorized" (the BLE spec's code; serial has no other for a refusal):
    # credentials arrived while the device may not take them.
    NOT_AUTHORIZED = 0x04
    BAD_HOSTNAME = 0x05
    UNKNOWN = 0xFF


class Command(enum.IntEnum):
    SEND_WIFI_SETTINGS = 0x01
    REQUEST_CURRENT_STATE = 0x02
    REQUEST_DEVICE_INFO = 0x03
    REQUEST_SCANNED_NETWORKS = 0x04


class UnknownCommandError(DecodeError):
    """A well-framed RPC whose command byte this device does not implement."""

    def __init__(self, command: int) -> None:
        self.command = command
        super().__init__(f"unknown Improv RPC command 0x{command:02x}")


@dataclasses.dataclass(frozen=True)
class Frame:
    type: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class Rpc:
    command: int
    payload: bytes


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def encode_frame(frame_type: int, data: bytes) -> bytes:
    if len(data) > MAX_DATA:
        raise TooLargeError(f"Improv frame data is {len(data)} bytes, at most {MAX_DATA}")
    if not 0 <= frame_type <= 0xFF:
        raise DecodeError(f"Improv frame type {frame_type} out of range")
    body = HEADER + bytes((VERSION, frame_type, len(data))) + data
    return body + bytes((checksum(body),))


def decode_frame(raw: bytes) -> Frame:
    """Decode exactly one complete frame (no trailing bytes)."""
    if len(raw) > MAX_FRAME:
        raise TooLargeError(f"Improv frame is {len(raw)} bytes, at most {MAX_FRAME}")
    if len(raw) < _PREFIX_LEN + 1:
        raise DecodeError("truncated Improv frame")
    if raw[: len(HEADER)] != HEADER:
        raise DecodeError("missing IMPROV header")
    version, frame_type, length = raw[len(HEADER) : _PREFIX_LEN]
    if version != VERSION:
        raise DecodeError(f"unsupported Improv version {version}")
    expected = _PREFIX_LEN + length + 1
    if len(raw) < expected:
        raise DecodeError("truncated Improv frame")
    if len(raw) > expected:
        raise DecodeError("trailing bytes after Improv frame")
    if checksum(raw[:-1]) != raw[-1]:
        raise DecodeError("bad Improv checksum")
    return Frame(frame_type, bytes(raw[_PREFIX_LEN:-1]))


class StreamDecoder:
    """Cuts frames out of a serial byte stream, skipping noise between them.

    A frame that fails its checksum is reported and the search restarts one
    byte after its header, so a valid frame hidden inside a truncated one is
    still found.  The buffer never exceeds one maximal frame.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        self._buffer.clear()

    def flush_partial(self) -> list[Frame | DecodeError]:
        """The line went idle: a started frame will not complete, so drop it.

        The search resumes after its header, which finds any complete frame
        that was swallowed as the truncated frame's data.
        """
        if len(self._buffer) < len(HEADER) or not self._buffer.startswith(HEADER):
            return []
        del self._buffer[:1]
        return [DecodeError("truncated Improv frame"), *self.feed(b"")]

    def feed(self, data: bytes) -> list[Frame | DecodeError]:
        self._buffer.extend(data)
        out: list[Frame | DecodeError] = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                # keep a possible partial header at the end
                keep = len(HEADER) - 1
                del self._buffer[: max(0, len(self._buffer) - keep)]
                return out
            del self._buffer[:start]
            if len(self._buffer) < _PREFIX_LEN:
                return out
            expected = _PREFIX_LEN + self._buffer[len(HEADER) + 2] + 1
            if len(self._buffer) < expected:
                return out
            try:
                out.append(decode_frame(bytes(self._buffer[:expected])))
            except DecodeError as exc:
                out.append(exc)
                del self._buffer[:1]
                continue
            del self._buffer[:expected]


# --- RPC payloads -------------------------------------------------------------


def encode_rpc(command: int, payload: bytes) -> bytes:
    if len(payload) > MAX_DATA - 2:
        raise TooLargeError(f"Improv RPC payload is {len(payload)} bytes")
    return encode_frame(FrameType.RPC_COMMAND, bytes((command, len(payload))) + payload)


def decode_rpc(frame: Frame) -> Rpc:
    """Split an RPC command (or result) frame into command byte and payload."""
    if frame.type not in (FrameType.RPC_COMMAND, FrameType.RPC_RESULT):
        raise DecodeError(f"frame type 0x{frame.type:02x} is not an RPC")
    if len(frame.data) < 2:
        raise DecodeError("truncated Improv RPC")
    command, length = frame.data[0], frame.data[1]
    if length != len(frame.data) - 2:
        raise DecodeError(
            f"Improv RPC length {length} does not match {len(frame.data) - 2} bytes of data"
        )
    return Rpc(command, frame.data[2:])


def encode_strings(strings: Sequence[bytes]) -> bytes:
    out = bytearray()
    for item in strings:
        if len(item) > 0xFF:
            raise TooLargeError("Improv string longer than 255 bytes")
        out.append(len(item))
        out.extend(item)
    return bytes(out)


def decode_strings(payload: bytes) -> list[bytes]:
    strings: list[bytes] = []
    index = 0
    while index < len(payload):
        length = payload[index]
        end = index + 1 + length
        if end > len(payload):
            raise DecodeError("Improv string runs past the end of its RPC")
        strings.append(payload[index + 1 : end])
        index = end
    return strings


def encode_wifi_settings(ssid: bytes, password: bytes) -> bytes:
    return encode_rpc(Command.SEND_WIFI_SETTINGS, encode_strings((ssid, password)))


def decode_wifi_settings(payload: bytes) -> tuple[str, str]:
    strings = decode_strings(payload)
    if len(strings) != 2:
        raise DecodeError(f"Wi-Fi settings need SSID and password, got {len(strings)} strings")
    ssid, password = strings
    if not ssid:
        raise DecodeError("empty SSID")
    if len(ssid) > MAX_SSID_BYTES:
        raise TooLargeError(f"SSID is {len(ssid)} bytes, at most {MAX_SSID_BYTES}")
    if len(password) > MAX_PASSWORD_BYTES:
        raise TooLargeError(f"password is {len(password)} bytes, at most {MAX_PASSWORD_BYTES}")
    try:
        return ssid.decode("utf-8"), password.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("SSID or password is not UTF-8") from exc


def parse_command(frame: Frame) -> Rpc:
    """Decode an RPC command frame sent to the device; unknown commands raise."""
    rpc = decode_rpc(frame)
    if frame.type != FrameType.RPC_COMMAND:
        raise DecodeError("expected an RPC command frame")
    if rpc.command not in Command._value2member_map_:
        raise UnknownCommandError(rpc.command)
    return rpc


def encode_state(state: State) -> bytes:
    return encode_frame(FrameType.CURRENT_STATE, bytes((state,)))


def encode_error(error: ErrorCode) -> bytes:
    return encode_frame(FrameType.ERROR_STATE, bytes((error,)))


def encode_result(command: int, strings: Sequence[bytes]) -> bytes:
    payload = encode_strings(strings)
    if len(payload) > MAX_DATA - 2:
        raise TooLargeError("Improv RPC result too long")
    return encode_frame(FrameType.RPC_RESULT, bytes((command, len(payload))) + payload)
