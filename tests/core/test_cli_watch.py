"""``edge-agent watch`` against a real agent and mosquitto, the run console's event lines,
and ``edge-agent samples faces``."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import subprocess
import sys
import time

import cbor2
import pytest

from agent.config import PayloadFormat
from agent.purposes import Purpose
from drivers.cli import main
from drivers.cli.cmd_watch import decode_payload, format_line
from tests.support.agent_harness import RunningAgent, make_config, motion, spine_agent
from tests.support.broker import Broker, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _watch(config: pathlib.Path, state: pathlib.Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "drivers", "watch", "--config", str(config),
         "--state-dir", str(state), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


@pytest.mark.parametrize("payload_format", ["cbor", "json"])
def test_watch_prints_each_message_decoded_one_per_line(
    broker: Broker, tmp_path: pathlib.Path, payload_format: str
) -> None:
    state = tmp_path / "state"
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\npayload_format = '{payload_format}'\n"
    )
    config = make_config(state, broker.port, payload_format=PayloadFormat(payload_format))
    running = RunningAgent(config)
    try:
        running.agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        watcher = _watch(config_file, state, "--json", "--count", "3", "--timeout", "30")
        try:
            k = 0
            while watcher.poll() is None and k < 300:
                running.agent.emit(motion(k))
                k += 1
                time.sleep(0.1)
            out, err = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
        assert watcher.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 3
        base = f"edge/{running.agent.topics.device}"
        status = [m for m in lines if m["topic"] == f"{base}/status"]
        assert status and status[0]["payload"] == "online" and status[0]["retained"] is True
        events = [m for m in lines if m["topic"] == f"{base}/events/motion"]
        assert events, lines
        for message in events:
            assert message["format"] == payload_format
            assert message["content_type"] == f"application/{payload_format}"
            assert message["payload"]["type"] == "motion"
            assert message["payload"]["purpose"] == "cloud_events"
            assert "secret_extra" not in message["payload"]["f"]
    finally:
        running.stop()


def test_watch_fails_in_one_line_when_no_broker_answers(tmp_path: pathlib.Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(f"[mqtt]\nport = {free_port()}\ntls = 'off'\n")
    watcher = _watch(config_file, tmp_path / "state", "--device-id", "d0")
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 1
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "cannot reach the broker at 127.0.0.1:" in err


def test_payloads_decode_by_content_type_or_first_byte() -> None:
    event = {"type": "motion", "f": {"area": 0.5}, "img": b"\xff\xd8" + bytes(100)}
    raw = cbor2.dumps(event)
    assert decode_payload(raw, None) == ("cbor", event)  # no content type: 0xa_ map
    assert decode_payload(raw, "application/cbor")[0] == "cbor"
    assert decode_payload(b'{"a": 1}', None) == ("json", {"a": 1})
    assert decode_payload(b'{"a": 1}', "application/json; charset=utf-8") == ("json", {"a": 1})
    assert decode_payload(b"ON", "text/plain") == ("text", "ON")
    assert decode_payload(b"online", None) == ("text", "online")
    assert decode_payload(b"\xff\xfe\xfd", None)[0] == "binary"
    assert decode_payload(b"{not json", "application/json")[0] == "binary"
    line = format_line("edge/d/events/motion", raw, None, False, as_json=False)
    assert line.startswith("edge/d/events/motion {") and "<102 bytes>" in line
    document = json.loads(format_line("t", raw, None, True, as_json=True))
    assert document["format"] == "cbor" and document["retained"] is True
    assert document["payload"]["img"].startswith("/9g")  # base64, as the JSON payload format
    assert format_line("t", b"", "text/plain", True, as_json=False) == "t (empty)"


def test_the_run_console_says_what_becomes_of_each_event(
    broker: Broker, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path / "state", broker.port)
    # On in make run (config/dev.toml); off by default, so a device's log is not one line per frame.
    config = dataclasses.replace(config, logs=dataclasses.replace(config.logs, event_lines=True))
    agent = spine_agent(config)
    caplog.set_level(logging.INFO, logger="edge_agent.events")
    try:
        agent.start()
        agent.emit(motion(1))
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        agent.emit(motion(2))
        agent.step()
        # Consent withdrawn between the minimiser and the outbox: held at the outbox door.
        agent.emit(motion(3))
        agent.ledger.withdraw(Purpose.CLOUD_EVENTS, time.time())
        agent.step()
    finally:
        agent.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_agent.events"]
    assert lines[:4] == [
        "device.status recorded (device_operation)",
        "motion held: cloud_events not consented",
        "motion recorded (cloud_events)",
        "motion recorded (cloud_events)",
    ], lines
    assert any("held at the outbox door: consent withdrawn" in line for line in lines), lines


def test_sample_faces_are_photos_the_matcher_enrols_and_recognises(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    assert main(["samples", "faces", str(photos), "--people", "2,5", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert sorted(written) == ["person2", "person5"]
    assert all(len(paths) == 4 for paths in written.values())
    config = tmp_path / "dev.toml"
    config.write_text("[matching]\nface_detector = 'haar'\nface_embedder = 'lbp'\n")
    options = ["--config", str(config), "--state-dir", str(tmp_path / "state")]
    assert main(["consent", "grant", "face_recognition", "--yes", *options]) == 0
    assert main(["enrol", "face", "two", *written["person2"][:3], *options]) == 0
    assert main(["enrol", "face", "five", *written["person5"][:3], *options]) == 0
    capsys.readouterr()
    assert main(["match", written["person5"][3], *options]) == 0
    assert capsys.readouterr().out.startswith("five ")
    assert main(["samples", "faces", str(photos), "--people", "9"]) == 2


def test_a_device_logs_no_line_per_event_by_default(
    broker: Broker, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = spine_agent(make_config(tmp_path / "state", broker.port))
    caplog.set_level(logging.INFO, logger="edge_agent.events")
    try:
        agent.start()
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        agent.emit(motion(1))
        agent.step()
        assert agent.outbox.stats()["last_seq"] >= 1  # the event was recorded
    finally:
        agent.shutdown()
    assert not [r for r in caplog.records if r.name == "edge_agent.events"]
