"""NVR hub end to end: two cameras on a real RTSP server, one of them found through ONVIF.

The RTSP server is Debian's rtsp-server-perl fed by one ffmpeg per camera; the
ONVIF camera is the agent's own ONVIF service (``onvif_stream_uri`` points at
the second stream), asked with the user the owner gave the hub over a signed
``camera.set_credentials``.  Each camera's motion comes out under its own name
and retained state topic; both feed the one frame bus.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import CameraSettings, HubCamera
from agent.discovery.settings import DiscoverySettings
from agent.purposes import Purpose
from drivers.camera import build_camera
from drivers.camera.hub import HubService
from drivers.discovery.feature import build_discovery
from drivers.runtime import Agent
from tests.hub.rtsp import RtspServer, free_port, write_clip
from tests.support.agent_harness import device_base, make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.owner import Signer, sealing_key_in_state

ONVIF_USER = "hubuser"
ONVIF_PASSWORD = "Onvif-Pass-7731"
FRONT_PASSWORD = "Front-Pass-5512"


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[RtspServer]:
    server = RtspServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def motion_cameras(collector: Collector) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in collector.events():
        if event["type"] == "motion":
            found.setdefault(event["f"]["camera"], []).append(event["f"]["phase"])
    return found


def payloads(collector: Collector, topic: str) -> list[bytes]:
    return [bytes(m.payload) for m in list(collector.messages) if m.topic == topic]


def hub_of(agent: Agent) -> HubService:
    return next(s for s in agent.services if isinstance(s, HubService))


def test_two_cameras_one_through_onvif_feed_one_bus_with_motion_per_camera(
    broker: Broker, rtsp: RtspServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    write_clip(tmp_path / "front.avi", shade=220)
    write_clip(tmp_path / "back.avi", shade=160)
    front_url = rtsp.publish(tmp_path / "front.avi", "front")
    back_url = rtsp.publish(tmp_path / "back.avi", "back")
    onvif_port = free_port()
    user_file = tmp_path / "onvif-user"
    user_file.write_text(f"{ONVIF_USER}:{ONVIF_PASSWORD}\n")
    user_file.chmod(0o600)

    state_dir = tmp_path / "state"
    signer = Signer()
    signer.enrol_in_state(state_dir)
    base = device_base(state_dir)
    config = make_config(state_dir, broker.port)
    config = dataclasses.replace(
        config,
        camera=CameraSettings(
            fps=5,
            motion_update_seconds=0.5,
            sources=(
                HubCamera(name="front", url=front_url, transport="udp"),
                HubCamera(
                    name="back",
                    onvif=f"http://127.0.0.1:{onvif_port}/onvif/device_service",
                    transport="udp",
                ),
            ),
        ),
        discovery=DiscoverySettings(
            discoverable=False,
            interface_address="127.0.0.1",
            http_port=onvif_port,
            onvif_stream_uri=back_url,
            onvif_credentials_file=str(user_file),
        ),
    )
    sub = Collector(broker.host, broker.port, f"{base}/#")
    agent = Agent.build(config, builders=(build_camera, build_discovery), environ={})
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        hub = hub_of(agent)
        # Connected (its start status is out) before the owner's commands go.
        assert sub.wait_for(lambda c: any(e["type"] == "device.status" for e in c.events()), 20)
        # Unknown cameras are refused; the owner's users for both are accepted.
        # The passwords travel sealed to the device's key (agent.sealedparams).
        sealing_key = sealing_key_in_state(state_dir)
        refused = sub.request(
            f"{base}/cmd/camera.set_credentials",
            {"camera": "garage", "username": "x"},
            signer=signer,
            secrets={"password": "y"},
            sealing_key=sealing_key,
        )
        assert refused["ok"] is False, refused
        for camera, user, password in (
            ("back", ONVIF_USER, ONVIF_PASSWORD),
            ("front", "viewer", FRONT_PASSWORD),
        ):
            reply: Any = sub.request(
                f"{base}/cmd/camera.set_credentials",
                {"camera": camera, "username": user},
                signer=signer,
                secrets={"password": password},
                sealing_key=sealing_key,
            )
            assert reply["ok"] is True, reply
            assert password not in str(reply)
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())

        assert sub.wait_for(
            lambda c: {"front", "back"} <= set(motion_cameras(c)), 60
        ), f"motion per camera: {motion_cameras(sub)}; hub {hub.scheduler.stats()}"
        for camera in ("front", "back"):
            assert motion_cameras(sub)[camera][0] == "new"
            topic = f"{base}/camera/{camera}/motion"
            assert sub.wait_for(lambda c, t=topic: b"ON" in payloads(c, t), 15), camera
        # Both cameras reached the shared frame bus, in turn.
        assert all(count > 0 for count in hub.published.values()), hub.published
        assert all(c.frames > 0 for c in hub.captures)
        stats = hub.scheduler.stats()
        # Every captured frame was handed on or dropped, but for the one waiting now.
        for s in stats.values():
            assert 0 <= s["captured"] - s["scheduled"] - s["dropped"] <= 1, stats
    finally:
        agent.request_stop()
        thread.join(20)
        sub.close()
    assert not thread.is_alive()
    sealed = (state_dir / "camera-credentials.sealed").read_bytes()
    for secret in (ONVIF_PASSWORD, FRONT_PASSWORD):
        assert secret.encode() not in sealed
        assert secret not in caplog.text
