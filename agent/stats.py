"""Aggregated usage statistics: counts per event type over a period, nothing else.

No identifier, label, score or timestamp finer than the period leaves through
here, so the statistics carry no personal data; they are still sent only with
``usage_statistics`` consent (the minimiser enforces that).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from agent.events import Event, schema
from agent.purposes import Purpose

STATS = schema(
    "stats",
    Purpose.USAGE_STATISTICS,
    ("period_start", "period_seconds", "counts", "uptime_seconds"),
)


class StatisticsAggregator:
    name = "statistics"

    def __init__(self, period_seconds: int, started_at: float) -> None:
        self.period = period_seconds
        self.started_at = started_at
        self._period_start = started_at // period_seconds * period_seconds
        self._counts: collections.Counter[str] = collections.Counter()

    def observe(self, event: Event) -> None:
        if event.type != "stats":
            self._counts[event.type] += 1

    def start(self) -> None:
        return None

    def tick(self, now: float) -> Sequence[Event]:
        if now < self._period_start + self.period:
            return ()
        summary = Event(
            "stats",
            occurred_at=self._period_start,
            fields={
                "period_start": int(self._period_start),
                "period_seconds": self.period,
                "counts": dict(sorted(self._counts.items())),
                "uptime_seconds": int(now - self.started_at),
            },
        )
        self._counts.clear()
        self._period_start = now // self.period * self.period
        return (summary,)

    def stop(self) -> None:
        return None
