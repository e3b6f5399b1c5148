"""Interfaces between the pure core and the I/O edge (implemented in drivers/).

Feature packages plug into the runtime through these: a :class:`Service` is
started, ticked from the main loop with the current time, and stopped; MQTT
commands are handled by functions registered on a :class:`CommandRegistry`;
events leave through an :class:`EventSink` (minimiser -> outbox -> broker).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from agent.events import Event

CommandArgs = Mapping[str, object]
CommandResult = Mapping[str, object]
CommandHandler = Callable[[CommandArgs], CommandResult]


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float: ...


class EventSink(Protocol):
    def emit(self, event: Event) -> bool:
        """Minimise, encode and queue ``event``; False if its purpose is not consented."""
        ...


class CommandRegistry(Protocol):
    def register(self, name: str, handler: CommandHandler) -> None:
        """Route the MQTT command ``name`` (e.g. ``data.export``) to ``handler``.

        The handler gets the decoded, size-capped ``args`` map and returns the
        reply body.  It raises BadDataError for bad arguments (the caller gets an
        error reply); it never sees transport details.
        """
        ...


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def tick(self, now: float) -> None:
        """Do a bounded slice of work; called from the main loop."""
        ...

    def stop(self) -> None: ...


class PersonalDataHolder(Protocol):
    """A store that holds personal data: it can export and erase all of it."""

    name: str

    def export_personal_data(self) -> Mapping[str, object]:
        """Every personal item held, as CBOR/JSON-able plain values."""
        ...

    def erase_personal_data(self) -> int:
        """Erase every personal item (overwriting, not just unlinking); return the count."""
        ...


class RetentionTarget(Protocol):
    """A store whose items expire after a configured age."""

    name: str

    def purge_older_than(self, cutoff: float) -> int:
        """Delete items created before ``cutoff`` (epoch seconds); return the count."""
        ...


class AuditSink(Protocol):
    """Append-only record of consent changes, exports, erasures, pulls, upgrades."""

    def record(self, kind: str, detail: Mapping[str, object], now: float) -> None: ...
