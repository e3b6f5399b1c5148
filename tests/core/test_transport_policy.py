"""MQTT transport policy: TLS by default, no plaintext off the host unless the owner says so."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent import config as cfg
from agent.config import TlsMode, is_loopback_host
from agent.errors import ConfigError
from agent.matching.settings import FaceDetectorKind, FaceEmbedderKind
from tests.support.agent_harness import RunningAgent, make_config
from tests.support.broker import Broker, free_port
from tests.support.mqtt import Collector
from tests.support.process import spawn_agent

REPO = Path(__file__).resolve().parents[2]
REMOTE_PLAINTEXT = "[mqtt]\nhost = 'broker.example.com'\ntls = 'off'\nusername = 'cam'\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drivers", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.10.20.30", True),
        ("::1", True),
        ("[::1]", False),  # a URL spelling, not an address paho can connect to
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LocalHost", True),
        ("10.0.0.5", False),
        ("0.0.0.0", False),
        ("::", False),
        ("broker.example.com", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),  # a name, however it looks: never resolved, so remote
        ("", False),
    ],
)
def test_loopback_is_decided_by_literal_address_only(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_tls_is_on_by_default_and_the_shipped_file_says_so() -> None:
    defaults = cfg.AgentConfig().mqtt
    assert defaults.tls is TlsMode.ON and defaults.port == 8883
    assert defaults.allow_plaintext is False
    assert cfg.load_file(REPO / "config" / "agent.toml").mqtt == defaults


def test_dev_config_is_the_defaults_with_a_local_plaintext_broker() -> None:
    """The defaults but a local plaintext broker, a line per event, and the sample
    camera's drawn faces matched with Haar + LBP (dlib's HOG is for real faces)."""
    dev = cfg.load_file(REPO / "config" / "dev.toml")
    assert (dev.mqtt.host, dev.mqtt.port, dev.mqtt.tls) == ("127.0.0.1", 1883, TlsMode.OFF)
    assert dev.mqtt.plaintext_warning is None
    defaults = cfg.AgentConfig()
    plain_default = dataclasses.replace(
        defaults,
        mqtt=dataclasses.replace(defaults.mqtt, port=1883, tls=TlsMode.OFF),
        logs=dataclasses.replace(defaults.logs, event_lines=True),
        matching=dataclasses.replace(
            defaults.matching,
            face_detector=FaceDetectorKind.HAAR,
            face_embedder=FaceEmbedderKind.LBP,
        ),
    )
    assert dev == plain_default
    makefile = (REPO / "Makefile").read_text()
    assert "$(or $(CONFIG),config/dev.toml)" in makefile


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (REMOTE_PLAINTEXT, "mqtt.tls"),
        ("[mqtt]\nhost = '192.0.2.7'\ntls = 'off'\n", "mqtt.tls"),
        ("[mqtt]\nhost = '127.0.0.1'\ntls = 'off'\ncert_file = '/c.pem'\n", "mqtt.cert_file"),
        ("[mqtt]\nkey_file = '/k.pem'\n", "mqtt.key_file"),
    ],
)
def test_refused_transport_configurations(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse(text)
    assert info.value.path == path


def test_accepted_transport_configurations() -> None:
    loopback = cfg.parse("[mqtt]\nhost = '::1'\ntls = 'off'\n").mqtt
    assert loopback.plaintext_warning is None
    accepted = cfg.parse(REMOTE_PLAINTEXT + "allow_plaintext = true\n").mqtt
    assert accepted.plaintext_warning is not None
    assert "broker.example.com" in accepted.plaintext_warning
    assert cfg.parse("[mqtt]\nenabled = false\nhost = 'x.example'\ntls = 'off'\n").mqtt
    mtls = cfg.parse("[mqtt]\nhost = 'b.example'\ncert_file = '/c.pem'\nkey_file = '/k.pem'\n")
    assert mtls.mqtt.tls is TlsMode.ON and mtls.mqtt.plaintext_warning is None


def test_config_check_refuses_remote_plaintext_in_one_line(tmp_path: Path) -> None:
    password = tmp_path / "mqtt.secret"
    password.write_text("hunter2\n")
    config = tmp_path / "agent.toml"
    config.write_text(REMOTE_PLAINTEXT + f"password_file = '{password}'\n")
    checked = cli("config", "check", str(config))
    assert checked.returncode == 2
    assert "Traceback" not in checked.stderr
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == 1 and "mqtt.tls" in lines[0] and "broker.example.com" in lines[0]
    # ... and so does the agent at start, before it opens anything.
    started = cli("run", "--config", str(config), "--state-dir", str(tmp_path / "state"))
    assert started.returncode == 2
    assert "Traceback" not in started.stderr
    assert started.stderr.strip().splitlines() == lines
    assert not (tmp_path / "state").exists()


def test_config_check_accepts_plaintext_the_owner_allowed_with_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(REMOTE_PLAINTEXT + "allow_plaintext = true\n")
    checked = cli("config", "check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "warning" in checked.stderr and "not encrypted" in checked.stderr


# 0.0.0.0 is not a loopback literal, so the policy treats it as remote; Linux still
# delivers a connection to it on this host, so the test sends nothing off the machine.
NON_LOOPBACK_LOCAL = "0.0.0.0"


def test_allowed_plaintext_puts_a_warning_in_every_status_reply(
    broker: Broker, tmp_path: Path
) -> None:
    config = make_config(
        tmp_path / "state", broker.port, host=NON_LOOPBACK_LOCAL, allow_plaintext=True
    )
    running = RunningAgent(config)
    base = running.agent.topics.base
    sub = Collector(broker.host, broker.port, f"{base}/status")
    try:
        assert sub.wait_for(lambda c: bool(c.messages))  # connected in plaintext, as allowed
        for _ in range(2):
            reply = sub.request(f"{base}/cmd/status", {})
            assert reply["ok"], reply
            warnings = reply["result"]["warnings"]
            assert len(warnings) == 1 and "not encrypted" in warnings[0]
            assert NON_LOOPBACK_LOCAL in warnings[0]
    finally:
        running.stop()
        sub.close()


def test_loopback_plaintext_status_has_no_warning(broker: Broker, tmp_path: Path) -> None:
    running = RunningAgent(make_config(tmp_path / "state", broker.port))
    try:
        assert running.agent.status()["warnings"] == []
    finally:
        running.stop()


def test_allowed_plaintext_is_logged_at_start(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[mqtt]\nhost = '{NON_LOOPBACK_LOCAL}'\nport = {free_port()}\ntls = 'off'\n"
        "allow_plaintext = true\n[camera]\nenabled = false\n[discovery]\ndiscoverable = false\n"
    )
    proc = spawn_agent(config, tmp_path / "state", stdout=subprocess.DEVNULL, text=True)
    # A watchdog, not a sleep: if the banner never comes, the agent is killed and the
    # loop below sees end-of-file.
    killer = threading.Timer(60, proc.kill)
    killer.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "stop with Ctrl-C" in line:
                break
        warnings = [line for line in seen if "WARNING" in line and "not encrypted" in line]
        assert len(warnings) == 1, "".join(seen)
        assert "plaintext" in "".join(seen)  # the banner names the transport
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
