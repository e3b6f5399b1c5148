"""``upgrade.apply`` with ``force`` through the real ``edge-agent run``, signed by the owner.

The device already rolled back sequence 5 (its trial failed); the agent must
refuse to install it again on a plain apply and install it on a forced one.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import config as agent_config
from agent.upgrade.builder import public_key_pem
from agent.upgrade.machine import State
from drivers.upgrade.service import build_installer
from tests.support.agent_harness import device_base
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import spawn_agent
from tests.upgrade.conftest import HARDWARE_CLASS, VENDOR_DOMAIN, random_image
from tests.upgrade.imageserver import ImageServer


def _fail_sequence_5(config: Path, state: Path, envelope: bytes) -> None:
    cfg = agent_config.load(config, state_dir=state)
    cfg = dataclasses.replace(cfg, upgrade=dataclasses.replace(cfg.upgrade, health_grace_seconds=0))
    installer, machine = build_installer(cfg)
    assert machine is not None
    installer.install(envelope)
    machine.boot()
    installer.resume()
    assert installer.health(False)[0].state == State.ROLLED_BACK
    machine.boot()


def test_owner_forces_a_failed_release_over_mqtt(
    broker: Broker,
    tmp_path: Path,
    image_server: ImageServer,
    vendor_key: ed25519.Ed25519PrivateKey,
    sign: Callable[..., bytes],
) -> None:
    pub = tmp_path / "vendor.pub.pem"
    pub.write_bytes(public_key_pem(vendor_key))
    image = random_image(30_000)
    image_server.files["/fw.img"] = image
    image_server.files["/latest.suit"] = sign(image, 5, image_server.url("/fw.img"))
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\n[runtime]\ntick_seconds = 0.05\n"
        "[camera]\nenabled = false\n[discovery]\ndiscoverable = false\n"
        f'[device]\nhardware_class = "{HARDWARE_CLASS}"\n'
        f'[upgrade]\ntrusted_keys = ["{pub}"]\nvendor_domain = "{VENDOR_DOMAIN}"\n'
        f'manifest_url = "{image_server.url("/latest.suit")}"\n'
    )
    state = tmp_path / "state"
    _fail_sequence_5(config, state, image_server.files["/latest.suit"])
    owner = Signer()
    owner.enrol_in_state(state)
    base = device_base(state)
    sub = Collector(broker.host, broker.port, f"{base}/#")
    proc = spawn_agent(config, state, text=True)
    try:
        assert sub.wait_for(lambda c: any(m.payload == b"online" for m in c.messages), 30)
        refused = sub.request(f"{base}/cmd/upgrade.apply", {}, signer=owner)
        assert refused["ok"] is False, refused
        assert "sequence 5 failed on this device before" in json.dumps(refused["error"])
        started = sub.request(f"{base}/cmd/upgrade.apply", {"force": True}, signer=owner)
        assert started["ok"] and started["result"] == {"started": True}, started
        deadline = time.monotonic() + 20
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            status = sub.request(f"{base}/cmd/upgrade.status", {}, signer=owner)["result"]
            if status["state"] == "awaiting-reboot" and not status["busy"]:
                break
            time.sleep(0.1)
        assert (status["state"], status["sequence"], status["next_slot"]) == (
            "awaiting-reboot",
            5,
            "b",
        ), status
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr, stderr[-3000:]
