"""Log pulls over the serial console: byte channels, the device service, the technician client.

The device side is a :class:`agent.ports.Service`: each ``tick`` reads what
has arrived, answers it through :class:`agent.logs.pull.PullSession`, and
hands the port only what it takes without waiting (non-blocking writes).  A
blocking write with ``flush()`` (tcdrain) once held the main loop for 34 s
behind a console peer that had stopped reading.  Now output waits in a
bounded queue (one answer at a time: the next request is read only once the
previous answer is out), and a peer that takes no byte for
``logs.serial_write_timeout_seconds`` is dropped: its session and queued
output are discarded, with one log line.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import select
import termios
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
# Requests are answered while less than this is queued; the queue then holds at most
# this plus one answer (a bundle is at most logs.max_bundle_bytes).
OUTPUT_HIGH_WATER = 64 * 1024
# Even a port that takes everything gets no more than this per tick.
MAX_WRITE_PER_TICK = 64 * 1024
IDLE_RESET_SECONDS = 120.0
DEFAULT_WRITE_TIMEOUT = 5.0


class ByteChannel(Protocol):
    def read(self, max_bytes: int, timeout: float) -> bytes: ...

    def write(self, data: bytes) -> None:
        """All of ``data``, waiting (with a timeout) for room: the technician's side."""

    def write_some(self, data: bytes | memoryview) -> int:
        """What the port takes now without waiting (0 when full): the device's side."""

    def discard_output(self) -> None:
        """Drop what the port still holds for a peer that has gone away."""

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
        # No flush(): tcdrain has no timeout, and write() already waited (write_timeout)
        # until the kernel holds every byte.
        try:
            self._serial.write(data)
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeoutError(f"serial write timed out: {exc}") from exc
        except (serial.SerialException, OSError) as exc:
            raise DeviceIOError(f"serial write failed: {exc}") from exc

    def write_some(self, data: bytes | memoryview) -> int:
        # pyserial opens the port O_NONBLOCK; its own write_timeout=0 mode spins on EAGAIN,
        # so write to the descriptor directly.
        try:
            return os.write(self._serial.fileno(), data)
        except BlockingIOError:
            return 0
        except (serial.SerialException, OSError) as exc:
            raise DeviceIOError(f"serial write failed: {exc}") from exc

    def discard_output(self) -> None:
        try:
            self._serial.reset_output_buffer()
        except (serial.SerialException, OSError, termios.error):
            log.debug("could not discard serial output", exc_info=True)

    def close(self) -> None:
        self._serial.close()


class FdChannel:
    """A raw file descriptor, e.g. the master side of a pty."""

    def __init__(self, fd: int, write_timeout: float = 5.0) -> None:
        self._fd = fd
        self._write_timeout = write_timeout
        # Non-blocking, so write_some never waits (shared with any dup of this fd).
        os.set_blocking(fd, False)

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
                _, ready, _ = select.select([], [self._fd], [], self._write_timeout)
                if not ready:
                    raise DeviceTimeoutError("write timed out: the peer is not reading")
                view = view[self.write_some(view) :]
        except OSError as exc:
            raise DeviceIOError(f"write failed: {exc}") from exc

    def write_some(self, data: bytes | memoryview) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise DeviceIOError(f"write failed: {exc}") from exc

    def discard_output(self) -> None:
        with contextlib.suppress(termios.error, OSError):  # not a terminal: nothing held
            termios.tcflush(self._fd, termios.TCOFLUSH)

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
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        self._channel = channel
        self._session_factory = session_factory
        self._max_payload = max_payload
        self._write_timeout = write_timeout
        self._clock = clock or SystemClock()
        self._decoder = frames.FrameDecoder(max_payload=max_payload)
        self._session = session_factory()
        self._outgoing: collections.deque[bytes] = collections.deque()
        self._offset = 0  # bytes of _outgoing[0] already written
        self._queued = 0  # bytes in _outgoing not yet written
        self._last_progress = 0.0  # monotonic: output taken, or output first queued
        self._progressing = False
        self._last_activity: float | None = None
        self.dropped_peers = 0

    def start(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._decoder = frames.FrameDecoder(max_payload=self._max_payload)
        self._session = self._session_factory()
        self._outgoing.clear()
        self._offset = self._queued = 0

    def _send(self, message: dict[str, Any]) -> None:
        frame = frames.encode(message, max_payload=self._max_payload)
        if not self._outgoing:
            self._last_progress = self._clock.monotonic()
        self._outgoing.append(frame)
        self._queued += len(frame)

    def tick(self, now: float) -> Sequence[Event]:
        self._exchange(now)
        return ()

    def _exchange(self, now: float) -> None:
        if self._last_activity is not None and now - self._last_activity > IDLE_RESET_SECONDS:
            self._reset()
            self._last_activity = None
        try:
            # Half duplex: requests already decoded are answered first, and new input is
            # read only once every answer is out, so the queue stays bounded.
            self._drain(now)
            if not self._outgoing:
                data = self._channel.read(READ_BYTES, 0)
                if data:
                    self._last_activity = now
                    self._decoder.feed(data)
                    self._drain(now)
            self._flush()
        except TransportError as exc:
            # A cable pulled mid-transfer: drop the session, keep the agent running.
            log.warning("serial console: %s", exc, extra=codes.SERIAL_BAD_FRAME.extra())
            self._reset()

    def _flush(self) -> None:
        """Hand the port what it takes now; drop a peer that took nothing for too long."""
        written = 0
        while self._outgoing and written < MAX_WRITE_PER_TICK:
            head = memoryview(self._outgoing[0])[self._offset :]
            count = self._channel.write_some(head[: MAX_WRITE_PER_TICK - written])
            if count <= 0:
                break
            written += count
            self._queued -= count
            self._offset += count
            if self._offset >= len(self._outgoing[0]):
                self._outgoing.popleft()
                self._offset = 0
        now = self._clock.monotonic()
        self._progressing = written > 0
        if written or not self._outgoing or now < self._last_progress:
            self._last_progress = now
        elif now - self._last_progress >= self._write_timeout:
            self._drop(now - self._last_progress)

    def _drop(self, stalled: float) -> None:
        self.dropped_peers += 1
        log.warning(
            "serial console: the peer took no output for %.1f s; dropped its session "
            "and %d queued bytes",
            stalled,
            self._queued,
            extra=codes.SERIAL_PEER_STALLED.extra(),
        )
        self._channel.discard_output()
        self._reset()

    def _drain(self, now: float) -> None:
        while self._queued < OUTPUT_HIGH_WATER:
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
        """Output is queued and the port took some last tick: worth ticking again soon."""
        return bool(self._outgoing) and self._progressing

    @property
    def queued_bytes(self) -> int:
        return self._queued

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
