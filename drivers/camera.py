"""One camera, several consumers: faces, motion and the provisioning QR reader.

The capture thread reads the source at the configured rate and hands each
frame to every consumer's cheap ``offer``; the work itself happens in the main
loop's ticks, so a slow consumer drops frames instead of falling behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from agent.errors import DeviceIOError, TransportError
from agent.motion import MotionDetector
from agent.ports import EventSink
from drivers.vision.capture import FrameSource, Image

# What events name the device's one camera.  Not the serial number: events carry the
# device only as a pseudonym ("dev"), and a plain serial in a field would undo that.
CAMERA_NAME = "cam0"

log = logging.getLogger(__name__)

FrameConsumer = Callable[[Image], object]


class LatestFrame:
    """Keeps only the newest frame: for consumers that never need a backlog."""

    def __init__(self) -> None:
        self._frame: Image | None = None
        self._lock = threading.Lock()

    def offer(self, frame: Image) -> None:
        with self._lock:
            self._frame = frame

    def take(self) -> Image | None:
        with self._lock:
            frame, self._frame = self._frame, None
        return frame


class CameraService:
    name = "camera"

    def __init__(self, source: FrameSource, fps: float) -> None:
        self.source = source
        self.interval = 1.0 / fps
        self.consumers: list[FrameConsumer] = []
        self.frames = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_consumer(self, consumer: FrameConsumer) -> None:
        self.consumers.append(consumer)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._capture, name="camera", daemon=True)
        self._thread.start()

    def tick(self, now: float) -> None:
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            # Missing beats stop the watchdog pings: systemd restarts us.
            raise DeviceIOError("camera capture thread died")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.source.close()

    def _capture(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                frame = self.source.read()
            except TransportError as exc:
                self.errors += 1
                log.warning("camera: %s", exc)
                self._stop.wait(1.0)
                continue
            if frame is not None:
                self.frames += 1
                for consumer in self.consumers:
                    consumer(frame)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


class MotionService:
    name = "motion"

    def __init__(self, detector: MotionDetector, sink: EventSink) -> None:
        self.detector = detector
        self.sink = sink
        self.latest = LatestFrame()

    def start(self) -> None:
        return None

    def tick(self, now: float) -> None:
        frame = self.latest.take()
        if frame is None:
            return
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        # Quarter resolution is plenty to see something move, at a sixteenth of the work.
        small = np.asarray(
            cv2.resize(grey, (max(1, grey.shape[1] // 4), max(1, grey.shape[0] // 4))), np.uint8
        )
        event = self.detector.feed(small, now)
        if event is not None:
            self.sink.emit(event)

    def stop(self) -> None:
        return None


class FrameFeed:
    """Feeds the newest frame to a ``offer_frame(frame, now)`` consumer from the main loop."""

    def __init__(self, name: str, consume: Callable[[Image, float], object]) -> None:
        self.name = name
        self.consume = consume
        self.latest = LatestFrame()

    def start(self) -> None:
        return None

    def tick(self, now: float) -> None:
        frame = self.latest.take()
        if frame is not None:
            self.consume(frame, now)

    def stop(self) -> None:
        return None
