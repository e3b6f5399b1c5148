"""The shared frame bus: one camera, several consumers (motion, faces, plates, QR).

The camera feature publishes each captured frame; every subscriber gets it
through its own cheap ``offer`` (usually a :class:`LatestFrame`, which keeps only
the newest), and does its work later in the main loop's tick, so a slow
consumer drops frames instead of falling behind or stalling capture.
Frames are opaque here: the core never looks inside them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

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
        self._subscribers: list[tuple[str, Callable[[Frame], object]]] = []

    def subscribe(self, name: str, offer: Callable[[Frame], object]) -> None:
        if any(existing == name for existing, _ in self._subscribers):
            raise ValueError(f"frame consumer {name!r} subscribed twice")
        self._subscribers.append((name, offer))

    @property
    def subscribers(self) -> list[str]:
        return [name for name, _ in self._subscribers]

    def publish(self, frame: Frame) -> None:
        for _, offer in self._subscribers:
            offer(frame)
