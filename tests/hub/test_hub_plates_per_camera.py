"""A hub's plate events name the camera that saw the plate.

Two cameras on the real RTSP server (rtsp-server-perl, one ffmpeg each), each
with a different listed car passing; the real ``edge-agent run`` reads both
through one plate worker.  Each ``plate.match`` must name the camera whose
stream carried that plate: the frame bus carries the camera's name with every
frame, and each camera votes on its own plate tracks.
"""

from __future__ import annotations

import pathlib
from typing import Any

import cv2
import pytest

from drivers.cli import main
from tests.hub.rtsp import RtspServer
from tests.matching.plate_frames import FORMAT, plate_frame
from tests.support.agent_harness import device_base
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.process import spawn_agent

FPS = 10
# Plate -> (label it is enrolled with, the camera whose stream shows it).
CARS = {"KX904TR": ("van", "back"), "AB123CD": ("taxi", "front")}


def write_car_passing(path: pathlib.Path, plate: str) -> None:
    """1 s of an empty street, then 5 s of a car with ``plate`` creeping across."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    assert writer.isOpened()
    empty = plate_frame(plate, 100, seed=0)
    empty[180:] = empty[470:471]  # no car: the road only
    for i in range(60):
        writer.write(empty if i < 10 else plate_frame(plate, 110, seed=i, x=180 + 2 * i))
    writer.release()


def plate_events(collector: Collector) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["type"] == "plate.match"]


def cameras_by_label(collector: Collector) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for event in plate_events(collector):
        seen.setdefault(event["f"].get("label", "?"), set()).add(event["f"]["camera"])
    return seen


@pytest.fixture
def rtsp(tmp_path: pathlib.Path) -> Any:
    server = RtspServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_each_plate_event_names_the_camera_that_saw_the_plate(
    broker: Broker, rtsp: RtspServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls: dict[str, str] = {}
    for plate, (_label, camera) in CARS.items():
        clip = tmp_path / f"{camera}.avi"
        write_car_passing(clip, plate)
        urls[camera] = rtsp.publish(clip, camera)
    state = tmp_path / "state"
    args = ["--state-dir", str(state)]
    for purpose in ("plate_recognition", "cloud_events"):
        assert main(["consent", "grant", "--yes", purpose, *args]) == 0
    for plate, (label, _camera) in CARS.items():
        assert main(["enrol", "plate", plate, "--list", "deny", "--label", label, *args]) == 0
    capsys.readouterr()
    sources = "".join(
        f'[[camera.sources]]\nname = "{camera}"\nurl = "{url}"\ntransport = "udp"\n'
        for camera, url in urls.items()
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = "off"\n'
        f"[matching]\nplate_formats = ['{FORMAT}']\n"
        f"[camera]\nfps = {FPS}\n{sources}"
    )
    sub = Collector(broker.host, broker.port, f"{device_base(state)}/#")
    agent = spawn_agent(config, state)
    try:
        assert sub.wait_for(lambda c: {"van", "taxi"} <= set(cameras_by_label(c)), 120), (
            f"plate events per label: {cameras_by_label(sub)}; "
            f"all: {[e['type'] for e in sub.events()][:40]}"
        )
        # Every event about a car names the one camera that showed it, never "cam0".
        assert cameras_by_label(sub) == {
            label: {camera} for label, camera in CARS.values()
        }, cameras_by_label(sub)
    finally:
        agent.terminate()
        _out, err = agent.communicate(timeout=30)
        sub.close()
    assert b"Traceback" not in err, err.decode()[-2000:]
