"""The typed event model and the schema of every event type the agent emits.

An :class:`Event` is what a feature produces (a face matched, a plate seen, an
upgrade step).  Before anything leaves the device the minimiser
(:mod:`agent.minimise`) keeps only the fields its :class:`EventSchema` allows,
pseudonymises the identifier fields and drops the image unless snapshots are
consented.  A feature adding an event type adds its schema to ``SCHEMAS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from agent.errors import DecodeError
from agent.purposes import Purpose

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EventSchema:
    type: str
    purpose: Purpose
    # Plain fields the receiver needs for this purpose; anything else is dropped.
    fields: frozenset[str]
    # Identifier fields, replaced by HMAC pseudonyms under the purpose's key.
    identifiers: frozenset[str] = frozenset()
    # Whether an image may ever be attached (still only with event_snapshots).
    may_carry_image: bool = False


def _schema(
    type_: str,
    purpose: Purpose,
    fields: tuple[str, ...],
    identifiers: tuple[str, ...] = (),
    *,
    image: bool = False,
) -> EventSchema:
    return EventSchema(type_, purpose, frozenset(fields), frozenset(identifiers), image)


SCHEMAS: dict[str, EventSchema] = {
    s.type: s
    for s in (
        _schema(
            "face.match",
            Purpose.FACE_RECOGNITION,
            ("score", "label", "known", "track_id", "camera"),
            ("person_id",),
            image=True,
        ),
        _schema(
            "plate.match",
            Purpose.PLATE_RECOGNITION,
            ("score", "label", "list", "distance", "camera"),
            ("plate",),
            image=True,
        ),
        _schema("motion", Purpose.CLOUD_EVENTS, ("camera", "area", "duration"), image=True),
        _schema(
            "stats",
            Purpose.USAGE_STATISTICS,
            ("period_start", "period_seconds", "counts", "uptime_seconds"),
        ),
        _schema(
            "upgrade.state",
            Purpose.DEVICE_OPERATION,
            ("state", "version", "sequence", "received", "total", "reason"),
        ),
        _schema("device.status", Purpose.DEVICE_OPERATION, ("state", "version", "detail")),
    )
}


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    occurred_at: float
    fields: Mapping[str, object] = dataclasses.field(default_factory=dict)
    identifiers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    image: bytes | None = None
    # Retention/expiry of the queued message; None means the outbox default.
    expiry_seconds: int | None = None

    @property
    def schema(self) -> EventSchema:
        return schema_for(self.type)

    @property
    def purpose(self) -> Purpose:
        return self.schema.purpose


def schema_for(event_type: str) -> EventSchema:
    try:
        return SCHEMAS[event_type]
    except KeyError:
        raise DecodeError(f"unknown event type {event_type[:40]!r}") from None
