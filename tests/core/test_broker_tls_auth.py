"""TLS and username/password against a mosquitto that demands both."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

from agent.config import TlsMode
from agent.purposes import Purpose
from tests.support.agent_harness import RunningAgent, make_config, motion
from tests.support.broker import Broker
from tests.support.pki import make_pki


def test_agent_publishes_over_tls_with_username_and_password(tmp_path: Path) -> None:
    ca, cert, key = make_pki(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "camera", "s3cret-pw"], check=True)
    broker = Broker(
        tmp_path,
        listener_options=(
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
            f"allow_anonymous false\npassword_file {passwd}\n"
        ),
    )
    broker.start()
    secret_file = tmp_path / "mqtt.secret"
    secret_file.write_text("s3cret-pw\n")
    base = make_config(tmp_path / "state", broker.port)
    config = dataclasses.replace(
        base,
        mqtt=dataclasses.replace(
            base.mqtt, tls=TlsMode.ON, ca_file=ca, username="camera", password_file=secret_file
        ),
    )
    running = RunningAgent(config)
    try:
        agent = running.agent
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        agent.emit(motion(1))
        deadline = time.monotonic() + 15
        while agent.outbox.stats()["acked"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.link is not None and agent.link.connected
        assert agent.outbox.stats()["acked"] >= 2  # start-up status + the motion event
    finally:
        running.stop()
        broker.stop()


def test_wrong_password_keeps_everything_queued(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "camera", "right"], check=True)
    broker = Broker(tmp_path, listener_options=f"allow_anonymous false\npassword_file {passwd}\n")
    broker.start()
    secret_file = tmp_path / "mqtt.secret"
    secret_file.write_text("wrong")
    base = make_config(tmp_path / "state", broker.port)
    config = dataclasses.replace(
        base, mqtt=dataclasses.replace(base.mqtt, username="camera", password_file=secret_file)
    )
    running = RunningAgent(config)
    try:
        agent = running.agent
        assert agent.link is not None
        # The broker's refusal is the sentinel: once it has arrived, nothing can have gone out.
        deadline = time.monotonic() + 15
        while "refused" not in agent.link.last_error and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "refused" in agent.link.last_error
        assert not agent.link.connected and agent.link.connects == 0
        # The refusal can beat the first pass's commit of the start-up status event
        # (the connect starts earlier in that pass): wait for the commit, not a time.
        while len(agent.outbox) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(agent.outbox) == 1  # the start-up status event, still queued
        assert agent.outbox.stats()["acked"] == 0
    finally:
        running.stop()
        broker.stop()
