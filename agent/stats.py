"""Aggregated usage statistics: counts per event type over a period, nothing else.

No identifier, label, score or timestamp finer than the period leaves through
here.  Three rules keep the counts themselves from telling on anyone:

* an event is counted only while ``usage_statistics`` AND the event's own
  purpose are consented, at the moment it is observed (the sink shows every
  event to its observers before minimisation, so the aggregator asks itself);
* counts of a purpose withdrawn before the period closes are dropped, so no
  count of a withdrawn purpose leaves after the withdrawal;
* a count below ``min_count`` (k) is suppressed: "one face.match this hour"
  can single a person out, "at least k" cannot.

The statistics event is still sent only with ``usage_statistics`` consent
(the minimiser enforces that).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

from agent.errors import DecodeError
from agent.events import Event, SchemaCatalogue, schema
from agent.purposes import Purpose

STATS = schema(
    "stats",
    Purpose.USAGE_STATISTICS,
    ("period_start", "period_seconds", "counts", "uptime_seconds", "min_count"),
)

DEFAULT_MIN_COUNT = 5
PurposeOf = Callable[[str], "Purpose | None"]


def purposes_from(schemas: SchemaCatalogue) -> PurposeOf:
    """Each event type's purpose as its schema declares it (None: not a known type)."""

    def purpose_of(event_type: str) -> Purpose | None:
        try:
            return schemas.get(event_type).purpose
        except DecodeError:
            return None

    return purpose_of


def _nothing_granted(purpose: Purpose) -> bool:
    return not purpose.needs_consent


def _unknown(event_type: str) -> Purpose | None:
    return None


class StatisticsAggregator:
    name = "statistics"

    def __init__(
        self,
        period_seconds: int,
        started_at: float,
        *,
        is_granted: Callable[[Purpose], bool] = _nothing_granted,
        purpose_of: PurposeOf = _unknown,
        min_count: int = DEFAULT_MIN_COUNT,
    ) -> None:
        self.period = period_seconds
        self.started_at = started_at
        self.is_granted = is_granted
        self.purpose_of = purpose_of
        self.min_count = max(1, min_count)
        self._period_start = started_at // period_seconds * period_seconds
        self._counts: collections.Counter[str] = collections.Counter()
        self._purposes: dict[str, Purpose] = {}

    def observe(self, event: Event) -> None:
        if event.type == STATS.type or not self.is_granted(Purpose.USAGE_STATISTICS):
            return
        purpose = self.purpose_of(event.type)
        # An unknown type has no purpose anyone consented to: not counted.
        if purpose is None or not self.is_granted(purpose):
            return
        self._counts[event.type] += 1
        self._purposes[event.type] = purpose

    def start(self) -> None:
        return None

    def counts(self) -> dict[str, int]:
        """What the period's message would say now: consented, at least k each."""
        return {
            kind: count
            for kind, count in sorted(self._counts.items())
            if count >= self.min_count and self.is_granted(self._purposes[kind])
        }

    def tick(self, now: float) -> Sequence[Event]:
        if now < self._period_start + self.period:
            return ()
        summary = Event(
            "stats",
            occurred_at=self._period_start,
            fields={
                "period_start": int(self._period_start),
                "period_seconds": self.period,
                "counts": self.counts(),
                "uptime_seconds": int(now - self.started_at),
                "min_count": self.min_count,
            },
        )
        self._counts.clear()
        self._purposes.clear()
        self._period_start = now // self.period * self.period
        return (summary,)

    def stop(self) -> None:
        return None
