"""Consent-gated face recognition: from per-frame embeddings to ``face.match`` events.

The drivers detect and embed faces; this core decides what may happen with
them.  Nothing is matched or enrolled unless ``face_recognition`` is granted;
its withdrawal erases the gallery.  Events carry the identity's stable id as
the ``person_id`` identifier (the minimiser replaces it by a pseudonym) and
the display label only when the owner set one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from agent.errors import ConsentRequiredError
from agent.events import Event
from agent.matching.gallery import Gallery, Match
from agent.matching.store import IdentityRecord
from agent.matching.tracks import Box, Tracker
from agent.ports import AuditSink
from agent.purposes import Purpose

IsGranted = Callable[[Purpose], bool]


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
    ) -> None:
        self.gallery = gallery
        self.is_granted = is_granted
        self.threshold = threshold
        self.tracker = tracker
        self.camera = camera
        self.audit = audit

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
    ) -> IdentityRecord:
        self.require_consent()
        record = self.gallery.enrol(name, samples, label)
        if self.audit is not None:
            self.audit.record("face.enrol", {"id": record.id, "samples": len(samples)}, now)
        return record

    def identify(self, embedding: npt.NDArray[np.floating]) -> Match:
        self.require_consent()
        return self.gallery.identify(embedding, self.threshold)

    def observe(
        self,
        boxes: Sequence[Box],
        embeddings: Sequence[npt.NDArray[np.float32] | None],
        now: float,
    ) -> Observation:
        """Vote each face of one frame into its track; events for settled identities.

        ``embeddings[i]`` is None when face ``i`` failed the quality gates: it
        keeps its track alive but does not vote (and counts as a stranger).
        """
        if not self.active:
            self.tracker.clear()
            return Observation([], [])
        reports: list[FaceReport] = []
        known: list[Box] = []
        tracks = self.tracker.assign(list(boxes), now)
        for box, track, embedding in zip(boxes, tracks, embeddings, strict=True):
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
        self.tracker.clear()
        return self.gallery.erase_personal_data()
