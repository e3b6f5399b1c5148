"""A console peer that stops reading, against the real ``edge-agent run``, over a pty pair.

The agent's console is the pty's slave (``logs.serial_port``); the test holds
the master.  Before the non-blocking writer, a peer that asked for a bundle
and then stopped reading held the main loop in a blocking write and tcdrain
(34 s, measured).  Now the loop only queues what the port does not take, the
peer is dropped after ``logs.serial_write_timeout_seconds`` without progress,
the watchdog keeps its rhythm, and the next technician pulls normally.
"""

from __future__ import annotations

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
from agent.logs.settings import LogSettings
from drivers.logs.serial_link import FdChannel, TechnicianClient
from drivers.logs.store import LogStore
from drivers.provisioning.store import load_or_create_binding
from tests.support.watchdog import WATCHDOG_SECONDS, WatchedAgent

pytestmark = pytest.mark.slow

DROPPED = "took no output for"
WRITE_TIMEOUT = 1.0


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def _seed_logs(state: pathlib.Path, lines: int) -> None:
    store = LogStore(state, LogSettings(), keys=DataKeys(StateLayout(state)))
    store.directory.mkdir(parents=True, exist_ok=True)
    start = time.time() - 3600  # recent: the retention purge must leave them
    with open(store.live_path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(json.dumps({"ts": start + i * 0.1, "level": "INFO", "logger": "t",
                                 "msg": f"line {i} " + "z" * 150}) + "\n")


def _wait_for_drops(agent: WatchedAgent, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while agent.stderr().count(DROPPED) < count:
        assert time.monotonic() < deadline, f"the stalled peer was never dropped:\n" \
            f"{agent.stderr()[-2000:]}"
        time.sleep(0.05)


def _drain(fd: int) -> None:
    """Read what the agent had written before it dropped the peer."""
    while select.select([fd], [], [], 0.3)[0]:
        try:
            if not os.read(fd, 65536):
                return
        except BlockingIOError:
            return


def _start(tmp_path: pathlib.Path, port: str) -> tuple[WatchedAgent, str]:
    agent = WatchedAgent(
        tmp_path,
        "[discovery]\ndiscoverable = false\n"
        f"[logs]\nserial_port = '{port}'\nserial_write_timeout_seconds = {WRITE_TIMEOUT}\n",
    )
    code = load_or_create_binding(agent.state, "EA-SAMPLE-0001").verification_code
    # ~270 KB of bundle: several times what a pty holds (building the largest,
    # 2 MiB, bundle costs the loop ~1 s of CPU: a technician's, not an attacker's).
    _seed_logs(agent.state, 1500)
    agent.start()
    return agent, code


def test_peer_that_stops_reading_a_bundle_attack(
    tmp_path: pathlib.Path, pty_pair: tuple[int, str]
) -> None:
    master, port = pty_pair
    agent, code = _start(tmp_path, port)
    try:
        stalled = TechnicianClient(FdChannel(os.dup(master)), timeout=10)
        stalled.authenticate("code", code)
        since = time.monotonic()
        stalled.send({"t": "get", "query": {}})  # ... and never reads the answer
        _wait_for_drops(agent, 1)
        agent.wait_pings(5)
        gap = agent.max_gap(since)
        _drain(master)
        technician = TechnicianClient(FdChannel(os.dup(master)), timeout=20)
        data = technician.pull("code", code, {"tail": 50})
        assert data.count(b"\n") >= 50
        assert agent.stop() == 0
    finally:
        agent.stop()
    assert "Traceback" not in agent.stderr()
    print(f"stalled bundle reader: max watchdog gap {gap:.2f} s")
    assert gap < WATCHDOG_SECONDS / 2


def test_unauthenticated_hello_flood_without_reading_attack(
    tmp_path: pathlib.Path, pty_pair: tuple[int, str]
) -> None:
    master, port = pty_pair
    agent, code = _start(tmp_path, port)
    hello = frames.encode({"t": "hello", "v": 1})
    try:
        os.set_blocking(master, False)
        since = time.monotonic()
        sent = 0
        # Every hello costs the device a challenge; push them as fast as the pty takes them.
        while agent.stderr().count(DROPPED) < 2 and time.monotonic() - since < 15:
            try:
                sent += os.write(master, hello * 64)
            except BlockingIOError:
                time.sleep(0.01)
        _wait_for_drops(agent, 2)
        agent.wait_pings(5)
        gap = agent.max_gap(since)
        _drain(master)
        # Hellos still queued in the pty are answered and dropped in turn; a
        # technician then gets through.
        client = TechnicianClient(FdChannel(os.dup(master)), timeout=20)
        deadline = time.monotonic() + 20
        while True:
            try:
                data = client.pull("code", code, {"tail": 5})
                break
            except Exception:
                assert time.monotonic() < deadline, agent.stderr()[-2000:]
                _drain(master)
                client = TechnicianClient(FdChannel(os.dup(master)), timeout=20)
        assert data.count(b"\n") >= 5
        assert agent.stop() == 0
    finally:
        agent.stop()
    assert "Traceback" not in agent.stderr()
    print(f"hello flood: {sent} bytes of hellos, max watchdog gap {gap:.2f} s")
    assert gap < WATCHDOG_SECONDS / 2
