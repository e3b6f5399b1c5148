"""`edge-agent run` as systemd runs it: notify socket, watchdog, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from agent.consent import ConsentLedger
from agent.database import Database
from agent.outbox import Outbox
from agent.purposes import Purpose
from tests.support.broker import free_port
from tests.support.process import spawn_agent


def test_ready_watchdog_and_clean_sigterm_with_outbox_intact(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ConsentLedger.open(state).grant(Purpose.USAGE_STATISTICS, time.time())
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify"
    notify.bind(str(notify_path))
    notify.settimeout(20)
    config = tmp_path / "agent.toml"
    # No broker listens on this port: the start-up event must stay queued.
    config.write_text(
        f"[mqtt]\nport = {free_port()}\ntls = 'off'\n[runtime]\ntick_seconds = 0.05\n"
    )
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="1000000")
    env.pop("WATCHDOG_PID", None)
    proc = spawn_agent(config, state, env=env)
    try:
        messages = []
        while b"WATCHDOG=1" not in messages:
            messages.append(notify.recv(256))
        assert messages[0].startswith(b"READY=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        tail = []
        notify.settimeout(1)
        try:
            while True:
                tail.append(notify.recv(256))
        except TimeoutError:
            pass
        assert b"STOPPING=1" in tail
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in stderr
    outbox = Outbox(Database.in_state_dir(state), max_messages=10, default_expiry_seconds=60)
    assert len(outbox) >= 1  # the start-up status message is still queued for later
