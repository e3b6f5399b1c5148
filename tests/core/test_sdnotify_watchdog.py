from __future__ import annotations

import os
import socket
from pathlib import Path

from agent.liveness import Liveness, WatchdogGate
from drivers.sdnotify import Notifier, watchdog_interval


def test_notifier_sends_sd_notify_datagrams_over_a_socketpair() -> None:
    ours, systemd_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifier = Notifier(ours)
    assert notifier.ready(status="queued 3 messages")
    assert systemd_side.recv(256) == b"READY=1\nSTATUS=queued 3 messages"
    assert notifier.watchdog()
    assert systemd_side.recv(256) == b"WATCHDOG=1"
    systemd_side.close()
    assert notifier.watchdog() is False  # peer gone: reported, not raised
    notifier.close()


def test_notifier_reaches_a_real_notify_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(path)})
    assert notifier.enabled and notifier.stopping()
    assert server.recv(64) == b"STOPPING=1"
    assert not Notifier.from_environment({}).enabled


def test_watchdog_interval_only_for_this_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert (
        watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 20.0
    )
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_watchdog_pings_only_while_every_part_makes_progress() -> None:
    live = Liveness(max_silence=10)
    gate = WatchdogGate(live, interval=5)
    live.expect("loop", 0)
    live.expect("pump", 0)
    assert gate.should_ping(0)
    assert not gate.should_ping(3)  # too soon
    live.beat("loop", 14)
    assert not gate.should_ping(14)  # pump silent for 14 s: no ping
    assert live.stale(14) == ["pump"]
    live.beat("pump", 15)
    assert gate.should_ping(15)
