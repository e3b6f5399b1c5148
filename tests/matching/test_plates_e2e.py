"""A car on a video file through the real ``edge-agent run``: its plate becomes a plate.match.

The plate is enrolled with the CLI; the agent's camera reads the file, the frame
bus feeds the plate worker (PP-OCRv6, its own thread), readings are voted on per
track and matched, and the event reaches mosquitto.
"""

from __future__ import annotations

import pathlib
from typing import Any

import cv2
import pytest

from drivers.cli import main
from tests.matching.plate_frames import FORMAT, plate_frame
from tests.support.agent_harness import device_base
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.process import spawn_agent

FPS = 10


def write_car_passing(path: pathlib.Path, plate: str) -> None:
    """1 s of an empty street, then 7 s of a car with ``plate`` creeping across."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    assert writer.isOpened()
    empty = plate_frame(plate, 100, seed=0)
    empty[180:] = empty[470:471]  # no car: the road only
    for i in range(80):
        writer.write(empty if i < 10 else plate_frame(plate, 110, seed=i, x=180 + 2 * i))
    writer.release()


def plate_events(collector: Collector) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["type"] == "plate.match"]


@pytest.mark.slow
def test_a_listed_plate_passing_the_camera_is_reported(
    broker: Broker, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "car.avi"
    write_car_passing(video, "KX904TR")
    state = tmp_path / "state"
    args = ["--state-dir", str(state)]
    for purpose in ("plate_recognition", "cloud_events"):
        assert main(["consent", "grant", "--yes", purpose, *args]) == 0
    assert main(["enrol", "plate", "KX-904 TR", "--list", "deny", "--label", "van", *args]) == 0
    assert main(["enrol", "plate", "AB123CD", *args]) == 0
    capsys.readouterr()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = "off"\n'
        f'[camera]\nsource = "file"\nuri = "{video}"\nfps = {FPS}\n'
        f"[matching]\nplate_formats = ['{FORMAT}']\n"
    )
    base = device_base(state)
    sub = Collector(broker.host, broker.port, f"{base}/#")
    agent = spawn_agent(config, state)
    try:
        assert sub.wait_for(lambda c: plate_events(c), 60), (
            f"no plate.match: {[e['type'] for e in sub.events()]}"
        )
        (event,) = plate_events(sub)[:1]
        fields = event["f"]
        assert (fields["list"], fields["camera"], fields["distance"]) == ("deny", "cam0", 0.0)
        assert fields["score"] == 1.0
    finally:
        agent.terminate()
        _out, err = agent.communicate(timeout=30)
        sub.close()
    assert b"Traceback" not in err, err.decode()[-2000:]
