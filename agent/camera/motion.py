"""Motion detection on grey frames, and the Frigate-style lifecycle of a motion event.

:class:`MotionDetector` turns a frame into a score: the fraction of the picture
that changed against a running background (pure numpy over the frames passed
in).  :class:`MotionLifecycle` is a pure state machine over those scores and
their times: one walk past the camera is one event, reported as ``new`` when it
starts, ``update`` while it lasts (at most every ``update_seconds``) and ``end``
with its duration, all three carrying the same ``event_id`` (each MQTT message
still gets its own ``id``).  :class:`MotionStateTopic` is the retained per-camera
``ON``/``OFF`` topic, published only while ``cloud_events`` is consented.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from agent.events import Event
from agent.minimise import uuid4_text
from agent.purposes import Purpose

Frame = npt.NDArray[np.uint8]


class MotionPhase(enum.Enum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


@dataclasses.dataclass(frozen=True)
class MotionSettings:
    pixel_threshold: int = 25
    area_threshold: float = 0.01
    background_rate: float = 0.05
    quiet_seconds: float = 1.0
    # At most one ``update`` per event this often (the ``end`` is never held back).
    update_seconds: float = 5.0
    # Motion that never stops (rain, a flag in the wind) is ended and begun anew this
    # often, so no event stays open for ever.
    max_event_seconds: float = 300.0


class MotionLifecycle:
    """Scores in, lifecycle events out: every ``new`` is followed by exactly one ``end``."""

    def __init__(
        self,
        camera: str,
        settings: MotionSettings | None = None,
        new_id: Callable[[], str] = uuid4_text,
    ) -> None:
        self.camera = camera
        self.settings = settings or MotionSettings()
        self.new_id = new_id
        self.event_id: str | None = None
        self._started = 0.0
        self._last_motion = 0.0
        self._last_report = 0.0
        self._peak = 0.0

    @property
    def active(self) -> bool:
        return self.event_id is not None

    def observe(self, score: float, now: float) -> list[Event]:
        """One frame's changed fraction at ``now``; the lifecycle events it causes."""
        settings = self.settings
        if score >= settings.area_threshold:
            if self.event_id is None:
                return [self._begin(score, now)]
            self._last_motion = now
            self._peak = max(self._peak, score)
            if now - self._started >= settings.max_event_seconds:
                return [self._finish(), self._begin(score, now)]
            if now - self._last_report >= settings.update_seconds:
                self._last_report = now
                return [self._event(MotionPhase.UPDATE, now - self._started)]
            return []
        if self.event_id is not None and now - self._last_motion >= settings.quiet_seconds:
            return [self._finish()]
        return []

    def expire(self, now: float, after: float) -> list[Event]:
        """No frame came: end an open event whose last motion is ``after`` seconds old.

        A camera that stops delivering (stream lost, file ended) must not leave an
        event open and the state ``ON`` for ever.
        """
        if self.event_id is not None and now - self._last_motion >= max(
            after, self.settings.quiet_seconds
        ):
            return [self._finish()]
        return []

    def _begin(self, score: float, now: float) -> Event:
        self.event_id = self.new_id()
        self._started = self._last_motion = self._last_report = now
        self._peak = score
        return self._event(MotionPhase.NEW, 0.0)

    def _finish(self) -> Event:
        event = self._event(MotionPhase.END, self._last_motion - self._started)
        self.event_id = None
        return event

    def _event(self, phase: MotionPhase, duration: float) -> Event:
        return Event(
            "motion",
            occurred_at=self._started,
            fields={
                "camera": self.camera,
                "phase": phase.value,
                "event_id": self.event_id,
                "area": round(self._peak, 4),
                "duration": round(duration, 2),
            },
        )


class MotionDetector:
    """Frames in, lifecycle events out: :meth:`changed_fraction` then the lifecycle."""

    def __init__(
        self,
        camera: str,
        settings: MotionSettings | None = None,
        new_id: Callable[[], str] = uuid4_text,
    ) -> None:
        self.camera = camera
        self.settings = settings or MotionSettings()
        self.lifecycle = MotionLifecycle(camera, self.settings, new_id)
        self._background: npt.NDArray[np.float32] | None = None
        self._previous: npt.NDArray[np.float32] | None = None

    @property
    def active(self) -> bool:
        return self.lifecycle.active

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

    def feed(self, grey: Frame, now: float) -> list[Event]:
        if grey.ndim != 2:
            raise ValueError("motion detection needs a single-channel frame")
        return self.lifecycle.observe(self.changed_fraction(grey), now)


class MotionStateTopic:
    """The retained ``camera/<name>/motion`` topic: ``ON``/``OFF`` while consented.

    Without ``cloud_events`` its payload is empty, which clears the retained
    message on the broker (on withdrawal, and at every connection until a grant).
    ``refresh`` runs once a pass; ``version`` changes whenever the payload does.
    """

    def __init__(self, camera: str, is_granted: Callable[[Purpose], bool]) -> None:
        self.topic = f"camera/{camera}/motion"
        self.is_granted = is_granted
        self.version = 0
        self._state: tuple[bool, bool] = (False, False)  # (granted, on)

    def refresh(self, on: bool) -> None:
        state = (self.is_granted(Purpose.CLOUD_EVENTS), on)
        if state != self._state:
            self._state = state
            self.version += 1

    def retained_messages(self) -> Mapping[str, bytes]:
        granted, on = self._state
        if not granted:
            return {self.topic: b""}
        return {self.topic: b"ON" if on else b"OFF"}
