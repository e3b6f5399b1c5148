"""NVR hub capture: frames/s per camera and in total at 640x480, over real RTSP.

Debian's rtsp-server-perl serves 2 and then 4 cameras, each one ffmpeg looping
a generated 640x480 clip at 25 frames/s (H.264, UDP).  The hub
(:func:`drivers.camera.hub.build_hub`) captures them with ``fps = 25`` and its
main-loop hand-over runs every 50 ms (``hub_frames_per_tick = 8``) onto a frame
bus whose one consumer only counts.  Measured after the streams are up:
frames decoded per camera (captured), frames handed to the bus (scheduled) and
dropped, per second.  Goal: every camera captured at >= 90 % of its stream's
rate (decoding keeps up), and the bus gets frames of every camera.
"""

from __future__ import annotations

import pathlib
import tempfile
import time
from typing import Any

from agent.config import HubCamera
from agent.framebus import FrameBus
from agent.keystore import DataKeys
from agent.layout import StateLayout
from drivers.camera.credentials import CameraCredentialStore
from drivers.camera.hub import build_hub
from tests.hub.rtsp import RtspServer, write_clip

STREAM_FPS = 25
SECONDS = 10.0


def _measure(report: Any, cameras: int, root: pathlib.Path) -> None:
    server = RtspServer(root)
    try:
        sources = []
        for k in range(cameras):
            clip = root / f"cam{k}.avi"
            write_clip(clip, width=640, height=480, fps=STREAM_FPS, seconds=4, shade=120 + 30 * k)
            sources.append(
                HubCamera(name=f"cam{k}", url=server.publish(clip, f"cam{k}"), transport="udp")
            )
        layout = StateLayout(root / "state")
        layout.root.mkdir()
        bus: FrameBus[Any] = FrameBus()
        bus.subscribe("count", lambda frame: None)
        hub = build_hub(
            sources,
            CameraCredentialStore(layout, DataKeys(layout)),
            bus,
            fps=STREAM_FPS,
            frames_per_tick=8,
            motion_offer=lambda name: lambda frame: None,
        )
        hub.start()
        try:
            deadline = time.monotonic() + 30
            while not all(c.frames > STREAM_FPS for c in hub.captures):
                assert time.monotonic() < deadline, "streams never came up"
                hub.tick(time.time())
                time.sleep(0.05)
            before = {k: dict(v) for k, v in hub.scheduler.stats().items()}
            started = time.monotonic()
            while time.monotonic() - started < SECONDS:
                hub.tick(time.time())
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            after = hub.scheduler.stats()
        finally:
            hub.stop()
    finally:
        server.stop()
    total = 0.0
    for name, stats in after.items():
        captured = (stats["captured"] - before[name]["captured"]) / elapsed
        scheduled = (stats["scheduled"] - before[name]["scheduled"]) / elapsed
        total += captured
        report.row(
            "hub",
            f"{cameras} cameras: {name} frames/s captured (handed on)",
            f"{captured:.1f} ({scheduled:.1f})",
            goal=f">= {0.9 * STREAM_FPS:.1f}",
            met=captured >= 0.9 * STREAM_FPS and scheduled > 0,
        )
    report.row(
        "hub",
        f"{cameras} cameras: total frames/s captured at 640x480",
        f"{total:.1f}",
        goal=f">= {0.9 * STREAM_FPS * cameras:.1f}",
        met=total >= 0.9 * STREAM_FPS * cameras,
    )


def run(report: Any) -> None:
    for cameras in (2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            _measure(report, cameras, pathlib.Path(tmp))
