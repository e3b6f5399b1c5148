"""Interfaces between the pure core and the I/O edge (implemented in drivers/).

Features plug into the runtime through these: a :class:`Service` is started,
ticked from the main loop with the current time (returning the events it
produced), and stopped; MQTT commands are plain :data:`CommandHandler`
functions that return a reply body or an :class:`Outcome` carrying events;
personal data is reached through :class:`PersonalDataHolder`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from agent.events import Event

CommandArgs = Mapping[str, object]
CommandResult = Mapping[str, object]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A command's reply body plus what it caused: events to queue, retained topics to clear.

    The runtime commits the events to the outbox before it sends the reply.
    """

    result: CommandResult
    events: tuple[Event, ...] = ()
    clear_retained: tuple[str, ...] = ()


CommandHandler = Callable[[CommandArgs], "CommandResult | Outcome"]


class Clock(Protocol):
    """The one clock: wall time for records and events, monotonic time for intervals."""

    def now(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock NTP cannot step, for timeouts and liveness."""
        ...


class EventSink(Protocol):
    def emit(self, event: Event) -> bool:
        """Take ``event`` for the outbox; False if it was refused."""
        ...


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def tick(self, now: float) -> Sequence[Event]:
        """Do a bounded slice of work on the main loop; return the events it produced."""
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


@runtime_checkable
class Resealable(Protocol):
    """A holder whose data is sealed under data keys (agent.keystore): it can move it to the newest.

    ``reseal_personal_data()`` re-seals every blob not under its domain's current
    key and commits; a key rotation destroys the older keys only afterwards.
    """

    def reseal_personal_data(self) -> int: ...


class RetentionTarget(Protocol):
    """A store whose items expire after a configured age."""

    name: str

    def purge_older_than(self, cutoff: float) -> int:
        """Delete items created before ``cutoff`` (epoch seconds); return the count."""
        ...


class AuditSink(Protocol):
    """Append-only record of consent changes, exports, erasures, pulls, upgrades."""

    def record(self, kind: str, detail: Mapping[str, object], now: float) -> None: ...
