"""The camera pipeline: frame source -> detect -> embed -> match -> event.

A capture thread reads frames at the configured rate into a bounded queue;
when the queue is full the *oldest* frame is dropped (and counted) so the
pipeline always works on recent frames instead of falling behind.  ``tick``
processes a bounded number of queued frames on the runtime's loop.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from agent.config import AgentConfig
from agent.errors import EdgeAgentError, TransportError
from agent.matching.face_commands import face_commands
from agent.matching.faces import FaceRecogniser, FaceReport
from agent.matching.quality import QualityGate
from agent.ports import AuditSink, CommandHandler, EventSink
from agent.purposes import Purpose
from drivers.camera import CAMERA_NAME
from drivers.vision.capture import FrameSource, open_source
from drivers.vision.faces import (
    FaceDetectorImpl,
    FaceEmbedderImpl,
    build_detector,
    build_embedder,
    crop,
    grey,
)
from drivers.vision.gallery import build_recogniser
from drivers.vision.snapshot import blur_faces, encode_jpeg

log = logging.getLogger(__name__)
Image = npt.NDArray[np.uint8]
IsGranted = Callable[[Purpose], bool]
REFRESH_SECONDS = 2.0


class FrameQueue:
    """A bounded, thread-safe frame queue that drops the oldest frame when full."""

    def __init__(self, capacity: int) -> None:
        self._frames: collections.deque[Image] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0
        self.accepted = 0

    def offer(self, frame: Image) -> bool:
        """Queue ``frame``; False if an older frame had to be dropped for it."""
        with self._lock:
            full = len(self._frames) == self._frames.maxlen
            if full:
                self.dropped += 1
            self._frames.append(frame)
            self.accepted += 1
            return not full

    def take(self) -> Image | None:
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
    events: int = 0


class FaceService:
    """An ``agent.ports.Service`` running face recognition on the camera."""

    name = "faces"

    def __init__(
        self,
        source: FrameSource | None,
        detector: FaceDetectorImpl,
        embedder: FaceEmbedderImpl,
        recogniser: FaceRecogniser,
        sink: EventSink,
        *,
        queue_frames: int,
        fps: float,
        quality: QualityGate,
        jpeg_quality: int = 80,
        frames_per_tick: int = 2,
    ) -> None:
        self.source = source
        self.detector = detector
        self.embedder = embedder
        self.recogniser = recogniser
        self.sink = sink
        self.queue = FrameQueue(queue_frames)
        self.interval = 1.0 / fps
        self.quality = quality
        self.jpeg_quality = jpeg_quality
        self.frames_per_tick = frames_per_tick
        self.stats = PipelineStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_refresh = 0.0

    # --- Service -----------------------------------------------------------

    def start(self) -> None:
        self.recogniser.gallery.refresh()
        self._stop.clear()
        if self.source is not None:
            self._thread = threading.Thread(target=self._capture_loop, name="camera", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.source is not None:
            self.source.close()

    def offer_frame(self, frame: Image) -> bool:
        """Frames from a shared camera (drivers.camera); False when one was dropped."""
        return self.queue.offer(frame)

    def tick(self, now: float) -> None:
        if now >= self._next_refresh:
            # Pick up enrolments made with the CLI while the agent runs.
            self._next_refresh = now + REFRESH_SECONDS
            try:
                self.recogniser.gallery.refresh()
            except EdgeAgentError as exc:
                log.warning("face gallery reload failed: %s", exc)
        for _ in range(self.frames_per_tick):
            frame = self.queue.take()
            if frame is None:
                return
            try:
                self.process(frame, now)
            except EdgeAgentError as exc:
                log.warning("frame skipped: %s", exc)

    def on_withdrawn(self, purpose: Purpose) -> int:
        return self.recogniser.on_withdrawn(purpose)

    def commands(self) -> dict[str, CommandHandler]:
        """MQTT handlers ``face.list``, ``face.remove`` and ``face.rename``."""
        return face_commands(lambda: self.recogniser.gallery, time.time, self.recogniser.audit)

    def export_personal_data(self) -> Mapping[str, object]:
        return self.recogniser.gallery.export_personal_data()

    def erase_personal_data(self) -> int:
        self.recogniser.tracker.clear()
        return self.recogniser.gallery.erase_personal_data()

    # --- work --------------------------------------------------------------

    def _capture_loop(self) -> None:
        assert self.source is not None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                frame = self.source.read()
            except TransportError as exc:
                log.warning("camera: %s", exc)
                self._stop.wait(1.0)
                continue
            if frame is not None:
                self.queue.offer(frame)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def process(self, frame: Image, now: float) -> list[FaceReport]:
        """Run one frame through detection, quality gates, matching and events."""
        self.stats.frames += 1
        if not self.recogniser.active:
            # Without consent no face is even detected, let alone embedded.
            self.recogniser.observe([], [], now)
            return []
        boxes = self.detector.detect(frame)
        embeddings: list[npt.NDArray[np.float32] | None] = []
        for box in boxes:
            self.stats.faces += 1
            if self.quality.rejects(box.w, box.h, grey(crop(frame, box))) is not None:
                self.stats.rejected += 1
                embeddings.append(None)
                continue
            embeddings.append(self.embedder.embed(frame, box))
        seen = self.recogniser.observe(boxes, embeddings, now)
        if not seen.reports:
            return seen.reports
        image = None
        if self.recogniser.is_granted(Purpose.EVENT_SNAPSHOTS):
            # Everyone not matched to an enrolled person in this frame is a stranger.
            strangers = [b for b in boxes if b not in seen.known]
            image = encode_jpeg(blur_faces(frame, strangers), self.jpeg_quality)
        for report in seen.reports:
            event = report.event
            if image is not None:
                event = dataclasses.replace(event, image=image)
            if self.sink.emit(event):
                self.stats.events += 1
        return seen.reports


def build_service(
    config: AgentConfig,
    sink: EventSink,
    is_granted: IsGranted,
    audit: AuditSink | None = None,
    source: FrameSource | None = None,
    *,
    shared_camera: bool = False,
) -> FaceService:
    """The face pipeline for ``edge-agent run``; register ``service.on_withdrawn`` as a hook."""
    settings = config.matching
    embedder = build_embedder(settings)
    recogniser = build_recogniser(
        config, embedder, is_granted, camera=CAMERA_NAME, audit=audit
    )
    if shared_camera:
        source = None  # frames arrive through offer_frame
    elif source is None:
        source = open_source(config.camera)
    return FaceService(
        source,
        build_detector(settings),
        embedder,
        recogniser,
        sink,
        queue_frames=config.camera.queue_frames,
        fps=config.camera.fps,
        quality=QualityGate(settings.min_face_area, settings.min_blur_score),
        jpeg_quality=settings.snapshot_jpeg_quality,
    )
