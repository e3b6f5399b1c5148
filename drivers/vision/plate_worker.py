"""The plate reader's own thread, fed from the shared camera frames.

OCR costs 60-600 ms per frame, far more than the main loop may spend in a
tick, so it never runs there.  The frame bus calls :meth:`PlateWorker.offer`
on the capture thread; that keeps a frame only when it is every N-th frame or
the scene moved (a 80x60 grey thumbnail differs from the last one read by
``motion_level`` on average), and only in a one-slot queue per camera: a
frame waiting while the reader is busy is replaced by the newer one of the
same camera (and counted as dropped).  The worker thread reads the camera that
has waited longest (a hub's cameras take turns) and queues its located
readings with the camera's name (bounded; the oldest go first) for the
service's ``tick`` to vote on and match.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from agent.camera.events import CAMERA_NAME
from agent.errors import EdgeAgentError
from agent.matching.plates_vote import LocatedReading

log = logging.getLogger(__name__)
Image = npt.NDArray[np.uint8]
THUMB = (80, 60)
MAX_RESULTS = 64


class FrameLocator(Protocol):
    def locate(self, frame: Image) -> list[LocatedReading]: ...


@dataclasses.dataclass
class WorkerStats:
    offered: int = 0
    sampled: int = 0
    dropped: int = 0
    read: int = 0
    failed: int = 0


def thumbnail(frame: Image) -> npt.NDArray[np.int16] | None:
    """A small grey copy for motion checks; None for anything that is not an image."""
    if frame.ndim not in (2, 3) or frame.size == 0 or min(frame.shape[:2]) < 2:
        return None
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame[:, :, :3], cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA), np.int16)


class PlateWorker:
    """Reads plates off the camera on its own thread; ``results`` are drained by the service."""

    def __init__(
        self, locator: FrameLocator, *, every_n_frames: int = 5, motion_level: float = 3.0
    ) -> None:
        self.locator = locator
        self.every_n_frames = max(1, every_n_frames)
        self.motion_level = motion_level
        self.stats = WorkerStats()
        # Set by the service's tick (main thread): read nothing without consent.
        self.active = False
        # Per camera its newest frame not read yet; the one waiting longest is read next.
        self._pending: dict[str, Image] = {}
        # Per camera the thumbnail of the frame read last.
        self._thumbs: dict[str, npt.NDArray[np.int16]] = {}
        self._results: collections.deque[tuple[str, list[LocatedReading]]] = collections.deque(
            maxlen=MAX_RESULTS
        )
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # --- capture thread -----------------------------------------------------

    def _wanted(self, frame: Image, camera: str) -> bool:
        self.stats.offered += 1
        if self.stats.offered % self.every_n_frames == 0:
            return True
        if self.motion_level <= 0:
            return False
        thumb = thumbnail(frame)
        last = self._thumbs.get(camera)
        if thumb is None or last is None or last.shape != thumb.shape:
            return thumb is not None
        return float(np.mean(np.abs(thumb - last))) >= self.motion_level

    def offer(self, frame: Image, camera: str = CAMERA_NAME) -> None:
        """The frame bus's callback: cheap, never blocks on the reader."""
        if not self.active or not isinstance(frame, np.ndarray):
            return
        if not self._wanted(frame, camera):
            return
        with self._wake:
            if camera in self._pending:
                self.stats.dropped += 1  # replaced in place: the camera keeps its turn
            self._pending[camera] = frame
            self.stats.sampled += 1
            self._wake.notify()

    # --- worker thread ------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="plate-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stop = True
            self._pending.clear()
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                camera = next(iter(self._pending))
                frame = self._pending.pop(camera)
            self.read_now(frame, camera)

    def read_now(self, frame: Image, camera: str = CAMERA_NAME) -> list[LocatedReading]:
        """Read one frame of ``camera`` on the calling thread and queue its readings."""
        thumb = thumbnail(frame)
        if thumb is not None:
            self._thumbs[camera] = thumb
        try:
            found = self.locator.locate(frame)
        except EdgeAgentError as exc:
            self.stats.failed += 1
            log.warning("plate frame skipped: %s", exc)
            return []
        self.stats.read += 1
        if found:
            self._results.append((camera, found))
        return found

    def drain(self) -> list[tuple[str, list[LocatedReading]]]:
        """Readings queued since the last call, one list per frame with its camera, oldest first."""
        taken: list[tuple[str, list[LocatedReading]]] = []
        while True:
            try:
                taken.append(self._results.popleft())
            except IndexError:
                return taken

    def forget(self) -> None:
        """Drop queued readings (consent withdrawn, data erased)."""
        self._results.clear()
        with self._wake:
            self._pending.clear()
