"""The real clock, for the parts of the core that take an ``agent.ports.Clock``."""

from __future__ import annotations

import time


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
