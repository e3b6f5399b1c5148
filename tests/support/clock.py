"""Clocks for tests: the agent reads time only through ``agent.ports.Clock``."""

from __future__ import annotations

import threading
import time


class FixedClock:
    """Wall time set by the test; monotonic time follows it (never steps back on its own)."""

    def __init__(self, now: float) -> None:
        self.wall = now

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall


class ManualClock:
    """Wall time the test moves forward by hand; monotonic time follows it.

    Safe to read from several threads (HTTP handlers, worker pools).
    """

    def __init__(self, now: float) -> None:
        self._wall = now
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> float:
        """Move time on by ``seconds``; return the new wall time."""
        with self._lock:
            self._wall += seconds
            return self._wall


class SteppedWallClock:
    """A wall clock the test can step (as NTP does); monotonic time is the real one."""

    def __init__(self, now: float) -> None:
        self.wall = now

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return time.monotonic()
