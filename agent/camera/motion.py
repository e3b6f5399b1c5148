"""Motion detection on grey frames: a running background and a changed-area fraction.

Pure numpy over frames passed in with their time; it reports a ``motion``
event (purpose ``cloud_events``) when motion ends, with its duration and the
largest changed area, so one walk past the camera is one event, not fifty.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from agent.events import Event

Frame = npt.NDArray[np.uint8]


@dataclasses.dataclass(frozen=True)
class MotionSettings:
    pixel_threshold: int = 25
    area_threshold: float = 0.01
    background_rate: float = 0.05
    quiet_seconds: float = 1.0
    # Motion that never stops (rain, a flag in the wind) is still reported this often.
    max_event_seconds: float = 30.0


class MotionDetector:
    def __init__(self, camera: str, settings: MotionSettings | None = None) -> None:
        self.camera = camera
        self.settings = settings or MotionSettings()
        self._background: npt.NDArray[np.float32] | None = None
        self._previous: npt.NDArray[np.float32] | None = None
        self._started: float | None = None
        self._last_motion = 0.0
        self._peak = 0.0

    def changed_fraction(self, grey: Frame) -> float:
        frame = grey.astype(np.float32)
        background, previous = self._background, self._previous
        self._previous = frame
        if background is None or previous is None or background.shape != frame.shape:
            self._background = frame.copy()
            return 0.0
        threshold = self.settings.pixel_threshold
        # Changed against the background AND the previous frame: the ghost an object
        # leaves in the slowly adapting background is static, so it does not count.
        moving = (np.abs(frame - background) > threshold) & (
            np.abs(frame - previous) > threshold / 2
        )
        background += self.settings.background_rate * (frame - background)
        return int(np.count_nonzero(moving)) / int(moving.size)

    def feed(self, grey: Frame, now: float) -> Event | None:
        if grey.ndim != 2:
            raise ValueError("motion detection needs a single-channel frame")
        fraction = self.changed_fraction(grey)
        if fraction >= self.settings.area_threshold:
            if self._started is None:
                self._started = now
                self._peak = 0.0
            self._last_motion = now
            self._peak = max(self._peak, fraction)
            if now - self._started < self.settings.max_event_seconds:
                return None
            return self._finish()
        if self._started is not None and now - self._last_motion >= self.settings.quiet_seconds:
            return self._finish()
        return None

    def _finish(self) -> Event:
        started = self._started
        assert started is not None
        self._started = None
        return Event(
            "motion",
            occurred_at=started,
            fields={
                "camera": self.camera,
                "area": round(self._peak, 4),
                "duration": round(self._last_motion - started, 2),
            },
        )
