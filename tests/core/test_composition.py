"""`edge-agent run` with every feature wired, against a real broker."""

from __future__ import annotations

import io
import signal
import zipfile
from pathlib import Path

from tests.support.agent_harness import device_base
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import spawn_agent


def test_full_agent_wires_every_feature_and_answers_rights_commands(
    broker: Broker, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\n[runtime]\ntick_seconds = 0.05\n"
        "[camera]\nfps = 4.0\n[discovery]\ndiscoverable = false\n"
    )
    state = tmp_path / "state"
    owner = Signer()
    owner.enrol_in_state(state)
    DEVICE = device_base(state)
    sub = Collector(broker.host, broker.port, f"{DEVICE}/#")
    proc = spawn_agent(config, state, text=True)
    try:
        assert sub.wait_for(lambda c: any(m.payload == b"online" for m in c.messages), 30)
        status = sub.request(f"{DEVICE}/cmd/status", {})["result"]
        for service in ("camera", "motion", "faces", "plates", "upgrade", "retention"):
            assert service in status["services"]
        for command in (
            "consent.set",
            "data.export",
            "data.erase",
            "logs.upload",
            "face.list",
            "plate.observe",
            "upgrade.status",
        ):
            assert command in status["commands"]
        plates = {"purpose": "plate_recognition", "granted": True}
        sub.request(f"{DEVICE}/cmd/consent.set", plates, signer=owner)
        refused = sub.request(f"{DEVICE}/cmd/logs.upload", {}, signer=owner, sealed=True)
        assert refused["ok"] is False and refused["error"]["code"] == "consent_required"
        logs = {"purpose": "troubleshooting_logs", "granted": True}
        sub.request(f"{DEVICE}/cmd/consent.set", logs, signer=owner)
        bundle = sub.request(f"{DEVICE}/cmd/logs.upload", {"tail": 50}, signer=owner, sealed=True)
        assert bundle["ok"], bundle
        text = str(bundle["result"])
        assert "agent 0.1.0 started as device" in text
        assert "EA-SAMPLE-0001" not in text  # the serial number is redacted
        # The embedded sample camera: people come and go, motion events follow consent.
        events = {"purpose": "cloud_events", "granted": True}
        sub.request(f"{DEVICE}/cmd/consent.set", events, signer=owner)
        assert sub.wait_for(lambda c: any(e["type"] == "motion" for e in c.events()), 30)
        export = sub.request(f"{DEVICE}/cmd/data.export", {}, signer=owner, sealed=True)
        assert export["ok"], export
        archive = zipfile.ZipFile(io.BytesIO(export["result"]["data"]))
        # The consent history is in it.
        assert "plate_recognition" in archive.read("export.json").decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert (state / "audit.sqlite").exists() or any(state.glob("audit*"))
