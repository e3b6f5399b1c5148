"""The camera's services: the capture thread and motion detection on the main loop.

The capture thread reads the source at the configured rate and publishes each
frame on the shared :class:`~agent.framebus.FrameBus`; consumers (motion, faces,
plates, the provisioning QR reader) keep what they need with a cheap ``offer``
and do their work in the main loop's ticks, so a slow consumer drops frames
instead of falling behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from agent.camera.events import CAMERA_NAME
from agent.camera.motion import MotionDetector, MotionStateTopic
from agent.errors import DeviceIOError, TransportError
from agent.events import Event
from agent.framebus import FrameBus, LatestFrame
from agent.ports import Clock
from drivers.vision.capture import FrameSource, Image

log = logging.getLogger(__name__)


class CameraService:
    name = "camera"

    def __init__(
        self, source: FrameSource, fps: float, frames: FrameBus[Image], clock: Clock
    ) -> None:
        self.source = source
        self.interval = 1.0 / fps
        self.bus = frames
        self.clock = clock
        self.frames = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._capture, name="camera", daemon=True)
        self._thread.start()

    def tick(self, now: float) -> Sequence[Event]:
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            # Missing beats stop the watchdog pings: systemd restarts us.
            raise DeviceIOError("camera capture thread died")
        return ()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.source.close()

    def _capture(self) -> None:
        while not self._stop.is_set():
            started = self.clock.monotonic()
            try:
                frame = self.source.read()
            except TransportError as exc:
                self.errors += 1
                log.warning("camera: %s", exc)
                self._stop.wait(1.0)
                continue
            if frame is not None:
                self.frames += 1
                self.bus.publish(frame, CAMERA_NAME)
            self._stop.wait(max(0.0, self.interval - (self.clock.monotonic() - started)))


class MotionService:
    name = "motion"

    def __init__(
        self, detector: MotionDetector, state: MotionStateTopic, fps: float = 5.0
    ) -> None:
        self.detector = detector
        self.state = state
        # Without frames for this long an open motion event ends (three frames missed).
        self.stale_seconds = 3.0 / fps
        self.latest: LatestFrame[Image] = LatestFrame()

    def start(self) -> None:
        return None

    def tick(self, now: float) -> Sequence[Event]:
        events = self._detect(now)
        # Every pass, not only on a frame: a withdrawal must clear the retained state.
        self.state.refresh(self.detector.active)
        return events

    def _detect(self, now: float) -> Sequence[Event]:
        frame = self.latest.take()
        if frame is None:
            return self.detector.lifecycle.expire(now, self.stale_seconds)
        return self.detector.feed(motion_frame(frame), now)

    def stop(self) -> None:
        return None


def motion_frame(frame: Image) -> Image:
    """The grey quarter-resolution frame motion detection looks at.

    Quarter resolution is plenty to see something move, at a sixteenth of the
    work (Frigate detects motion on a downscaled grey frame too).  Shrinking the
    colour frame first, by area averaging, means no full-size grey copy is ever
    made (300 KiB a frame at 640x480, the old order) and averages each 4x4
    block's sensor noise away instead of sampling single pixels.
    """
    size = (max(1, frame.shape[1] // 4), max(1, frame.shape[0] // 4))
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return np.asarray(grey, np.uint8)


class FrameFeed:
    """Feeds the newest frame to a ``offer_frame(frame, now)`` consumer from the main loop."""

    def __init__(self, name: str, consume: Callable[[Image, float], object]) -> None:
        self.name = name
        self.consume = consume
        self.latest: LatestFrame[Image] = LatestFrame()

    def start(self) -> None:
        return None

    def tick(self, now: float) -> Sequence[Event]:
        frame = self.latest.take()
        if frame is not None:
            self.consume(frame, now)
        return ()

    def stop(self) -> None:
        return None
