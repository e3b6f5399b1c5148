"""The LAN log endpoint as the running agent serves it: real HTTP on loopback."""

from __future__ import annotations

import http.client
import pathlib
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.audit import AuditLog
from drivers.cli import main
from drivers.provisioning.store import load_or_create_binding
from tests.support.broker import free_port
from tests.support.process import spawn_agent

TOKEN = "tech-token-4242"


def get(port: int, token: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request("GET", "/api/v1/logs/bundle?tail=20", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def consent(action: str, state: pathlib.Path) -> None:
    yes = ["--yes"] if action == "grant" else []
    assert main(["consent", action, "troubleshooting_logs", *yes, "--state-dir", str(state)]) == 0


class LanAgent:
    """``edge-agent run`` with the LAN log endpoint on a free loopback port."""

    def __init__(self, tmp_path: pathlib.Path, logs_options: str = "") -> None:
        self.state, self.port = tmp_path / "state", free_port()
        token = tmp_path / "technician.token"
        token.write_text(f"{TOKEN}\n")
        self.config = tmp_path / "agent.toml"
        self.config.write_text(
            f"[mqtt]\nport = {free_port()}\ntls = 'off'\n[discovery]\ndiscoverable = false\n"
            f"[logs]\nlan_port = {self.port}\ntechnician_token_file = '{token}'\n"
            + logs_options
        )
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.proc = spawn_agent(
            self.config, self.state, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                # No token: answered without touching the limiter or the consent state.
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.communicate()[1]
                assert time.monotonic() < deadline, "LAN log endpoint never came up"
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        # Drain stderr while waiting: an undrained pipe that fills blocks the agent's
        # own logging and with it the shutdown.
        self.proc.communicate(timeout=30)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def lan_agent(tmp_path: pathlib.Path) -> Iterator[LanAgent]:
    agent = LanAgent(tmp_path)
    try:
        yield agent
    finally:
        agent.kill()


def test_agent_serves_redacted_bundles_to_token_holders_only(lan_agent: LanAgent) -> None:
    code = load_or_create_binding(lan_agent.state, "EA-SAMPLE-0001").verification_code
    consent("grant", lan_agent.state)
    lan_agent.start()
    # The endpoint can answer before the start-up line reaches the log store: the
    # line is the sentinel, asked for again until it is there.
    deadline = time.monotonic() + 20
    status, body = get(lan_agent.port, TOKEN)
    while status == 200 and b" started " not in body and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = get(lan_agent.port, TOKEN)
    assert status == 200
    assert b" started " in body and b"EA-SAMPLE-0001" not in body
    # The verification code is never a bearer secret on the LAN.
    assert get(lan_agent.port, code)[0] == 401
    assert get(lan_agent.port, None)[0] == 401
    assert lan_agent.stop() == 0


def test_withdrawn_consent_closes_the_lan_endpoint_at_once(lan_agent: LanAgent) -> None:
    consent("grant", lan_agent.state)
    lan_agent.start()
    assert get(lan_agent.port, TOKEN)[0] == 200
    # Withdrawn by the CLI, another process: the very next request is refused.
    consent("withdraw", lan_agent.state)
    status, body = get(lan_agent.port, TOKEN)
    assert status == 403
    assert b"EA-CONS-001" in body and b"troubleshooting_logs" in body
    assert b" started " not in body
    assert get(lan_agent.port, "not-the-token")[0] == 401  # authentication still comes first
    consent("grant", lan_agent.state)
    assert get(lan_agent.port, TOKEN)[0] == 200
    assert lan_agent.stop() == 0
    audit = AuditLog.in_state_dir(lan_agent.state)
    try:
        refused = [e for e in audit.entries() if e.kind == "logs.pull.refused"]
        pulled = [e for e in audit.entries() if e.kind == "logs.pull"]
    finally:
        audit.close()
    assert len(refused) == 1 and len(pulled) == 2
    assert refused[0].detail["channel"] == "lan"
    assert refused[0].detail["reason"] == "consent"
    assert refused[0].detail["purpose"] == "troubleshooting_logs"


def test_never_granted_consent_serves_nothing(lan_agent: LanAgent) -> None:
    lan_agent.start()
    status, body = get(lan_agent.port, TOKEN)
    assert status == 403 and b"EA-CONS-001" in body
    assert lan_agent.stop() == 0


def test_a_lockout_survives_a_killed_agent(tmp_path: pathlib.Path) -> None:
    agent = LanAgent(tmp_path, "max_failed_auth = 2\nauth_lockout_seconds = 600.0\n")
    consent("grant", agent.state)
    try:
        agent.start()
        assert get(agent.port, "guess-1")[0] == 401
        assert get(agent.port, "guess-2")[0] == 401
        assert get(agent.port, TOKEN)[0] == 429  # locked out: even the right token waits
        agent.stop(signal.SIGKILL)  # no shutdown path: what is on disk is all there is
        agent.start()
        assert get(agent.port, TOKEN)[0] == 429
        assert agent.stop() == 0
    finally:
        agent.kill()


def test_failures_short_of_a_lockout_survive_a_restart(tmp_path: pathlib.Path) -> None:
    agent = LanAgent(tmp_path, "max_failed_auth = 2\nauth_lockout_seconds = 600.0\n")
    consent("grant", agent.state)
    try:
        agent.start()
        assert get(agent.port, "guess-1")[0] == 401
        agent.stop(signal.SIGKILL)
        agent.start()
        assert get(agent.port, "guess-2")[0] == 401  # the second guess of two, not the first
        assert get(agent.port, TOKEN)[0] == 429
        assert agent.stop() == 0
    finally:
        agent.kill()
