"""The face pipeline: frame -> detect -> track -> embed (once per track) -> match -> events.

Frames arrive from the cameras (the frame bus, with the name of the camera
each came from) into a bounded queue;
when the queue is full the *oldest* frame is dropped (and counted) so the
pipeline always works on recent frames instead of falling behind.  ``tick``
processes a bounded number of queued frames on the runtime's loop and returns
the events they produced.  Each camera has its own tracks (a face seen by the
front camera is not the same track as one at the same place in the back
camera's picture); all of them match against the one gallery, and every
``face.match`` names its camera.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agent.camera.events import CAMERA_NAME
from agent.config import AgentConfig
from agent.errors import EdgeAgentError
from agent.events import Event
from agent.matching.faces import FaceRecogniser, FaceReport
from agent.matching.quality import QualityGate
from agent.matching.tracks import Box, Tracker
from agent.ports import AuditSink
from agent.purposes import Purpose
from drivers.vision.faces import (
    FaceDetectorImpl,
    FaceEmbedderImpl,
    build_detector,
    build_embedder,
    crop,
    grey,
)
from drivers.vision.gallery import build_recogniser
from drivers.vision.lazy_models import LazyDetector, LazyEmbedder, lazy_detector, lazy_embedder
from drivers.vision.snapshot import encode_jpeg, only_sharp_in

if TYPE_CHECKING:
    from agent.keystore import DataKeys

log = logging.getLogger(__name__)
Image = npt.NDArray[np.uint8]
IsGranted = Callable[[Purpose], bool]
REFRESH_SECONDS = 2.0


class FrameQueue:
    """A bounded, thread-safe frame queue that drops the oldest frame when full."""

    def __init__(self, capacity: int) -> None:
        self._frames: collections.deque[tuple[str, Image]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0
        self.accepted = 0

    def offer(self, frame: Image, camera: str = CAMERA_NAME) -> bool:
        """Queue ``frame`` from ``camera``; False if an older frame had to be dropped for it."""
        with self._lock:
            full = len(self._frames) == self._frames.maxlen
            if full:
                self.dropped += 1
            self._frames.append((camera, frame))
            self.accepted += 1
            return not full

    def take(self) -> Image | None:
        taken = self.take_from()
        return None if taken is None else taken[1]

    def take_from(self) -> tuple[str, Image] | None:
        """The oldest frame and the name of its camera."""
        with self._lock:
            return self._frames.popleft() if self._frames else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)


@dataclasses.dataclass
class PipelineStats:
    frames: int = 0
    faces: int = 0
    rejected: int = 0
    embedded: int = 0
    events: int = 0


class FaceService:
    """An ``agent.ports.Service`` running face recognition on the camera."""

    name = "faces"

    def __init__(
        self,
        detector: FaceDetectorImpl | LazyDetector,
        embedder: FaceEmbedderImpl | LazyEmbedder,
        recogniser: FaceRecogniser,
        *,
        queue_frames: int,
        quality: QualityGate,
        jpeg_quality: int = 80,
        frames_per_tick: int = 2,
        snapshot_min_score: float | None = None,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.recogniser = recogniser
        self.queue = FrameQueue(queue_frames)
        self.quality = quality
        self.jpeg_quality = jpeg_quality
        self.frames_per_tick = frames_per_tick
        # Stricter than matching: a false match just above the match threshold
        # must not carry a stranger's face out sharp.
        self.snapshot_min_score = (
            embedder.snapshot_threshold if snapshot_min_score is None else snapshot_min_score
        )
        self.stats = PipelineStats()
        self._next_refresh = 0.0
        # Per camera its own tracks, all on the one gallery (``recogniser`` is the first).
        self._recognisers = {recogniser.camera: recogniser}

    # --- Service -----------------------------------------------------------

    def start(self) -> None:
        self.recogniser.gallery.refresh()

    def stop(self) -> None:
        return None

    def offer_frame(self, frame: Image, camera: str = CAMERA_NAME) -> bool:
        """Frames from the cameras (drivers.camera); False when one was dropped."""
        return self.queue.offer(frame, camera)

    def recogniser_for(self, camera: str) -> FaceRecogniser:
        """``camera``'s recogniser: its own tracks, the shared gallery and threshold."""
        found = self._recognisers.get(camera)
        if found is None:
            first = self.recogniser
            tracker = first.tracker
            found = FaceRecogniser(
                first.gallery,
                first.is_granted,
                threshold=first.threshold,
                tracker=Tracker(tracker.frames, tracker.window, tracker.min_iou, tracker.ttl),
                camera=camera,
                audit=first.audit,
            )
            self._recognisers[camera] = found
        return found

    def tick(self, now: float) -> Sequence[Event]:
        if now >= self._next_refresh:
            # Pick up enrolments made with the CLI while the agent runs.
            self._next_refresh = now + REFRESH_SECONDS
            try:
                self.recogniser.gallery.refresh()
            except EdgeAgentError as exc:
                log.warning("face gallery reload failed: %s", exc)
        events: list[Event] = []
        for _ in range(self.frames_per_tick):
            taken = self.queue.take_from()
            if taken is None:
                break
            camera, frame = taken
            try:
                events += [report.event for report in self.process(frame, now, camera)]
            except EdgeAgentError as exc:
                log.warning("frame skipped: %s", exc)
        return events

    def export_personal_data(self) -> Mapping[str, object]:
        return self.recogniser.gallery.export_personal_data()

    def erase_personal_data(self) -> int:
        for recogniser in self._recognisers.values():
            recogniser.clear_tracks()
        return self.recogniser.gallery.erase_personal_data()

    def reseal_personal_data(self) -> int:
        return self.recogniser.gallery.reseal_personal_data()

    # --- work --------------------------------------------------------------

    def process(self, frame: Image, now: float, camera: str | None = None) -> list[FaceReport]:
        """Run one frame of ``camera`` (the first) through detection, quality gates, matching.

        With ``event_snapshots`` consented, an event about an enrolled person matched
        at ``snapshot_min_score`` or better carries the frame pixelated everywhere but
        that person's face; every other event (a stranger, a weaker match) carries none.
        """
        self.stats.frames += 1
        recogniser = self.recogniser if camera is None else self.recogniser_for(camera)
        if not recogniser.active:
            # Without consent no face is even detected, let alone embedded, and the
            # dlib models (loaded by the first consented frame) go until the next one.
            self.release_models()
            for each in self._recognisers.values():
                each.observe([], [], now)
            return []
        boxes = self.detector.detect(frame)
        self.stats.faces += len(boxes)

        def embed(box: Box) -> npt.NDArray[np.float32] | None:
            # Called only for the tracks that need an embedding (new, or a better view).
            if self.quality.rejects(box.w, box.h, grey(crop(frame, box))) is not None:
                self.stats.rejected += 1
                return None
            self.stats.embedded += 1
            return self.embedder.embed(frame, box)

        seen = recogniser.observe_tracks(boxes, embed, now)
        if not seen.reports:
            return seen.reports
        self.stats.events += len(seen.reports)
        if not recogniser.is_granted(Purpose.EVENT_SNAPSHOTS):
            return seen.reports
        return [self._with_snapshot(frame, report) for report in seen.reports]

    def release_models(self) -> None:
        """Drop the lazily loaded models (drivers.vision.lazy_models); cheap when none is."""
        for model in (self.detector, self.embedder):
            if isinstance(model, LazyDetector | LazyEmbedder):
                model.release()

    def _with_snapshot(self, frame: Image, report: FaceReport) -> FaceReport:
        score = report.event.fields.get("score")
        if not report.known or not isinstance(score, float) or score < self.snapshot_min_score:
            return report
        image = encode_jpeg(only_sharp_in(frame, report.box), self.jpeg_quality)
        return dataclasses.replace(report, event=dataclasses.replace(report.event, image=image))


def build_service(
    config: AgentConfig,
    is_granted: IsGranted,
    audit: AuditSink | None = None,
    keys: DataKeys | None = None,
) -> FaceService:
    """The face pipeline for ``edge-agent run``; frames come through ``offer_frame``.

    ``keys``: the gallery is sealed under them (None only in tests of the pipeline alone).
    """
    settings = config.matching
    # dlib's and BlazeFace's models load on the first consented frame, not here
    # (drivers.vision.lazy_models).
    embedder = lazy_embedder(settings) or build_embedder(settings)
    detector = lazy_detector(settings) or build_detector(settings)
    recogniser = build_recogniser(
        config, embedder, is_granted, camera=CAMERA_NAME, audit=audit, keys=keys
    )
    return FaceService(
        detector,
        embedder,
        recogniser,
        queue_frames=config.camera.queue_frames,
        quality=QualityGate(settings.min_face_area, settings.min_blur_score),
        jpeg_quality=settings.snapshot_jpeg_quality,
        snapshot_min_score=settings.snapshot_min_score,
    )
