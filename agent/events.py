"""The typed event model and the schema of every event type the agent emits.

An :class:`Event` is what a feature produces (a face matched, a plate seen, an
upgrade step).  Before anything leaves the device the minimiser
(:mod:`agent.minimise`) keeps only the fields its :class:`EventSchema` allows,
pseudonymises the identifier fields and drops the image unless snapshots are
consented.  A feature adding an event type declares its schema in its
``Feature.event_schemas``; the composition root gathers them in a
:class:`SchemaCatalogue` for the minimiser.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Iterable, Mapping

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


def schema(
    type_: str,
    purpose: Purpose,
    fields: tuple[str, ...],
    identifiers: tuple[str, ...] = (),
    *,
    image: bool = False,
) -> EventSchema:
    return EventSchema(type_, purpose, frozenset(fields), frozenset(identifiers), image)


# The spine's own event; every feature declares its own schemas (``Feature.event_schemas``).
DEVICE_STATUS = schema("device.status", Purpose.DEVICE_OPERATION, ("state", "version", "detail"))


class SchemaCatalogue:
    """The event types this agent emits, gathered from the features that declare them."""

    def __init__(self, schemas: Iterable[EventSchema]) -> None:
        self._schemas: dict[str, EventSchema] = {}
        for item in schemas:
            if item.type in self._schemas:
                raise ValueError(f"event type {item.type!r} declared twice")
            self._schemas[item.type] = item

    def get(self, event_type: str) -> EventSchema:
        try:
            return self._schemas[event_type]
        except KeyError:
            raise DecodeError(f"unknown event type {event_type[:40]!r}") from None

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._schemas

    @property
    def types(self) -> list[str]:
        return sorted(self._schemas)


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    occurred_at: float
    fields: Mapping[str, object] = dataclasses.field(default_factory=dict)
    identifiers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    image: bytes | None = None
    # Retention/expiry of the queued message; None means the outbox default.
    expiry_seconds: int | None = None


class PendingEvents:
    """Events produced on a worker thread, handed to the main loop by a service's ``tick``.

    Bounded: a worker that outruns the loop loses the oldest progress reports,
    never memory.
    """

    def __init__(self, capacity: int = 256) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def emit(self, event: Event) -> bool:
        with self._lock:
            self._events.append(event)
        return True

    def drain(self) -> list[Event]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events
