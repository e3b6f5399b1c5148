"""Snapshots fail closed: no face but the matched enrolled one ever leaves sharp (issue 11, item 6).

Blurring the faces the detector found let a missed face and a falsely matched
stranger out sharp.  Here the real pipeline (Haar detector, LBP embedder,
gallery, tracker) sees a frame with the enrolled person, a stranger too small
for the detector, a stranger in a region where detection is off, and a
stranger the matcher confuses with the enrolled person; every JPEG that comes
out is compared with the original frame, face by face: a face is "sharp" when
its region in the JPEG still carries the fine detail of the original's.
"""

from __future__ import annotations

import dataclasses
import pathlib

import cv2
import numpy as np
import numpy.typing as npt
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig, CameraSettings
from agent.events import Event
from agent.matching.settings import FaceDetectorKind, FaceEmbedderKind, MatchingSettings
from agent.matching.tracks import Box
from agent.purposes import Purpose
from drivers.vision.faces import LBP_SNAPSHOT_THRESHOLD, FaceDetectorImpl, HaarDetector
from drivers.vision.pipeline import FaceService, build_service
from drivers.vision.snapshot import encode_jpeg, only_sharp_in, pixelate
from drivers.vision.synth import FaceTraits, draw_face

Image = npt.NDArray[np.uint8]
# How much of the original's fine detail a region of the JPEG still carries (see
# `detail_kept`): the kept face keeps nearly all of it even at JPEG quality 30 (0.8 or
# more), a pixelated face less than a fifth in the scenes below (block edges that
# happen to line up with its outline).  In random scenes 99.9% of 6,400 faces stayed
# under 0.19, but a face cut by the frame's edge or drawn over by another, whose few
# remaining edges line up with block edges, reached 0.47 -- so the property test
# bounds a face by what a mosaic of the whole frame leaves of it, plus JPEG's noise
# (at most 0.04 more seen).
SHARP = 0.7
NOT_SHARP = 0.25
JPEG_NOISE = 0.1
MIN_DETAIL_ENERGY = 4.0  # mean squared grey levels: below it a region is flat


def detail(image: Image) -> npt.NDArray[np.float32]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return np.asarray(grey - cv2.GaussianBlur(grey, (0, 0), 2.0), np.float32)


def detail_kept(original: Image, shot: Image, box: Box) -> float:
    """The share of ``box``'s fine detail in ``original`` still present in ``shot`` (1: sharp).

    The least-squares gain of the shot's detail on the original's: detail the shot
    lacks, or has elsewhere (block edges), does not count.
    """
    a, b = _region(detail(original), box), _region(detail(shot), box)
    energy = float((a * a).mean()) if a.size else 0.0
    return 0.0 if energy == 0.0 else float((a * b).mean()) / energy


def has_detail(original: Image, box: Box) -> bool:
    """Whether ``box`` shows anything to hide (a face drawn over by another is flat)."""
    a = _region(detail(original), box)
    return a.size > 0 and float((a * a).mean()) > MIN_DETAIL_ENERGY


def _region(values: npt.NDArray[np.float32], box: Box) -> npt.NDArray[np.float32]:
    return values[max(0, box.y) : box.y + box.h, max(0, box.x) : box.x + box.w].ravel()


class Consent:
    def __call__(self, purpose: Purpose) -> bool:
        return purpose in (Purpose.FACE_RECOGNITION, Purpose.EVENT_SNAPSHOTS)


@dataclasses.dataclass(frozen=True)
class Scene:
    frame: Image
    enrolled: Box
    look_alike: Box  # detected; close enough to be matched when the threshold is lax
    hidden: Box  # in the region where detection is switched off
    tiny: Box  # smaller than the detector's minimum face


def scene() -> Scene:
    frame = np.full((360, 640, 3), 120, np.uint8)
    frame[300:] = (90, 110, 90)
    boxes = [
        draw_face(frame, FaceTraits.for_identity(identity), cx, cy, size)
        for identity, cx, cy, size in ((3, 110, 180, 130), (5, 330, 180, 130),
                                       (8, 530, 180, 130), (7, 220, 50, 22))
    ]
    return Scene(frame, *(Box(*b) for b in boxes))


class BlindRight:
    """A real detector (Haar unless told) with detection switched off in the right third
    of the frame."""

    def __init__(self, inner: FaceDetectorImpl | None = None) -> None:
        self.inner: FaceDetectorImpl = inner or HaarDetector()

    def detect(self, image: Image) -> list[Box]:
        limit = image.shape[1] * 2 // 3
        return [b for b in self.inner.detect(image) if b.x + b.w // 2 < limit]


def decode(jpeg: bytes) -> Image:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image, np.uint8)


def service(tmp_path: pathlib.Path, face_threshold: float | None = None) -> FaceService:
    settings = MatchingSettings(
        min_blur_score=1.0, consensus_frames=2, consensus_window=3, face_threshold=face_threshold,
        face_detector=FaceDetectorKind.HAAR, face_embedder=FaceEmbedderKind.LBP,  # drawn faces
    )
    config = dataclasses.replace(
        AgentConfig(), state_dir=tmp_path, camera=CameraSettings(), matching=settings
    )
    built = build_service(config, Consent())
    built.detector = BlindRight()  # type: ignore[assignment]
    return built


def enrol_and_watch(built: FaceService, shown: Scene, frames: int = 4) -> list[Event]:
    (box,) = [b for b in built.detector.detect(shown.frame) if b.iou(shown.enrolled) > 0.3]
    return enrol_from(built, shown.frame, box, watching=shown.frame, frames=frames)


def enrol_from(
    built: FaceService, image: Image, box: Box, *, watching: Image, frames: int
) -> list[Event]:
    """Enrol ``box`` of ``image`` as alice, then the events of ``frames`` frames of ``watching``."""
    sample = built.embedder.embed(image, box)
    built.recogniser.enrol("alice", np.stack([sample, sample]), now=0.0)
    events: list[Event] = []
    for i in range(frames):
        events += [r.event for r in built.process(watching, now=i * 0.2)]
    return events


def score(event: Event) -> float:
    value = event.fields["score"]
    assert isinstance(value, float)
    return value


def test_the_scene_really_has_missed_faces() -> None:
    shown = scene()
    found = BlindRight().detect(shown.frame)
    assert any(b.iou(shown.enrolled) > 0.3 for b in found)
    assert any(b.iou(shown.look_alike) > 0.3 for b in found)
    # Detection is off where `hidden` stands, and `tiny` is below Haar's 24-pixel minimum.
    assert not any(b.iou(shown.hidden) > 0.1 or b.iou(shown.tiny) > 0.1 for b in found)
    assert any(b.iou(shown.hidden) > 0.3 for b in HaarDetector().detect(shown.frame))
    faces = (shown.enrolled, shown.look_alike, shown.hidden, shown.tiny)
    assert all(has_detail(shown.frame, face) for face in faces)


def test_missed_faces_never_leave_sharp(tmp_path: pathlib.Path) -> None:
    shown = scene()
    events = enrol_and_watch(service(tmp_path), shown)
    known = [e for e in events if e.fields["known"]]
    strangers = [e for e in events if not e.fields["known"]]
    assert known and strangers, events
    assert all(e.image is None for e in strangers)  # a stranger's event carries no image
    for event in known:
        assert event.image is not None
        shot = decode(event.image)
        assert detail_kept(shown.frame, shot, shown.enrolled) > SHARP
        for face in (shown.look_alike, shown.hidden, shown.tiny):
            assert detail_kept(shown.frame, shot, face) < NOT_SHARP, face


def test_a_false_match_never_leaves_sharp(tmp_path: pathlib.Path) -> None:
    """The matcher is made lax enough to take the look-alike for the enrolled person."""
    shown = scene()
    probe = service(tmp_path / "probe")
    enrol_and_watch(probe, shown, frames=0)
    (box,) = [b for b in probe.detector.detect(shown.frame) if b.iou(shown.look_alike) > 0.3]
    confusion = probe.recogniser.identify(probe.embedder.embed(shown.frame, box)).score
    assert confusion < LBP_SNAPSHOT_THRESHOLD
    # Just below the look-alike's score, as with the stranger matched at 0.8519.
    lax = service(tmp_path / "lax", face_threshold=confusion - 0.002)
    events = enrol_and_watch(lax, shown)
    false = [e for e in events if e.fields["known"] and score(e) < 0.99]
    true = [e for e in events if e.fields["known"] and score(e) >= 0.99]
    assert false and true, events
    assert all(e.image is None for e in false)  # matched, but not surely enough for an image
    for event in true:
        assert event.image is not None
        shot = decode(event.image)
        assert detail_kept(shown.frame, shot, shown.enrolled) > SHARP
        assert detail_kept(shown.frame, shot, shown.look_alike) < NOT_SHARP


def test_no_snapshot_at_all_without_snapshot_consent(tmp_path: pathlib.Path) -> None:
    shown = scene()
    built = service(tmp_path)
    built.recogniser.is_granted = lambda purpose: purpose is Purpose.FACE_RECOGNITION
    assert all(e.image is None for e in enrol_and_watch(built, shown))


_face = st.tuples(
    st.integers(1, 40),  # identity
    st.integers(0, 639),  # centre x
    st.integers(0, 359),  # centre y
    st.integers(12, 200),  # size
)


@settings(max_examples=60, deadline=None)
@given(faces=st.lists(_face, min_size=2, max_size=5), quality=st.integers(30, 100))
@example(faces=[(1, 0, 0, 12), (6, 0, 357, 138)], quality=30)  # CI: a face cut by a corner
def test_only_the_kept_box_is_sharp_wherever_faces_stand(
    faces: list[tuple[int, int, int, int]], quality: int
) -> None:
    frame = np.full((360, 640, 3), 110, np.uint8)
    boxes = [
        Box(*draw_face(frame, FaceTraits.for_identity(i), x, y, size)) for i, x, y, size in faces
    ]
    kept = boxes[0]
    shot = decode(encode_jpeg(only_sharp_in(frame, kept), quality))
    for box in boxes[1:]:
        # The part of the face inside the frame (a box may stand off its edge).
        x0, y0 = max(0, box.x), max(0, box.y)
        clipped = Box(x0, y0, box.x + box.w - x0, box.y + box.h - y0)
        if clipped.iou(kept) > 0 or clipped.w < 4 or clipped.h < 4:
            continue  # overlapping the kept face, or all but off the frame
        if not has_detail(frame, clipped):
            continue  # off the frame, or drawn over by a later face
        # Never more than the frame-wide mosaic leaves: nothing but the kept box is
        # copied back sharp.  (A leak keeps 0.8 or more; the mosaic at most 0.47.)
        mosaic = detail_kept(frame, pixelate(frame), clipped)
        assert detail_kept(frame, shot, clipped) < max(NOT_SHARP, mosaic + JPEG_NOISE), (
            box, kept, mosaic
        )
