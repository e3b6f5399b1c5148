"""The console service's writer over a real pty pair: never blocks, stays bounded, drops.

The service ticks in the test's thread with a manual clock, so "no output
taken for the write timeout" is a clock step, not a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import select
import time
from collections.abc import Iterator

import pytest

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs import frames
from agent.logs.pull import AuthLimiter, PullSession, TechnicianSecrets, auth_mac
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from drivers.logs import serial_link
from drivers.logs.feature import bundle_provider
from drivers.logs.serial_link import FdChannel, SerialChannel, SerialLogService
from drivers.logs.store import LogStore
from tests.support.clock import ManualClock

CODE = "314-159"
WRITE_TIMEOUT = 2.0


class Console:
    """The device's service on a pty slave; the technician's raw end is ``master``."""

    def __init__(self, state: pathlib.Path) -> None:
        self.master, slave = os.openpty()
        os.set_blocking(self.master, False)
        store = LogStore(state, LogSettings(), keys=DataKeys(StateLayout(state)))
        store.directory.mkdir(parents=True, exist_ok=True)
        start = time.time() - 600
        with open(store.live_path, "w", encoding="utf-8") as fh:
            for i in range(3000):
                fh.write(json.dumps({"ts": start + i * 0.1, "level": "INFO", "logger": "t",
                                     "msg": f"line {i} " + "q" * 150}) + "\n")
        provide = bundle_provider(store, Redactor(), LogSettings())
        self.clock = ManualClock(1000.0)
        self.service = SerialLogService(
            SerialChannel(os.ttyname(slave)),
            lambda: PullSession(TechnicianSecrets(lambda: CODE), AuthLimiter(5, 60), provide,
                                chunk_bytes=4096),
            write_timeout=WRITE_TIMEOUT,
            clock=self.clock,
        )
        os.close(slave)
        self.service.start()
        self.decoder = frames.FrameDecoder()

    def send(self, message: dict[str, object]) -> None:
        os.write(self.master, frames.encode(message))  # type: ignore[arg-type]

    def tick(self) -> float:
        started = time.perf_counter()
        self.service.tick(self.clock.now())
        return time.perf_counter() - started

    def receive(self, timeout: float = 5.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while (message := self.decoder.next_message()) is None:
            assert time.monotonic() < deadline, "no answer from the console service"
            self.tick()
            if select.select([self.master], [], [], 0.01)[0]:
                self.decoder.feed(os.read(self.master, 65536))
        return message

    def authenticate(self) -> None:
        self.send({"t": "hello", "v": 1})
        nonce = self.receive()["nonce"]
        assert isinstance(nonce, bytes)
        self.send({"t": "auth", "method": "code", "mac": auth_mac(CODE, nonce)})
        assert self.receive()["t"] == "auth_ok"

    def close(self) -> None:
        self.service.stop()
        os.close(self.master)


@pytest.fixture
def console(tmp_path: pathlib.Path) -> Iterator[Console]:
    device = Console(tmp_path)
    try:
        yield device
    finally:
        device.close()


def _tick_until_stalled(console: Console) -> list[float]:
    """Tick until the pty takes nothing for a while; every tick's duration.

    The kernel moves pty data between its buffers asynchronously, so a few
    bytes of room can still appear after a first tick that wrote nothing.
    """
    durations = []
    idle = 0
    for _ in range(2000):
        before = console.service.queued_bytes
        durations.append(console.tick())
        idle = idle + 1 if console.service.queued_bytes == before and before > 0 else 0
        if idle >= 5:
            return durations
        time.sleep(0.01)
    raise AssertionError("the pty never filled up")


def test_a_reader_that_stops_never_blocks_a_tick_and_is_dropped(console: Console) -> None:
    console.authenticate()
    console.send({"t": "get", "query": {}})  # ~500 KB of answer; nobody reads it
    durations = _tick_until_stalled(console)
    # The first tick builds the bundle (CPU, a technician's cost); none waits on the port.
    assert max(durations[1:], default=0.0) < 0.05
    stalled = console.service.queued_bytes
    assert 0 < stalled <= LogSettings().max_bundle_bytes + serial_link.OUTPUT_HIGH_WATER
    # No byte taken, but not for long enough yet: the session stays.
    console.clock.advance(WRITE_TIMEOUT / 2)
    assert console.tick() < 0.05
    assert console.service.dropped_peers == 0 and console.service.queued_bytes > 0
    for _ in range(5):
        console.clock.advance(WRITE_TIMEOUT)
        assert console.tick() < 0.05
        if console.service.dropped_peers:
            break
    assert console.service.dropped_peers == 1 and console.service.queued_bytes == 0


def test_a_slow_reader_that_keeps_reading_is_not_dropped(console: Console) -> None:
    console.authenticate()
    console.send({"t": "get", "query": {"tail": 2000}})
    meta = console.receive()
    assert meta["t"] == "meta"
    chunks = 0
    ended = False
    while not ended:
        # A slow technician: it reads what has arrived, then nothing for just under
        # the timeout.  (A pty frees room only once its reader has drained a good
        # part of it, so "slow" has to mean long pauses, not small reads.)
        console.clock.advance(WRITE_TIMEOUT * 0.9)
        console.tick()
        assert select.select([console.master], [], [], 5.0)[0], "the service sent nothing"
        with contextlib.suppress(BlockingIOError):
            while data := os.read(console.master, 65536):
                console.decoder.feed(data)
        while (message := console.decoder.next_message()) is not None:
            if message["t"] == "end":
                ended = True
                break
            assert message["t"] == "chunk" and message["i"] == chunks
            chunks += 1
    assert chunks == meta["chunks"]
    assert console.service.dropped_peers == 0


def test_requests_wait_while_an_answer_is_queued(console: Console) -> None:
    console.authenticate()
    # A get, then 2,000 hellos: none is answered (nor queued) while the bundle is
    # still going out, so the queue never holds more than that one answer.
    os.write(console.master, frames.encode({"t": "get", "query": {}}))
    console.tick()
    answer = console.service.queued_bytes  # the bundle, less what the pty took at once
    assert answer > 0
    burst = frames.encode({"t": "hello", "v": 1}) * 2000  # ~180 KB of challenges owed
    written = 0
    peak = 0
    for _ in range(2000):
        with contextlib.suppress(BlockingIOError):  # the device is not reading: fine
            written += os.write(console.master, burst[written:])
        console.tick()
        peak = max(peak, console.service.queued_bytes)
        if written == len(burst):
            break
    assert peak <= answer
    assert written > 0


def test_fd_channel_writes_time_out_instead_of_hanging(tmp_path: pathlib.Path) -> None:
    master, slave = os.openpty()
    try:
        channel = FdChannel(os.dup(slave), write_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(serial_link.DeviceTimeoutError):
            channel.write(b"x" * (8 << 20))  # nobody reads the master
        assert time.monotonic() - started < 3
        assert channel.write_some(b"more") == 0
        channel.close()
    finally:
        os.close(master)
        os.close(slave)
