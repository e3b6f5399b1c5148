"""The shared frame bus: cameras publish, several consumers (motion, faces, plates, QR) take.

A camera feature publishes each captured frame with the name of the camera it
came from (:data:`agent.camera.events.CAMERA_NAME` for the one camera of a
plain device, the ``[[camera.sources]]`` name on a hub).  Every subscriber gets
it through its own cheap ``offer`` (usually a :class:`LatestFrame`, which keeps
only the newest), and does its work later in the main loop's tick, so a slow
consumer drops frames instead of falling behind or stalling capture.

Consumers whose events name the camera (faces, plates) subscribe with
:meth:`FrameBus.subscribe_camera` and are offered ``(frame, camera)``; those
that do not care where a frame came from (QR provisioning) keep
:meth:`FrameBus.subscribe` and are offered the frame alone.
Frames are opaque here: the core never looks inside them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from agent.camera.events import CAMERA_NAME

Frame = TypeVar("Frame")


class LatestFrame(Generic[Frame]):
    """Keeps only the newest frame: for consumers that never need a backlog."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._lock = threading.Lock()

    def offer(self, frame: Frame) -> None:
        with self._lock:
            self._frame = frame

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._frame = self._frame, None
        return frame


class FrameBus(Generic[Frame]):
    def __init__(self) -> None:
        self._subscribers: list[tuple[str, Callable[[Frame, str], object]]] = []

    def subscribe(self, name: str, offer: Callable[[Frame], object]) -> None:
        """``offer(frame)`` for every frame, whichever camera it came from."""
        self.subscribe_camera(name, lambda frame, _camera: offer(frame))

    def subscribe_camera(self, name: str, offer: Callable[[Frame, str], object]) -> None:
        """``offer(frame, camera)`` for every frame, with the name of its camera."""
        if any(existing == name for existing, _ in self._subscribers):
            raise ValueError(f"frame consumer {name!r} subscribed twice")
        self._subscribers.append((name, offer))

    @property
    def subscribers(self) -> list[str]:
        return [name for name, _ in self._subscribers]

    def publish(self, frame: Frame, camera: str = CAMERA_NAME) -> None:
        for _, offer in self._subscribers:
            offer(frame, camera)
