"""Retention: items older than their kind's configured period are purged.

:class:`RetentionService` is an :class:`agent.ports.Service`: the main loop
ticks it with ``now`` and it runs a purge pass every
``purge_interval_seconds`` (and on the first tick), over every registered
:class:`~agent.ports.RetentionTarget`.  Each pass yields a
:class:`RetentionReport` saying what was purged where.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from agent.errors import EdgeAgentError
from agent.events import Event, SchemaCatalogue
from agent.logs import codes
from agent.logs.settings import RetentionSettings
from agent.ports import AuditSink
from agent.rights.registry import DataRegistry, RetentionKind

log = logging.getLogger(__name__)
DAY = 86400.0


def period_seconds(settings: RetentionSettings, kind: RetentionKind) -> float:
    days = {
        RetentionKind.SNAPSHOTS: settings.snapshots_days,
        RetentionKind.EVENTS: settings.events_days,
        RetentionKind.LOGS: settings.logs_days,
        RetentionKind.MATCH_HISTORY: settings.match_history_days,
    }[kind]
    return days * DAY


def expiry_caps(settings: RetentionSettings, schemas: SchemaCatalogue) -> dict[str, int]:
    """The longest a broker may keep an event of each purpose: what the device may keep it.

    An event the device would have purged must not wait at the broker for an
    offline subscriber any longer (MQTT v5 message expiry).  A purpose whose
    events may carry a snapshot gets the shorter of the event and snapshot
    periods: which events do carry one is not known when the message is sent.
    Purposes that need no consent carry nothing personal and get no cap.
    """
    caps: dict[str, int] = {}
    for event_type in schemas.types:
        declared = schemas.get(event_type)
        if not declared.purpose.needs_consent:
            continue
        cap = settings.events_days * DAY
        if declared.may_carry_image:
            cap = min(cap, settings.snapshots_days * DAY)
        key = declared.purpose.value
        caps[key] = int(min(cap, caps.get(key, cap)))
    return caps


@dataclasses.dataclass(frozen=True)
class PurgeLine:
    target: str
    kind: str
    cutoff: float
    purged: int
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class RetentionReport:
    ran_at: float
    lines: tuple[PurgeLine, ...]

    @property
    def total(self) -> int:
        return sum(line.purged for line in self.lines)

    def as_mapping(self) -> dict[str, object]:
        return {
            "ran_at": self.ran_at,
            "total": self.total,
            "targets": [dataclasses.asdict(line) for line in self.lines],
        }


def purge(registry: DataRegistry, settings: RetentionSettings, now: float) -> RetentionReport:
    lines = []
    for entry in registry.targets:
        cutoff = now - period_seconds(settings, entry.kind)
        try:
            purged = entry.target.purge_older_than(cutoff)
            lines.append(PurgeLine(entry.target.name, entry.kind.value, cutoff, purged))
        except EdgeAgentError as exc:
            log.error("retention purge of %s failed: %s", entry.target.name, exc,
                      extra=codes.RETENTION_FAILED.extra())
            lines.append(
                PurgeLine(entry.target.name, entry.kind.value, cutoff, 0, type(exc).__name__)
            )
    return RetentionReport(now, tuple(lines))


class RetentionService:
    name = "retention"

    def __init__(
        self,
        registry: DataRegistry,
        settings: RetentionSettings,
        *,
        audit: AuditSink | None = None,
        on_report: Callable[[RetentionReport], None] | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._audit = audit
        self._on_report = on_report
        self._next_run: float | None = None
        self.last_report: RetentionReport | None = None

    def start(self) -> None:
        self._next_run = None

    def run_now(self, now: float) -> RetentionReport:
        report = purge(self._registry, self._settings, now)
        self.last_report = report
        self._next_run = now + self._settings.purge_interval_seconds
        if report.total:
            log.info("retention purged %d items", report.total)
        if self._audit is not None and report.total:
            self._audit.record(
                "retention.purge",
                {line.target: line.purged for line in report.lines if line.purged},
                now,
            )
        if self._on_report is not None:
            self._on_report(report)
        return report

    def tick(self, now: float) -> Sequence[Event]:
        if self._next_run is None or now >= self._next_run:
            self.run_now(now)
        return ()

    def stop(self) -> None:
        self._next_run = None
