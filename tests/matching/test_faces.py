"""Faces: detection, embedding, quality, consent gating, consensus and snapshots."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from agent.errors import BadDataError, ConsentRequiredError
from agent.events import Event
from agent.matching.faces import FaceRecogniser
from agent.matching.gallery import Gallery
from agent.matching.quality import QualityGate, blur_score
from agent.matching.tracks import Box, Tracker
from agent.purposes import Purpose
from drivers.vision.faces import (
    FaceModelError,
    HaarDetector,
    LbpEmbedder,
    SFaceEmbedder,
    YuNetDetector,
    whole_image_box,
)
from drivers.vision.snapshot import only_sharp_in
from drivers.vision.synth import face_set, render_face, render_scene


def rank1(gallery_set: list, probe_set: list, identities: int) -> float:
    embedder = LbpEmbedder()
    gallery = np.stack([embedder.embed(i, whole_image_box(i)) for _, i in gallery_set])
    owners = np.array([who for who, _ in gallery_set])
    templates = np.stack([gallery[owners == who].mean(axis=0) for who in range(identities)])
    probes = np.stack([embedder.embed(i, whole_image_box(i)) for _, i in probe_set])
    truth = np.array([who for who, _ in probe_set])
    return float(np.mean((probes @ templates.T).argmax(axis=1) == truth))


def test_default_embedder_recognises_generated_faces() -> None:
    identities = 12
    accuracy = rank1(
        face_set(identities, 3, seed=1, jitter=0.5), face_set(identities, 2, seed=2, jitter=0.5),
        identities,
    )
    print(f"LBP rank-1 on {identities} generated identities: {accuracy:.3f}")
    assert accuracy >= 0.5  # chance is 1/12


def test_haar_finds_the_face_in_a_generated_image() -> None:
    rng = np.random.default_rng(0)
    found = 0
    for identity in range(12):
        canvas = np.full((320, 320, 3), 120, np.uint8)
        canvas[80:240, 80:240] = render_face(identity, rng, 160, jitter=0.5)
        boxes = HaarDetector().detect(canvas)
        hit = any(abs(b.x + b.w / 2 - 160) < 30 and abs(b.y + b.h / 2 - 160) < 30 for b in boxes)
        found += hit
    # Cartoon faces are not what the cascade was trained on; most must still be found.
    assert found >= 7
    assert HaarDetector().detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_missing_sface_model_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FaceModelError, match="does not exist"):
        SFaceEmbedder(tmp_path / "face_recognition_sface.onnx")
    assert issubclass(FaceModelError, BadDataError)


def test_wrong_model_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    bogus = tmp_path / "sface.onnx"
    bogus.write_bytes(b"this is not an onnx model" * 10)
    with pytest.raises(FaceModelError, match="not an SFace"):
        SFaceEmbedder(bogus)
    with pytest.raises(FaceModelError, match="not a YuNet"):
        YuNetDetector(bogus)


def test_quality_gates_reject_small_and_blurred_faces() -> None:
    sharp = render_face(1, np.random.default_rng(0), 96, jitter=0.0)[:, :, 0]
    flat = np.full((96, 96), 120, np.uint8)
    gate = QualityGate(min_area=40 * 40, min_blur=5.0)
    assert gate.rejects(96, 96, sharp) is None
    assert gate.rejects(30, 30, sharp) == "small"
    assert gate.rejects(96, 96, flat) == "blurred"
    assert blur_score(sharp) > blur_score(flat)


class Consent:
    def __init__(self, *granted: Purpose) -> None:
        self.granted = set(granted)

    def __call__(self, purpose: Purpose) -> bool:
        return purpose in self.granted


def _recogniser(tmp_path: pathlib.Path, consent: Consent) -> FaceRecogniser:
    gallery = Gallery.open(tmp_path / "faces", 4)
    return FaceRecogniser(
        gallery, consent, threshold=0.9, tracker=Tracker(3, 5), camera="cam-1"
    )


def test_nothing_is_enrolled_or_matched_without_consent(tmp_path: pathlib.Path) -> None:
    consent = Consent()
    recogniser = _recogniser(tmp_path, consent)
    with pytest.raises(ConsentRequiredError):
        recogniser.enrol("alice", np.eye(4)[:1], now=1.0)
    with pytest.raises(ConsentRequiredError):
        recogniser.identify(np.eye(4)[0])
    seen = recogniser.observe([Box(0, 0, 10, 10)], [np.eye(4, dtype=np.float32)[0]], 1.0)
    assert seen.reports == [] and seen.known == []
    assert not (tmp_path / "faces").exists()


def test_withdrawal_deletes_the_gallery_files(tmp_path: pathlib.Path) -> None:
    consent = Consent(Purpose.FACE_RECOGNITION)
    recogniser = _recogniser(tmp_path, consent)
    recogniser.enrol("alice", np.eye(4)[:2], now=1.0)
    assert any((tmp_path / "faces").iterdir())
    assert recogniser.on_withdrawn(Purpose.EVENT_SNAPSHOTS) == 0
    assert (tmp_path / "faces").exists()
    assert recogniser.on_withdrawn(Purpose.FACE_RECOGNITION) == 1
    assert not (tmp_path / "faces").exists()


def test_identity_is_reported_after_consensus_with_label_only_if_set(
    tmp_path: pathlib.Path,
) -> None:
    consent = Consent(Purpose.FACE_RECOGNITION)
    recogniser = _recogniser(tmp_path, consent)
    eye = np.eye(4, dtype=np.float32)
    alice = recogniser.enrol("alice", eye[:1], now=0.0)
    bob = recogniser.enrol("bob", eye[1:2], now=0.0, label="Bob")
    events: list[Event] = []
    for frame in range(5):
        boxes = [Box(10 + frame, 10, 50, 50), Box(200, 10, 50, 50), Box(400, 10, 50, 50)]
        seen = recogniser.observe(boxes, [eye[0], eye[1], eye[2]], now=frame * 0.2)
        assert seen.known == boxes[:2]
        events += [r.event for r in seen.reports]
        if frame < 2:
            assert seen.reports == []
    assert len(events) == 3  # alice, bob and one unknown: each once per track
    by_person = {e.identifiers.get("person_id"): e for e in events}
    assert set(by_person) == {alice.id, bob.id, None}
    assert "label" not in by_person[alice.id].fields
    assert by_person[bob.id].fields["label"] == "Bob"
    assert by_person[None].fields["known"] is False
    assert all(e.type == "face.match" and e.fields["camera"] == "cam-1" for e in events)
    assert {e.fields["track_id"] for e in events} == {1, 2, 3}


def test_only_the_kept_face_stays_sharp() -> None:
    frame, boxes = render_scene([1, 2], np.random.default_rng(0), 320, 240)
    stranger, kept = Box(*boxes[0]), Box(*boxes[1])
    shot = only_sharp_in(frame, kept)
    face_before = frame[stranger.y : stranger.y + stranger.h, stranger.x : stranger.x + stranger.w]
    face_after = shot[stranger.y : stranger.y + stranger.h, stranger.x : stranger.x + stranger.w]
    assert blur_score(face_after[:, :, 0]) < 0.2 * blur_score(face_before[:, :, 0])
    np.testing.assert_array_equal(
        shot[kept.y : kept.y + kept.h, kept.x : kept.x + kept.w],
        frame[kept.y : kept.y + kept.h, kept.x : kept.x + kept.w],
    )
