"""Clocks for tests: the agent reads time only through ``agent.ports.Clock``."""

from __future__ import annotations

import time


class FixedClock:
    """Wall time set by the test; monotonic time follows it (never steps back on its own)."""

    def __init__(self, now: float) -> None:
        self.wall = now

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall


class SteppedWallClock:
    """A wall clock the test can step (as NTP does); monotonic time is the real one."""

    def __init__(self, now: float) -> None:
        self.wall = now

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return time.monotonic()
