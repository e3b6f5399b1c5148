"""The camera pipeline: bounded queue drops, consent-gated snapshots, build_service."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import cv2
import numpy as np

from agent.config import AgentConfig, CameraSettings
from agent.events import Event
from agent.framebus import FrameBus
from agent.matching.quality import blur_score
from agent.matching.settings import FaceDetectorKind, FaceEmbedderKind, MatchingSettings
from agent.purposes import Purpose
from drivers.camera.services import CameraService
from drivers.clock import SystemClock
from drivers.vision.capture import open_source
from drivers.vision.faces import HaarDetector
from drivers.vision.pipeline import FaceService, FrameQueue, build_service
from drivers.vision.synth import render_scene

DRAWN_FACES = {"face_detector": FaceDetectorKind.HAAR, "face_embedder": FaceEmbedderKind.LBP}


class Sink:
    """What the runtime does with the events a frame produced."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def process(self, service: FaceService, frame: np.ndarray, now: float) -> None:
        self.events += [report.event for report in service.process(frame, now)]


class Consent:
    def __init__(self, *granted: Purpose) -> None:
        self.granted = set(granted)

    def __call__(self, purpose: Purpose) -> bool:
        return purpose in self.granted


class SceneSource:
    """Frames of the same two people, as fast as they are asked for."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.reads = 0

    def read(self) -> np.ndarray:
        self.reads += 1
        frame, _ = render_scene([2, 5], self.rng, 320, 240)
        return frame

    def close(self) -> None:
        pass


def _config(tmp_path: pathlib.Path, fps: float = 5.0, queue: int = 4) -> AgentConfig:
    return dataclasses.replace(
        AgentConfig(),
        state_dir=tmp_path,
        camera=CameraSettings(fps=fps, queue_frames=queue),
        # Drawn faces: the model-free options (dlib's detector finds no cartoon).
        matching=MatchingSettings(
            min_blur_score=1.0, consensus_frames=2, consensus_window=3, **DRAWN_FACES
        ),
    )


def test_full_queue_drops_the_oldest_frames() -> None:
    queue = FrameQueue(3)
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(10)]
    accepted = [queue.offer(f) for f in frames]
    assert accepted == [True] * 3 + [False] * 7
    assert queue.dropped == 7 and len(queue) == 3
    assert [int(queue.take()[0, 0, 0]) for _ in range(3)] == [7, 8, 9]
    assert queue.take() is None


def test_service_drops_frames_rather_than_falling_behind(tmp_path: pathlib.Path) -> None:
    source = SceneSource()
    service = build_service(_config(tmp_path, fps=60, queue=2), Consent())
    service.start()
    for _ in range(7):  # the camera publishes faster than the loop ticks
        service.offer_frame(source.read())
    assert service.queue.dropped == 5
    assert len(service.queue) == 2
    assert list(service.tick(0.0)) == []  # no consent: frames are counted, nothing detected
    assert service.stats.frames == 2
    service.stop()


def _run_frames(service: FaceService, sink: Sink, frames: int) -> None:
    source = SceneSource()
    for i in range(frames):
        sink.process(service, source.read(), now=i * 0.2)


def test_events_about_strangers_carry_no_snapshot_even_with_snapshot_consent(
    tmp_path: pathlib.Path,
) -> None:
    frame, _ = render_scene([2, 5], np.random.default_rng(0), 320, 240)
    assert HaarDetector().detect(frame), "the generated scene must contain a detectable face"
    for granted in (
        (Purpose.FACE_RECOGNITION,),
        (Purpose.FACE_RECOGNITION, Purpose.EVENT_SNAPSHOTS),
    ):
        sink = Sink()
        service = build_service(_config(tmp_path / str(len(granted))), Consent(*granted))
        _run_frames(service, sink, 4)
        assert sink.events, "unknown faces are reported after consensus"
        assert all(e.type == "face.match" and e.fields["known"] is False for e in sink.events)
        # Only an enrolled person's match may carry an image (tests/matching/test_snapshots.py).
        assert all(e.image is None for e in sink.events)


def test_no_consent_means_no_detection_and_no_events(tmp_path: pathlib.Path) -> None:
    sink = Sink()
    service = build_service(_config(tmp_path), Consent(Purpose.EVENT_SNAPSHOTS))
    _run_frames(service, sink, 4)
    assert sink.events == []
    assert service.stats.faces == 0


def test_sample_source_feeds_faces_through_the_shared_camera(tmp_path: pathlib.Path) -> None:
    """The sample camera, the frame bus and the face service, as the daemon wires them."""
    config = _config(tmp_path, fps=50)
    service = build_service(config, Consent(Purpose.FACE_RECOGNITION))
    bus: FrameBus[np.ndarray] = FrameBus()
    bus.subscribe("faces", service.offer_frame)
    camera = CameraService(open_source(config.camera), config.camera.fps, bus, SystemClock())
    service.start()
    camera.start()
    try:
        deadline = time.monotonic() + 5
        while service.queue.accepted < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        camera.stop()
        service.stop()
    assert service.queue.accepted >= 3 and camera.frames >= 3
    service.tick(100.0)
    assert service.stats.frames >= 1


def test_snapshot_hides_the_stranger_and_keeps_the_enrolled_face(tmp_path: pathlib.Path) -> None:
    sink = Sink()
    consent = Consent(Purpose.FACE_RECOGNITION, Purpose.EVENT_SNAPSHOTS)
    service = build_service(_config(tmp_path), consent)
    enrolment = SceneSource()
    samples = []
    for _ in range(6):
        frame = enrolment.read()
        for box in service.detector.detect(frame):
            if box.x + box.w / 2 < 160:  # identity 2 stands on the left
                samples.append(service.embedder.embed(frame, box))
    assert samples
    service.recogniser.enrol("left", np.stack(samples), now=0.0)
    source = SceneSource()
    checked = 0
    for i in range(8):
        frame = source.read()
        before = len(sink.events)
        sink.process(service, frame, now=i * 0.2)
        for event in sink.events[before:]:
            if not event.fields["known"]:
                assert event.image is None  # a stranger's event carries no image at all
                continue
            assert event.image is not None
            shot = cv2.imdecode(np.frombuffer(event.image, np.uint8), cv2.IMREAD_GRAYSCALE)
            original = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            left, right = (slice(60, 150), slice(40, 120)), (slice(60, 150), slice(200, 280))
            assert blur_score(shot[left]) > 0.5 * blur_score(original[left])
            assert blur_score(shot[right]) < 0.2 * blur_score(original[right])
            checked += 1
    assert any(e.fields["known"] for e in sink.events)
    assert checked
