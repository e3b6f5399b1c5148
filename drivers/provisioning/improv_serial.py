"""Improv Wi-Fi over a serial port (pyserial): the device channel and the installer client."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Protocol

import serial

from agent.errors import DecodeError, DeviceIOError, DeviceTimeoutError, PolicyError
from agent.ports import Clock
from agent.provisioning import improv
from agent.provisioning.improv import Command, ErrorCode, Frame, FrameType, State
from agent.provisioning.improv_device import ImprovDevice
from agent.provisioning.wifi import ConnectResult, WifiCredentials
from drivers.clock import SystemClock

log = logging.getLogger(__name__)
READ_CHUNK = 256


class SerialPort(Protocol):
    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# Silence in the middle of a frame that makes it a truncated one. USB-serial
# adapters and Web Serial deliver a frame in chunks with pauses of 100-200 ms
# between them under load: well above those, well below a person's patience.
INTER_BYTE_TIMEOUT = 1.0

# Improv runs on its own thread, never the main loop's; still, an installer that stops
# reading must not hold that thread (and stop(), which joins it) for ever.
WRITE_TIMEOUT = 5.0


def open_port(url: str, baud: int, timeout: float = 0.1) -> SerialPort:
    try:
        port: SerialPort = serial.serial_for_url(
            url, baudrate=baud, timeout=timeout, write_timeout=WRITE_TIMEOUT
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceIOError(f"cannot open serial port {url}: {exc}") from exc
    return port


def _write(port: SerialPort, frames: list[bytes] | tuple[bytes, ...]) -> None:
    try:
        for frame in frames:
            port.write(frame)
        port.flush()
    except (serial.SerialException, OSError) as exc:
        raise DeviceIOError(f"serial write failed: {exc}") from exc


def _read(port: SerialPort) -> bytes:
    try:
        return port.read(READ_CHUNK)
    except (serial.SerialException, OSError) as exc:
        raise DeviceIOError(f"serial read failed: {exc}") from exc


class ImprovSerialChannel:
    """Serves Improv on ``port`` from a background thread until :meth:`stop`.

    A frame may arrive in pieces with pauses between them (a USB-serial adapter
    buffers, a browser's Web Serial writes in chunks): only a line silent for
    ``inter_byte_timeout`` seconds in the middle of a frame makes it a truncated
    one (``invalid RPC packet``).
    """

    def __init__(
        self,
        port: SerialPort,
        device: ImprovDevice,
        connect: Callable[[WifiCredentials], ConnectResult],
        *,
        clock: Clock | None = None,
        inter_byte_timeout: float = INTER_BYTE_TIMEOUT,
    ) -> None:
        self._port = port
        self._device = device
        self._connect = connect
        self._clock = clock or SystemClock()
        self._inter_byte_timeout = inter_byte_timeout
        self._decoder = improv.StreamDecoder()
        self._last_byte_at = float("-inf")
        self._authorize = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="improv-serial", daemon=True)

    @property
    def state(self) -> State:
        return self._device.state(self._clock.monotonic())

    def authorize(self) -> None:
        """The physical button was pressed (any thread); the serial thread applies it."""
        self._authorize.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            log.debug("closing the Improv port failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except DeviceIOError as exc:
                log.warning("Improv serial: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # keep serving: one bad exchange must not end the channel
                log.exception("Improv serial exchange failed")
                self._decoder.reset()

    def poll(self) -> None:
        """Read what arrived (waiting up to the port timeout) and answer it."""
        data = _read(self._port)
        now = self._clock.monotonic()
        if self._authorize.is_set():
            self._authorize.clear()
            self._device.authorize(now)
        if data:
            self._last_byte_at = now
            items = self._decoder.feed(data)
        elif self._decoder.pending and now - self._last_byte_at >= self._inter_byte_timeout:
            # the line stayed silent mid-frame: that frame will not complete
            items = self._decoder.flush_partial()
        else:
            items = []
        for item in items:
            reply = self._device.receive(item, now)
            _write(self._port, reply.frames)
            if reply.connect is not None:
                result = self._connect(reply.connect)
                now = self._clock.monotonic()
                _write(self._port, self._device.connect_finished(result, now))
        _write(self._port, self._device.tick(self._clock.monotonic()))


class ImprovClient:
    """The installer's side: ask a device on ``port`` for state, networks, or to connect."""

    def __init__(self, port: SerialPort, clock: Clock | None = None) -> None:
        self._port = port
        self._clock = clock or SystemClock()
        self._decoder = improv.StreamDecoder()
        self._pending: collections.deque[Frame] = collections.deque()

    def _next_frame(self, deadline: float) -> Frame:
        while not self._pending:
            if self._clock.monotonic() >= deadline:
                raise DeviceTimeoutError("no answer from the Improv device")
            data = _read(self._port)
            self._pending.extend(f for f in self._decoder.feed(data) if isinstance(f, Frame))
        return self._pending.popleft()

    def _await(
        self, deadline: float, accept: Callable[[Frame], bool], progress: Callable[[str], None]
    ) -> Frame:
        while True:
            frame = self._next_frame(deadline)
            if frame.type == FrameType.ERROR_STATE and frame.data[:1] not in (b"", b"\x00"):
                raise PolicyError(_describe_error(frame.data[0]))
            if frame.type == FrameType.CURRENT_STATE and frame.data:
                progress(f"device state: {_state_name(frame.data[0])}")
            if accept(frame):
                return frame

    def current_state(self, timeout: float = 5.0) -> State:
        _write(self._port, [improv.encode_rpc(Command.REQUEST_CURRENT_STATE, b"")])
        frame = self._await(
            self._clock.monotonic() + timeout, lambda f: f.type == FrameType.CURRENT_STATE, _quiet
        )
        try:
            return State(frame.data[0])
        except (IndexError, ValueError) as exc:
            raise DecodeError("device sent an unknown Improv state") from exc

    def device_info(self, timeout: float = 5.0) -> list[str]:
        _write(self._port, [improv.encode_rpc(Command.REQUEST_DEVICE_INFO, b"")])
        frame = self._await(
            self._clock.monotonic() + timeout, _is_result(Command.REQUEST_DEVICE_INFO), _quiet
        )
        return _strings(frame)

    def scan(self, timeout: float = 20.0) -> list[tuple[str, int, bool]]:
        _write(self._port, [improv.encode_rpc(Command.REQUEST_SCANNED_NETWORKS, b"")])
        deadline = self._clock.monotonic() + timeout
        networks: list[tuple[str, int, bool]] = []
        while True:
            strings = _strings(
                self._await(deadline, _is_result(Command.REQUEST_SCANNED_NETWORKS), _quiet)
            )
            if not strings:
                return networks
            if len(strings) != 3 or not strings[1].lstrip("-").isdigit():
                raise DecodeError("malformed scan result from device")
            networks.append((strings[0], int(strings[1]), strings[2] == "YES"))

    def send_wifi(
        self,
        credentials: WifiCredentials,
        timeout: float = 60.0,
        progress: Callable[[str], None] = lambda _: None,
    ) -> str:
        """Provision the device; returns the redirect URL it reports (may be empty)."""
        frame = improv.encode_wifi_settings(
            credentials.ssid.encode("utf-8"), (credentials.passphrase or "").encode("utf-8")
        )
        _write(self._port, [frame])
        result = self._await(
            self._clock.monotonic() + timeout, _is_result(Command.SEND_WIFI_SETTINGS), progress
        )
        strings = _strings(result)
        return strings[0] if strings else ""


def _quiet(_: str) -> None:
    return None


def _is_result(command: int) -> Callable[[Frame], bool]:
    def accept(frame: Frame) -> bool:
        return frame.type == FrameType.RPC_RESULT and frame.data[:1] == bytes((command,))

    return accept


def _strings(frame: Frame) -> list[str]:
    rpc = improv.decode_rpc(frame)
    return [s.decode("utf-8", "replace") for s in improv.decode_strings(rpc.payload)]


def _state_name(value: int) -> str:
    try:
        return State(value).name.lower()
    except ValueError:
        return f"0x{value:02x}"


def _describe_error(value: int) -> str:
    try:
        name = ErrorCode(value).name.lower().replace("_", " ")
    except ValueError:
        name = f"error 0x{value:02x}"
    if value == ErrorCode.NOT_AUTHORIZED:
        name += (
            " (press the device's button, or, on a provisioned device, have the owner "
            "reopen provisioning)"
        )
    return f"Improv device reports: {name}"
