"""A real agent bound to a fresh owner key, on the test's real mosquitto."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.auth.principals import PrincipalStore
from agent.database import Database
from drivers.auth.client import CommandClient, generate_key, public_key_raw
from tests.support.agent_harness import RunningAgent, make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.process import REPO


def bind_owner(state: Path, key: ed25519.Ed25519PrivateKey) -> str:
    """Bind ``key`` as owner in a state directory no agent has open; the new device id."""
    state.mkdir(parents=True, exist_ok=True)
    db = Database.in_state_dir(state)
    try:
        return PrincipalStore(db).bind_owner(
            public_key_raw(key), "test owner", time.time(), source="test"
        )
    finally:
        db.close()


def wait_online(broker: Broker, base: str) -> None:
    # "online" is published after the command subscription, so commands sent now are heard.
    watcher = Collector(broker.host, broker.port, f"{base}/status")
    try:
        assert watcher.wait_for(
            lambda c: any(m.payload == b"online" for m in c.messages), 20
        ), "the agent never came online"
    finally:
        watcher.close()


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real ``edge-agent`` command line in a child process (as tests/support/process.py)."""
    return subprocess.run(
        [sys.executable, "-m", "drivers", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclasses.dataclass
class Device:
    broker: Broker
    state: Path
    device_id: str
    owner: ed25519.Ed25519PrivateKey
    running: RunningAgent

    @property
    def base(self) -> str:
        return f"edge/{self.device_id}"

    def client(
        self, key: ed25519.Ed25519PrivateKey | None = None, **options: Any
    ) -> CommandClient:
        options.setdefault("tls", None)  # the test broker is plaintext on 127.0.0.1
        return CommandClient(
            self.broker.host,
            self.broker.port,
            device_id=self.device_id,
            signing_key=key or self.owner,
            **options,
        )


@pytest.fixture
def device(broker: Broker, tmp_path: Path) -> Iterator[Device]:
    owner = generate_key()
    state = tmp_path / "state"
    device_id = bind_owner(state, owner)
    running = RunningAgent(make_config(state, broker.port))
    try:
        wait_online(broker, f"edge/{device_id}")
        yield Device(broker, state, device_id, owner, running)
    finally:
        running.stop()
