"""WS-Discovery probe floods against the real ``edge-agent run``, under a watchdog.

Measured before the limits: every unique Probe was answered, 481 bytes in
for 1,345 out.  The agent here answers on a loopback port; attackers send
unique Probes from 127.0.0.2 or from 200 loopback addresses (standing in for
spoofed LAN sources), while a camera tool probes from 127.0.0.1.  Replies are
counted after a sentinel: a legitimate Probe sent once the flood is over,
whose answer leaves the agent after every reply it owed the flood (one
socket, answered in order, delivered by loopback inside ``sendto``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from agent.discovery import wsd
from agent.discovery.settings import DiscoverySettings
from agent.discovery.wsd import NETWORK_VIDEO_TRANSMITTER, Probe, WsdVersion
from tests.support.process import REPO
from tests.support.watchdog import WATCHDOG_SECONDS, WatchedAgent

pytestmark = pytest.mark.slow

LIMITS = DiscoverySettings()
FLOOD_SECONDS = 4.0
FLOOD_PER_SECOND = 2000


def _probe() -> tuple[str, bytes]:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    return message_id, wsd.encode(Probe(WsdVersion.V2005_04, message_id,
                                        (NETWORK_VIDEO_TRANSMITTER,)))


def _udp(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((source, 0))
    return sock


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``."""
    sock.setblocking(False)
    found = []
    try:
        while True:
            found.append(sock.recv(65535))
    except BlockingIOError:
        return found


def probe_until_answered(port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> float:
    """A camera tool's behaviour: a fresh Probe every 0.5 s until one is answered."""
    started = time.monotonic()
    with _udp(source) as sock:
        sent: set[str] = set()
        while time.monotonic() - started < timeout:
            message_id, data = _probe()
            sent.add(message_id)
            sock.sendto(data, ("127.0.0.1", port))
            sock.settimeout(0.5)
            try:
                while True:
                    reply = wsd.decode(sock.recv(65535))
                    if isinstance(reply, wsd.ProbeMatches) and reply.relates_to in sent:
                        return time.monotonic() - started
            except TimeoutError:
                continue
    raise AssertionError(f"no answer from {source} within {timeout} s")


def _flood(port: int, attackers: list[socket.socket]) -> tuple[int, int, float]:
    """Unique Probes at FLOOD_PER_SECOND for FLOOD_SECONDS; (probes, bytes, seconds)."""
    started = time.monotonic()
    sent = sent_bytes = 0
    while (elapsed := time.monotonic() - started) < FLOOD_SECONDS:
        while sent < elapsed * FLOOD_PER_SECOND:
            _, data = _probe()
            attackers[sent % len(attackers)].sendto(data, ("127.0.0.1", port))
            sent += 1
            sent_bytes += len(data)
        time.sleep(0.005)
    return sent, sent_bytes, time.monotonic() - started


def _agent(tmp_path: pathlib.Path) -> tuple[WatchedAgent, int]:
    port = _free_udp_port()
    agent = WatchedAgent(
        tmp_path,
        f"[discovery]\nwsd_port = {port}\ninterface_address = '127.0.0.1'\n"
        "mdns_enabled = false\nreply_delay_max_ms = 0\n",
    )
    agent.start()
    probe_until_answered(port)
    return agent, port


def test_probe_flood_from_one_source_attack(tmp_path: pathlib.Path) -> None:
    agent, port = _agent(tmp_path)
    attacker = _udp("127.0.0.2")
    during: list[float] = []
    try:
        since = time.monotonic()

        def camera_tool() -> None:
            time.sleep(1.0)  # well into the flood
            during.append(probe_until_answered(port))

        tool = threading.Thread(target=camera_tool)
        tool.start()
        sent, sent_bytes, seconds = _flood(port, [attacker])
        tool.join(15)
        probe_until_answered(port)  # the sentinel
        replies = _pending(attacker)
        agent.wait_pings(3)
        gap = agent.max_gap(since)
        assert agent.stop() == 0
    finally:
        attacker.close()
        agent.stop()
    answered_bytes = sum(len(r) for r in replies)
    print(f"one-source flood: {sent} probes ({sent_bytes} B) -> {len(replies)} replies "
          f"({answered_bytes} B, {answered_bytes / sent_bytes:.4f}x); camera tool answered in "
          f"{during[0] if during else -1:.2f} s; max watchdog gap {gap:.2f} s")
    assert 1 <= len(replies) <= LIMITS.wsd_source_burst + LIMITS.wsd_source_rate_per_second * (
        seconds + 1
    )
    assert during, "a camera tool's probe went unanswered during the flood"
    stderr = agent.stderr()
    assert "Traceback" not in stderr
    assert stderr.count("WS-Discovery:") == 1  # one line, not one per probe
    assert gap < WATCHDOG_SECONDS / 2


def test_probe_flood_from_spoofed_sources_attack(tmp_path: pathlib.Path) -> None:
    agent, port = _agent(tmp_path)
    attackers = [_udp(f"127.0.5.{n}") for n in range(1, 201)]
    try:
        since = time.monotonic()
        sent, sent_bytes, seconds = _flood(port, attackers)
        # The global bucket is spent: the tool is answered once it refills.
        after = probe_until_answered(port)
        replies = [r for sock in attackers for r in _pending(sock)]
        agent.wait_pings(3)
        gap = agent.max_gap(since)
        assert agent.stop() == 0
    finally:
        for sock in attackers:
            sock.close()
        agent.stop()
    answered_bytes = sum(len(r) for r in replies)
    print(f"spoofed-source flood: {sent} probes ({sent_bytes} B) -> {len(replies)} replies "
          f"({answered_bytes} B); camera tool answered {after:.2f} s after; "
          f"max watchdog gap {gap:.2f} s")
    ceiling = LIMITS.wsd_global_burst + LIMITS.wsd_global_rate_per_second * (seconds + 1)
    assert len(replies) <= ceiling
    assert len(replies) < sent / 10
    assert "Traceback" not in agent.stderr()
    assert gap < WATCHDOG_SECONDS / 2


# --- the same flood over real multicast, between two network namespaces -----------

AGENT_ADDRESS, ATTACKER_ADDRESS, TOOL_ADDRESS = "192.168.79.1", "192.168.79.2", "192.168.79.3"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def lan() -> Iterator[tuple[str, str]]:
    """Namespace A (the agent) and B (attacker and camera tool), joined by a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100000}"
    a, b = f"eaflood-a-{tag}", f"eaflood-b-{tag}"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", a], capture_output=True, check=False)
        pytest.skip(f"cannot create network namespaces: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", f"fa{tag}", "netns", a, "type", "veth", "peer", "name", f"fb{tag}",
            "netns", b)
        _ip("-n", a, "addr", "add", f"{AGENT_ADDRESS}/24", "dev", f"fa{tag}")
        for address in (ATTACKER_ADDRESS, TOOL_ADDRESS):
            _ip("-n", b, "addr", "add", f"{address}/24", "dev", f"fb{tag}")
        for ns, dev in ((a, f"fa{tag}"), (b, f"fb{tag}")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        yield a, b
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", b], capture_output=True, check=False)


def _peer(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.discovery.flood_peer", *args]


def _tool(ns: str, timeout: float = 10.0) -> float:
    done = subprocess.run(_peer(ns, "tool", TOOL_ADDRESS, str(timeout)), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout + 20)
    assert done.returncode == 0, f"the camera tool was never answered: {done.stderr}"
    return float(done.stdout)


@pytest.mark.netns
def test_multicast_probe_flood_between_namespaces_attack(
    tmp_path: pathlib.Path, lan: tuple[str, str]
) -> None:
    a, b = lan
    agent = WatchedAgent(
        tmp_path,
        # No reply delay: replies then leave in the order their probes came, which
        # makes the camera tool's answer after the flood a sentinel.
        f"[discovery]\ninterface_address = '{AGENT_ADDRESS}'\nmdns_enabled = false\n"
        "reply_delay_max_ms = 0\n",
        netns=a,
    )
    attacker: subprocess.Popen[str] | None = None
    try:
        agent.start()
        _tool(b, 15.0)  # ready: real multicast on a veth
        since = time.monotonic()
        attacker = subprocess.Popen(
            _peer(b, "flood", ATTACKER_ADDRESS, str(FLOOD_SECONDS), str(FLOOD_PER_SECOND)),
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert attacker.stdout is not None and attacker.stdin is not None
        during = _tool(b)  # answered while the flood runs
        assert attacker.stdout.readline().strip() == "flooded"
        _tool(b)  # the sentinel: every reply owed to the flood went out before this one
        attacker.stdin.write("count\n")
        attacker.stdin.flush()
        result = json.loads(attacker.stdout.readline())
        agent.wait_pings(3)
        gap = agent.max_gap(since)
        assert agent.stop() == 0
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
        agent.stop()
    replies = result["replies"]
    print(f"namespace multicast flood: {result['sent']} probes ({result['sent_bytes']} B) -> "
          f"{len(replies)} replies ({sum(replies)} B); camera tool answered in {during:.2f} s "
          f"during it; max watchdog gap {gap:.2f} s")
    ceiling = LIMITS.wsd_source_burst + LIMITS.wsd_source_rate_per_second * (
        result["seconds"] + 2
    )
    assert len(replies) <= ceiling
    assert "Traceback" not in agent.stderr()
    assert gap < WATCHDOG_SECONDS / 2
