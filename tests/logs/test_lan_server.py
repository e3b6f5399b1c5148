"""The LAN log endpoint as the running agent serves it: real HTTP on loopback."""

from __future__ import annotations

import http.client
import pathlib
import signal
import subprocess
import time

from drivers.provisioning.store import load_or_create_binding
from tests.support.broker import free_port
from tests.support.process import spawn_agent


def get(port: int, token: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request("GET", "/api/v1/logs/bundle?tail=20", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_agent_serves_redacted_bundles_to_token_holders_only(tmp_path: pathlib.Path) -> None:
    state, port = tmp_path / "state", free_port()
    code = load_or_create_binding(state, "EA-SAMPLE-0001").verification_code
    token = tmp_path / "technician.token"
    token.write_text("tech-token-4242\n")
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {free_port()}\n[discovery]\ndiscoverable = false\n"
        f"[logs]\nlan_port = {port}\ntechnician_token_file = '{token}'\n"
    )
    proc = spawn_agent(config, state, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = get(port, "tech-token-4242")
                break
            except OSError:
                assert time.monotonic() < deadline, "LAN log endpoint never came up"
                time.sleep(0.2)
        assert status == 200
        assert b"started for device" in body and b"EA-SAMPLE-0001" not in body
        # The verification code is never a bearer secret on the LAN.
        assert get(port, code)[0] == 401
        assert get(port, None)[0] == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
