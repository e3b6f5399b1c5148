"""Log pulls over the serial console: byte channels, the device service, the technician client.

The device side is a :class:`agent.ports.Service`: each ``tick`` reads what
has arrived, answers it through :class:`agent.logs.pull.PullSession`, and
writes at most a few frames, so a slow console never stalls the main loop.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import select
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import serial

from agent.errors import (
    BadDataError,
    DecodeError,
    DeviceIOError,
    DeviceTimeoutError,
    PolicyError,
    TransportError,
    VerificationError,
)
from agent.events import Event
from agent.logs import codes, frames
from agent.logs.pull import PullSession, auth_mac, error
from agent.ports import Clock
from drivers.clock import SystemClock

log = logging.getLogger(__name__)

READ_BYTES = 4096
FRAMES_PER_TICK = 8
IDLE_RESET_SECONDS = 120.0


class ByteChannel(Protocol):
    def read(self, max_bytes: int, timeout: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class SerialChannel:
    """A pyserial port (the device's console, or a technician's USB adapter)."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        try:
            self._serial = serial.Serial(port, baudrate=baudrate, timeout=0, write_timeout=10)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceIOError(f"cannot open serial port {port}: {exc}") from exc

    def read(self, max_bytes: int, timeout: float) -> bytes:
        try:
            self._serial.timeout = timeout
            data: bytes = self._serial.read(max_bytes)
        except (serial.SerialException, OSError) as exc:
            raise DeviceIOError(f"serial read failed: {exc}") from exc
        return data

    def write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
            self._serial.flush()
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeoutError(f"serial write timed out: {exc}") from exc
        except (serial.SerialException, OSError) as exc:
            raise DeviceIOError(f"serial write failed: {exc}") from exc

    def close(self) -> None:
        self._serial.close()


class FdChannel:
    """A raw file descriptor, e.g. the master side of a pty."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self, max_bytes: int, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            return os.read(self._fd, max_bytes) if ready else b""
        except OSError as exc:
            raise DeviceIOError(f"read failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                select.select([], [self._fd], [], 5.0)
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise DeviceIOError(f"write failed: {exc}") from exc

    def close(self) -> None:
        os.close(self._fd)


class SerialLogService:
    """Device side: answers technician pull requests arriving on ``channel``."""

    name = "logs.serial"

    def __init__(
        self,
        channel: ByteChannel,
        session_factory: Callable[[], PullSession],
        *,
        max_payload: int = frames.DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._channel = channel
        self._session_factory = session_factory
        self._max_payload = max_payload
        self._decoder = frames.FrameDecoder(max_payload=max_payload)
        self._session = session_factory()
        self._outgoing: collections.deque[bytes] = collections.deque()
        self._last_activity: float | None = None

    def start(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._decoder = frames.FrameDecoder(max_payload=self._max_payload)
        self._session = self._session_factory()
        self._outgoing.clear()

    def _send(self, message: dict[str, Any]) -> None:
        self._outgoing.append(frames.encode(message, max_payload=self._max_payload))

    def tick(self, now: float) -> Sequence[Event]:
        self._exchange(now)
        return ()

    def _exchange(self, now: float) -> None:
        if self._last_activity is not None and now - self._last_activity > IDLE_RESET_SECONDS:
            self._reset()
            self._last_activity = None
        try:
            data = self._channel.read(READ_BYTES, 0)
            if data:
                self._last_activity = now
                self._decoder.feed(data)
                self._drain(now)
            for _ in range(min(FRAMES_PER_TICK, len(self._outgoing))):
                self._channel.write(self._outgoing.popleft())
        except TransportError as exc:
            # A cable pulled mid-transfer: drop the session, keep the agent running.
            log.warning("serial console: %s", exc, extra=codes.SERIAL_BAD_FRAME.extra())
            self._reset()

    def _drain(self, now: float) -> None:
        while True:
            try:
                message = self._decoder.next_message()
                if message is None:
                    return
                for reply in self._session.handle(message, now):
                    self._send(reply)
            except BadDataError as exc:
                # Hostile or noisy input: say why, keep the line open, never crash.
                log.warning("serial frame rejected: %s", exc, extra=codes.SERIAL_BAD_FRAME.extra())
                self._send(error(codes.SERIAL_BAD_FRAME, f"{type(exc).__name__}: {exc}"[:200]))

    @property
    def busy(self) -> bool:
        return bool(self._outgoing)

    def stop(self) -> None:
        self._channel.close()


Progress = Callable[[int, int], None]


class TechnicianClient:
    """Technician side: authenticate, request a bundle, reassemble and check it."""

    def __init__(
        self,
        channel: ByteChannel,
        *,
        timeout: float = 10.0,
        clock: Clock | None = None,
        max_payload: int = frames.DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._channel = channel
        self._timeout = timeout
        self._clock = clock or SystemClock()
        self._max_payload = max_payload
        self._decoder = frames.FrameDecoder(max_payload=max_payload)

    def send(self, message: dict[str, Any]) -> None:
        self._channel.write(frames.encode(message, max_payload=self._max_payload))

    def receive(self) -> dict[str, Any]:
        deadline = self._clock.monotonic() + self._timeout
        while True:
            message = self._decoder.next_message()
            if message is not None:
                return message
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                raise DeviceTimeoutError("device did not answer in time")
            self._decoder.feed(self._channel.read(READ_BYTES, min(remaining, 0.2)))

    def _expect(self, kind: str) -> dict[str, Any]:
        message = self.receive()
        if message["t"] == "error":
            reason = f"{message.get('code')}: {message.get('reason')}"
            if message.get("code") in {codes.AUTH_FAILED.code, codes.AUTH_LOCKED_OUT.code}:
                raise VerificationError(f"device refused: {reason}")
            raise PolicyError(f"device refused: {reason}")
        if message["t"] != kind:
            raise DecodeError(f"expected {kind!r}, got {str(message['t'])[:20]!r}")
        return message

    def authenticate(self, method: str, secret: str) -> None:
        self.send({"t": "hello", "v": 1})
        nonce = self._expect("challenge").get("nonce")
        if not isinstance(nonce, bytes):
            raise DecodeError("challenge without a nonce")
        self.send({"t": "auth", "method": method, "mac": auth_mac(secret, nonce)})
        self._expect("auth_ok")

    def fetch(self, query: Mapping[str, object], progress: Progress | None = None) -> bytes:
        self.send({"t": "get", "query": dict(query)})
        meta = self._expect("meta")
        size, count, digest = meta.get("size"), meta.get("chunks"), meta.get("sha256")
        if not isinstance(size, int) or not isinstance(count, int):
            raise DecodeError("meta without size/chunks")
        received = bytearray()
        for index in range(count):
            chunk = self._expect("chunk")
            data = chunk.get("data")
            if chunk.get("i") != index or not isinstance(data, bytes):
                raise DecodeError(f"chunk {index} missing or out of order")
            received += data
            if len(received) > size:
                raise DecodeError("device sent more bytes than announced")
            if progress is not None:
                progress(len(received), size)
        self._expect("end")
        if len(received) != size or hashlib.sha256(received).digest() != digest:
            raise VerificationError("bundle digest mismatch")
        return bytes(received)

    def pull(
        self,
        method: str,
        secret: str,
        query: Mapping[str, object],
        progress: Progress | None = None,
    ) -> bytes:
        self.authenticate(method, secret)
        data = self.fetch(query, progress)
        self.send({"t": "bye"})
        return data
