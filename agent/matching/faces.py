"""Consent-gated face recognition: from per-frame embeddings to ``face.match`` events.

The drivers detect and embed faces; this core decides what may happen with
them, and when a face is worth embedding at all: detection runs on every
frame, but a track is embedded only when it is new, when its last try failed
the quality gates, or when its face has grown by ``REEMBED_GROWTH`` (closer to
the camera: a better view).  Every frame still votes, with the track's best
embedding so far, so the DNN cost scales with people in view, not with fps.

Nothing is matched or enrolled unless ``face_recognition`` is granted;
its withdrawal erases the gallery.  Events carry the identity's stable id as
the ``person_id`` identifier (the minimiser replaces it by a pseudonym) and
the display label only when the owner set one.  Beside the raw cosine
``score`` they carry ``confidence``, the embedder's fixed calibration of that
score (:mod:`agent.matching.calibration`): 0.5 near the default threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from agent.errors import ConsentRequiredError
from agent.events import Event
from agent.matching.calibration import Calibration
from agent.matching.crops import EnrolmentCrop
from agent.matching.gallery import Gallery, Match
from agent.matching.store import IdentityRecord
from agent.matching.tracks import Box, Tracker
from agent.ports import AuditSink
from agent.purposes import Purpose

IsGranted = Callable[[Purpose], bool]
Vector = npt.NDArray[np.float32]
# Without an embedder's fitted calibration: 0.5 at the threshold, 0.05 / 0.95 at
# 0.05 below / above it.
DEFAULT_SLOPE = 58.9
# A track is embedded again once its face box has this many times the area of
# the one its embedding came from.
REEMBED_GROWTH = 1.5


@dataclasses.dataclass(frozen=True)
class FaceReport:
    """One event to emit and the face it is about."""

    event: Event
    box: Box
    known: bool


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one frame produced: events to emit and the faces matched to enrolled people."""

    reports: list[FaceReport]
    known: list[Box]


class FaceRecogniser:
    name = "face_gallery"

    def __init__(
        self,
        gallery: Gallery,
        is_granted: IsGranted,
        *,
        threshold: float,
        tracker: Tracker,
        camera: str,
        audit: AuditSink | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.gallery = gallery
        self.calibration = calibration or Calibration(DEFAULT_SLOPE, threshold)
        self.is_granted = is_granted
        self.threshold = threshold
        self.tracker = tracker
        self.camera = camera
        self.audit = audit
        # track id -> (embedding of its best frame so far, that frame's box area)
        self._embedded: dict[int, tuple[Vector, int]] = {}
        self.embeddings = 0  # how many faces were embedded (each costs a DNN pass)

    @property
    def active(self) -> bool:
        return self.is_granted(Purpose.FACE_RECOGNITION)

    def require_consent(self) -> None:
        if not self.active:
            raise ConsentRequiredError(Purpose.FACE_RECOGNITION.value)

    def enrol(
        self,
        name: str,
        samples: npt.NDArray[np.floating],
        now: float,
        label: str | None = None,
        crops: Sequence[EnrolmentCrop] | None = None,
    ) -> IdentityRecord:
        self.require_consent()
        record = self.gallery.enrol(name, samples, label, crops)
        if self.audit is not None:
            self.audit.record("face.enrol", {"id": record.id, "samples": len(samples)}, now)
        return record

    def identify(self, embedding: npt.NDArray[np.floating]) -> Match:
        self.require_consent()
        return self.gallery.identify(embedding, self.threshold)

    def clear_tracks(self) -> None:
        """Forget every track and the embeddings held for them (personal data too)."""
        self.tracker.clear()
        self._embedded.clear()

    def observe(
        self,
        boxes: Sequence[Box],
        embeddings: Sequence[Vector | None],
        now: float,
    ) -> Observation:
        """Like :meth:`observe_tracks` with every face of the frame already embedded."""
        by_box = {id(box): embedding for box, embedding in zip(boxes, embeddings, strict=True)}
        return self._observe(boxes, lambda box: by_box[id(box)], now, every_frame=True)

    def observe_tracks(
        self, boxes: Sequence[Box], embed: Callable[[Box], Vector | None], now: float
    ) -> Observation:
        """Vote each face of one frame into its track; events for settled identities.

        ``embed(box)`` is called only for the tracks that need it (see the module
        doc); it returns None when the face fails the quality gates: the track
        stays alive but does not vote until a later frame passes.
        """
        return self._observe(boxes, embed, now, every_frame=False)

    def _best_embedding(
        self, box: Box, track_id: int, embed: Callable[[Box], Vector | None], every_frame: bool
    ) -> Vector | None:
        held = self._embedded.get(track_id)
        if not every_frame and held is not None and box.area < held[1] * REEMBED_GROWTH:
            return held[0]
        embedding = embed(box)
        if embedding is None:
            return None if every_frame or held is None else held[0]
        self.embeddings += 1
        self._embedded[track_id] = (embedding, box.area)
        return embedding

    def _observe(
        self,
        boxes: Sequence[Box],
        embed: Callable[[Box], Vector | None],
        now: float,
        *,
        every_frame: bool,
    ) -> Observation:
        if not self.active:
            self.clear_tracks()
            return Observation([], [])
        reports: list[FaceReport] = []
        known: list[Box] = []
        tracks = self.tracker.assign(list(boxes), now)
        for gone in self._embedded.keys() - self.tracker.tracks.keys():
            del self._embedded[gone]
        for box, track in zip(boxes, tracks, strict=True):
            embedding = self._best_embedding(box, track.id, embed, every_frame)
            if embedding is None:
                continue
            match = self.gallery.identify(embedding, self.threshold)
            who = match.identity.id if match.identity is not None else None
            if who is not None:
                known.append(box)
            if who is not None and self.tracker.vote(track, who) == who:
                reports.append(self._report(match, box, track.id, now))
            elif who is None:
                self.tracker.vote(track, None)
                if self.tracker.unknown_settled(track):
                    reports.append(self._report(match, box, track.id, now))
        return Observation(reports, known)

    def _report(self, match: Match, box: Box, track_id: int, now: float) -> FaceReport:
        fields: dict[str, object] = {
            "score": round(match.score, 4),
            "confidence": round(self.calibration.confidence(match.score), 4),
            "known": match.known,
            "track_id": track_id,
            "camera": self.camera,
        }
        identifiers: dict[str, str] = {}
        if match.identity is not None:
            identifiers["person_id"] = match.identity.id
            if match.identity.label:
                fields["label"] = match.identity.label
        event = Event(type="face.match", occurred_at=now, fields=fields, identifiers=identifiers)
        return FaceReport(event, box, match.known)

    def on_withdrawn(self, purpose: Purpose) -> int:
        """Consent hook: withdrawing face_recognition erases the gallery files."""
        if purpose is not Purpose.FACE_RECOGNITION:
            return 0
        self.clear_tracks()
        return self.gallery.erase_personal_data()
