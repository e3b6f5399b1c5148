"""Hostile LAN peers against the real ``edge-agent run``'s log endpoint, under a watchdog.

Measured before the bounded server (drivers/httpserve.py): 1,011 idle
connections from one peer took all 1,024 descriptors, the upgrade service
could no longer read its state file, and the watchdog went silent for 30 s
(48.9 s in the researcher's run).  Each test here runs the attack against
the real agent with systemd's default fd limit, records WATCHDOG=1 arrivals,
and requires the longest gap to stay under WatchdogSec/2 while a technician's
request from another address is still answered.  Everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import pathlib
import socket
import threading
import time

import pytest

from drivers.cli import main
from tests.support.attacks import close_all, get, get_until_ok, idle_connections
from tests.support.broker import free_port
from tests.support.watchdog import WATCHDOG_SECONDS, WatchedAgent, raise_own_nofile

pytestmark = pytest.mark.slow

TOKEN = "tech-token-7731"
BUNDLE = "/api/v1/logs/bundle?tail=5"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ATTACKER = "127.0.0.2"
# What the agent may open beyond its baseline: the connection cap (16), its
# refused-but-not-yet-closed sockets and the odd file a service opens.
FD_SLACK = 16 + 24


def _agent(tmp_path: pathlib.Path, extra: str = "") -> tuple[WatchedAgent, int]:
    port = free_port()
    token = tmp_path / "technician.token"
    token.write_text(TOKEN + "\n")
    agent = WatchedAgent(
        tmp_path,
        "[discovery]\ndiscoverable = false\n"
        f"[logs]\nlan_port = {port}\ntechnician_token_file = '{token}'\n" + extra,
    )
    # The endpoint serves bundles only with the owner's consent (as logs.upload does).
    grant = ["consent", "grant", "--yes", "troubleshooting_logs"]
    assert main([*grant, "--state-dir", str(agent.state)]) == 0
    return agent, port


def _finish(agent: WatchedAgent, since: float) -> float:
    agent.wait_pings(3)
    gap = agent.max_gap(since)
    assert agent.stop() == 0
    stderr = agent.stderr()
    assert "Traceback" not in stderr, stderr[-3000:]
    return gap


def test_half_open_connection_flood_from_one_peer_attack(tmp_path: pathlib.Path) -> None:
    raise_own_nofile(4096)
    agent, port = _agent(tmp_path)
    attack: list[socket.socket] = []
    try:
        agent.start()
        baseline = agent.open_fds()
        since = time.monotonic()
        attack = idle_connections(port, 1100, [ATTACKER], pace=24)
        assert len(attack) == 1100
        status, took = get_until_ok(port, BUNDLE, AUTH)
        assert status == 200, "a technician's request failed during the flood"
        assert agent.open_fds() <= baseline + FD_SLACK
        agent.wait_pings(5)
        close_all(attack)
        assert get(port, BUNDLE, AUTH)[0] == 200
        gap = _finish(agent, since)
    finally:
        close_all(attack)
        agent.stop()
    print(f"one-peer flood: max watchdog gap {gap:.2f} s, technician answered in {took:.2f} s")
    assert gap < WATCHDOG_SECONDS / 2


def test_half_open_connection_flood_from_many_addresses_attack(tmp_path: pathlib.Path) -> None:
    raise_own_nofile(4096)
    agent, port = _agent(tmp_path)
    sources = [f"127.0.2.{n}" for n in range(1, 111)]
    attack: list[socket.socket] = []
    try:
        agent.start()
        baseline = agent.open_fds()
        since = time.monotonic()
        attack = idle_connections(port, 1100, sources, pace=24)
        assert len(attack) == 1100
        # Every slot is held by an idle peer: the newcomer evicts the oldest of them.
        status, took = get_until_ok(port, BUNDLE, AUTH)
        assert status == 200, "a technician's request failed during the flood"
        assert agent.open_fds() <= baseline + FD_SLACK
        assert agent.threads() <= 40
        agent.wait_pings(5)
        close_all(attack)
        gap = _finish(agent, since)
    finally:
        close_all(attack)
        agent.stop()
    print(f"many-address flood: max watchdog gap {gap:.2f} s, technician in {took:.2f} s")
    assert gap < WATCHDOG_SECONDS / 2


def test_slowloris_headers_attack(tmp_path: pathlib.Path) -> None:
    timeout = 2.0
    agent, port = _agent(tmp_path, f"lan_timeout_seconds = {timeout}\n")
    lifetimes: list[float] = []
    try:
        agent.start()
        since = time.monotonic()
        socks = []
        for n in range(48):
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=(f"127.0.3.{n % 12 + 1}", 0)
            )
            sock.sendall(b"GET /api/v1/logs/bundle HTTP/1.1\r\nHost: device\r\n")
            socks.append((time.monotonic(), sock))
        done = threading.Event()

        def technician() -> None:
            status, _ = get_until_ok(port, BUNDLE, AUTH)
            if status == 200:
                done.set()

        helper = threading.Thread(target=technician)
        helper.start()
        # A header byte every 0.25 s: never idle long, never a complete request.
        open_socks = list(socks)
        while open_socks and time.monotonic() - since < 3 * timeout + 5:
            still = []
            for opened, sock in open_socks:
                try:
                    sock.sendall(b"X")
                    still.append((opened, sock))
                except OSError:
                    lifetimes.append(time.monotonic() - opened)
                    sock.close()
            open_socks = still
            time.sleep(0.25)
        helper.join(10)
        assert not open_socks, f"{len(open_socks)} trickling connections outlived the deadline"
        assert done.is_set(), "a technician's request failed during the slowloris attack"
        gap = _finish(agent, since)
    finally:
        agent.stop()
    # Cut at the request deadline (or earlier, evicted); detected within the next sends.
    assert max(lifetimes) < timeout + 1.5
    print(f"slowloris: max watchdog gap {gap:.2f} s, longest connection {max(lifetimes):.2f} s")
    assert gap < WATCHDOG_SECONDS / 2
