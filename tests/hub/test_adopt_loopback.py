"""Adoption through the whole camera feature on loopback (where network namespaces are not).

The camera is the agent's own discovery service (WS-Discovery responder and
ONVIF device service, its user from a file) with GetStreamUri pointing at a
stream of the real RTSP server; the hub is the composition root with
``adopt_discovered``, its search aimed at the camera's responder by unicast
(loopback does not carry the multicast group reliably).  Alongside, one
``[[camera.sources]]`` camera on the same host shows that a configured
host is not adopted a second time, and that ``camera.list`` lists both kinds.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import CameraSettings, DeviceSettings, HubCamera
from agent.discovery.settings import DiscoverySettings
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.purposes import Purpose
from drivers.camera import build_camera
from drivers.camera.adopt import AdoptionService
from drivers.discovery.onvif_store import OnvifCredentialStore
from drivers.discovery.service import build_service
from drivers.runtime import Agent
from tests.discovery.conftest import Ticker, loopback_config
from tests.hub.rtsp import RtspServer, write_clip
from tests.support.agent_harness import device_base, make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.owner import Signer, sealing_key_in_state

USER, PASSWORD = "hubuser", "Loop-Onvif-Pass-2291"


@pytest.fixture
def rtsp(tmp_path: Path) -> Any:
    server = RtspServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def motion_phases(collector: Collector, camera: str) -> list[str]:
    return [
        e["f"]["phase"]
        for e in collector.events()
        if e["type"] == "motion" and e["f"]["camera"] == camera
    ]


@pytest.mark.slow
def test_a_discovered_camera_waits_for_credentials_then_streams_under_its_scope_name(
    broker: Broker, rtsp: RtspServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_clip(tmp_path / "porch.avi", shade=210)
    stream = rtsp.publish(tmp_path / "porch.avi", "porch")
    users = tmp_path / "onvif-user"
    users.write_text(f"{USER}:{PASSWORD}\n")
    users.chmod(0o600)
    camera_config = dataclasses.replace(
        loopback_config(tmp_path / "camera", onvif_stream_uri=stream),
        device=DeviceSettings(serial_number="EA-PORCH-1", model="Porch Cam"),
    )
    layout = StateLayout(camera_config.state_dir)
    layout.root.mkdir()
    camera = build_service(
        camera_config,
        store=OnvifCredentialStore(layout, DataKeys(layout), users),
        bind_address="127.0.0.1",
        join_group=False,
        announce_to=("127.0.0.1", 9),
    )

    state_dir = tmp_path / "hub"
    signer = Signer()
    signer.enrol_in_state(state_dir)
    base = device_base(state_dir)
    config = dataclasses.replace(
        make_config(state_dir, broker.port),
        camera=CameraSettings(
            fps=5,
            motion_update_seconds=0.5,
            # Another host (nothing answers there): its name is taken, its host is not ours.
            sources=(HubCamera(name="porch-cam", url="rtsp://127.0.0.2:9/elsewhere"),),
            adopt_discovered=True,
            adopt_probe_seconds=1,
            adopt_transport="udp",
        ),
        discovery=DiscoverySettings(
            discoverable=False, onvif_enabled=False, default_timeout_seconds=0.5
        ),
    )
    agent = Agent.build(config, builders=(build_camera,), environ={})
    adoption = next(s for s in agent.services if isinstance(s, AdoptionService))
    sub = Collector(broker.host, broker.port, f"{base}/#")
    with _running(camera):
        # Aim the search at the camera (unicast) before the agent starts it.
        assert camera.responder is not None
        adoption.worker.destination = camera.responder.address
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        try:
            _exercise(sub, base, signer, state_dir, adoption, agent)
        finally:
            agent.request_stop()
            thread.join(20)
            sub.close()
    assert not thread.is_alive()
    assert PASSWORD not in caplog.text
    assert PASSWORD.encode() not in layout_bytes(StateLayout(state_dir))


def layout_bytes(layout: StateLayout) -> bytes:
    return layout.adopted_cameras.read_bytes() + layout.camera_credentials.read_bytes()


class _running:
    """The camera's discovery service, started and ticked from a thread."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.ticker = Ticker(service)

    def __enter__(self) -> Any:
        self.service.start()
        return self.ticker.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.ticker.__exit__(*exc)
        self.service.stop()


def _exercise(
    sub: Collector, base: str, signer: Signer, state_dir: Path, adoption: Any, agent: Agent
) -> None:
    assert sub.wait_for(lambda c: any(e["type"] == "device.status" for e in c.events()), 20)

    def listed() -> dict[str, Any]:
        reply = sub.request(f"{base}/cmd/camera.list", {}, signer=signer)
        assert reply["ok"] is True, reply
        return {c["name"]: c for c in reply["result"]["cameras"]}

    # The camera names itself "Porch Cam"; "porch-cam" is a configured camera's name.
    assert sub.wait_for(lambda c: adoption.worker.searches >= 2 and len(listed()) == 2, 20)
    cameras = listed()
    assert cameras["porch-cam"]["source"] == "configured"
    (name,) = set(cameras) - {"porch-cam"}
    assert name.startswith("porch-cam-") and cameras[name]["source"] == "discovered", cameras
    assert cameras[name]["status"] == "pending credentials" and cameras[name]["frames"] == 0
    agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())

    sealing_key = sealing_key_in_state(state_dir)
    refused = sub.request(
        f"{base}/cmd/camera.set_credentials",
        {"camera": "garage", "username": USER},
        signer=signer,
        secrets={"password": PASSWORD},
        sealing_key=sealing_key,
    )
    assert refused["ok"] is False, refused
    reply = sub.request(
        f"{base}/cmd/camera.set_credentials",
        {"camera": name, "username": USER},
        signer=signer,
        secrets={"password": PASSWORD},
        sealing_key=sealing_key,
    )
    assert reply["ok"] is True, reply
    assert sub.wait_for(lambda c: "new" in motion_phases(c, name), 60), listed()
    assert listed()[name]["status"] == "streaming"
