"""The face pipeline on a hub: each camera has its own tracks and its events name it.

Frames of two cameras go through one frame bus into one face service (drawn
faces: the model-free Haar detector and LBP embedder), interleaved as the hub's
fair scheduler hands them on.  Each ``face.match`` names the camera whose frame
showed the face, and the two cameras' faces never share a track: the same scene
on both yields the same events on each.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections import Counter

import numpy as np

from agent.config import AgentConfig, CameraSettings
from agent.events import Event
from agent.framebus import FrameBus
from agent.matching.settings import FaceDetectorKind, FaceEmbedderKind, MatchingSettings
from agent.purposes import Purpose
from drivers.vision.pipeline import build_service
from drivers.vision.synth import render_scene


def _config(tmp_path: pathlib.Path) -> AgentConfig:
    return dataclasses.replace(
        AgentConfig(),
        state_dir=tmp_path,
        camera=CameraSettings(fps=5.0, queue_frames=8),
        matching=MatchingSettings(
            min_blur_score=1.0,
            consensus_frames=2,
            consensus_window=3,
            face_detector=FaceDetectorKind.HAAR,
            face_embedder=FaceEmbedderKind.LBP,
        ),
    )


def test_face_events_name_their_camera_and_cameras_keep_their_own_tracks(
    tmp_path: pathlib.Path,
) -> None:
    service = build_service(_config(tmp_path), lambda p: p is Purpose.FACE_RECOGNITION)
    bus: FrameBus[np.ndarray] = FrameBus()
    bus.subscribe_camera("faces", service.offer_frame)
    service.start()
    rng = np.random.default_rng(0)
    events: list[Event] = []
    for step in range(6):
        frame, _ = render_scene([2, 5], rng, 320, 240)
        for camera in ("front", "back"):
            bus.publish(frame.copy(), camera)
        events += service.tick(step * 0.2)
    assert service.queue.dropped == 0
    per_camera = Counter(str(e.fields["camera"]) for e in events if e.type == "face.match")
    # Two strangers settle on each camera: one event per track, per camera.
    assert per_camera == {"front": 2, "back": 2}, per_camera
    # Frames published without a camera are the plain device's one camera.
    service.erase_personal_data()
    for step in range(6):
        frame, _ = render_scene([2, 5], rng, 320, 240)
        bus.publish(frame)
        events += service.tick(10 + step * 0.2)
    assert {str(e.fields["camera"]) for e in events} == {"front", "back", "cam0"}
