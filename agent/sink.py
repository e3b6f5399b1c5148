"""The event sink: minimise, then queue durably, in groups.

``emit`` minimises right away (so a refused purpose is never held anywhere)
and buffers the result; ``flush`` commits the buffer to the outbox in one
transaction, where the outbox checks consent once more inside that same
transaction.  The runtime flushes before every publish pass, so a message is
always on disk before it is offered to the broker, and one fsync covers many
events.

``commit`` is the path of anything that answers a requester: it commits the
given events (with the buffer, in the same transaction) *now* and says whether
they are durable, so a command hears ``ok`` only after its events are on disk.
Events that fail to commit there are not kept for later: their requester is
told ``unavailable`` and may try again, and an event delivered after such an
answer would be a second, unasked-for copy.

While the storage guard says the disk is full, every new event but the
device's own status is refused and counted (it was never accepted, so it is
not lost); a command that would queue one hears ``unavailable``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence

from agent.database import StorageIOError
from agent.errors import BadDataError
from agent.events import Event
from agent.minimise import Minimiser, OutgoingMessage
from agent.outbox import Outbox
from agent.purposes import Purpose
from agent.topics import Topics

log = logging.getLogger(__name__)

# One line per kind of storage failure at most this often (the count of the rest goes with it).
FAILURE_LOG_SECONDS = 60.0
FULL_MESSAGE = "storage full: the device cannot store new events now; try again later"


class OutboxSink:
    def __init__(
        self,
        minimiser: Minimiser,
        outbox: Outbox,
        topics: Topics,
        *,
        max_buffer: int = 1000,
        observers: tuple[Callable[[Event], None], ...] = (),
    ) -> None:
        self.minimiser = minimiser
        self.outbox = outbox
        self.storage = outbox.storage
        self.topics = topics
        self.max_buffer = max_buffer
        self.observers = observers
        self._buffer: list[tuple[str, OutgoingMessage]] = []
        self._lock = threading.Lock()
        self.refused = 0
        self.invalid = 0
        self.dropped_overflow = 0
        self._failures_logged_at: dict[str, float] = {}
        self._failures_quiet: dict[str, int] = {}

    # --- taking events ------------------------------------------------------------------

    def _minimise(self, event: Event) -> OutgoingMessage | None:
        for observer in self.observers:
            observer(event)
        try:
            message = self.minimiser.minimise(event)
        except BadDataError as exc:
            self.invalid += 1
            log.warning("dropping invalid %s event: %s", event.type, exc)
            return None
        if message is None:
            self.refused += 1
        return message

    def _no_room_for(self, message: OutgoingMessage) -> bool:
        # The device's own state is always taken: it is small and what the reserve is for.
        return (
            self.storage is not None
            and self.storage.full
            and message.purpose is not Purpose.DEVICE_OPERATION
        )

    def emit(self, event: Event) -> bool:
        message = self._minimise(event)
        if message is None:
            return False
        if self._no_room_for(message):
            assert self.storage is not None
            self.storage.refused += 1
            return False
        with self._lock:
            self._buffer.append((self.topics.event(event.type), message))
            full = len(self._buffer) >= self.max_buffer
        if full:
            try:
                self.flush(event.occurred_at)
            except Exception as exc:
                # Kept in the buffer for the next pass; reported, never raised at a producer.
                if not self.storage_failure(exc, event.occurred_at):
                    raise
        return True

    def commit(self, events: Sequence[Event], now: float) -> str | None:
        """Commit ``events`` now, with the buffer; None when durable, else why not."""
        messages: list[tuple[str, OutgoingMessage]] = []
        for event in events:
            message = self._minimise(event)
            if message is None:
                continue
            if self._no_room_for(message):
                assert self.storage is not None
                self.storage.refused += len(events)
                return FULL_MESSAGE
            messages.append((self.topics.event(event.type), message))
        with self._lock:
            pending, self._buffer = self._buffer, []
        try:
            result = self.outbox.put_many([*pending, *messages], now)
        except Exception as exc:
            self._requeue(pending)
            self._tell_storage(exc, now)
            if not self.storage_failure(exc, now):
                raise
            return FULL_MESSAGE if self.storage is not None and self.storage.full else (
                "the device could not store this command's events; try again later"
            )
        self.refused += result.refused
        self.dropped_overflow += result.dropped
        return None

    def flush(self, now: float) -> int:
        """Commit the buffer in one transaction; the outbox checks consent at its door."""
        with self._lock:
            pending, self._buffer = self._buffer, []
        if not pending:
            return 0
        try:
            result = self.outbox.put_many(pending, now)
        except Exception as exc:
            # Nothing was committed: keep the events for the next flush.
            self._requeue(pending)
            self._tell_storage(exc, now)
            raise
        self.refused += result.refused
        self.dropped_overflow += result.dropped
        return result.queued

    def _requeue(self, pending: list[tuple[str, OutgoingMessage]]) -> None:
        with self._lock:
            self._buffer[:0] = pending
            excess = len(self._buffer) - self.max_buffer
            if excess > 0:
                del self._buffer[:excess]
                self.dropped_overflow += excess

    # --- storage upkeep and failures --------------------------------------------------------

    def maintain(self, now: float) -> None:
        """The storage guard's pass; what it finds goes out as device.status events."""
        if self.storage is None:
            return
        try:
            events = self.storage.maintain(now)
        except Exception as exc:
            if not self.storage_failure(exc, now):
                raise
            return
        for event in events:
            self.emit(event)

    def _tell_storage(self, exc: BaseException, now: float) -> None:
        if self.storage is None:
            return
        for event in self.storage.on_write_error(exc, now):
            message = self._minimise(event)
            if message is not None:
                with self._lock:
                    self._buffer.append((self.topics.event(event.type), message))

    def storage_failure(self, exc: BaseException, now: float) -> bool:
        """Report a storage error in one line (rate limited); False if ``exc`` is not one.

        A full or failing disk makes every pass fail the same way: a traceback
        each time would bury the one line that says what is wrong.
        """
        if not isinstance(exc, StorageIOError | sqlite3.Error):
            return False
        self.outbox.db.note_error(exc)
        kind = type(exc.__cause__ or exc).__name__
        last = self._failures_logged_at.get(kind)
        if last is not None and now - last < FAILURE_LOG_SECONDS:
            self._failures_quiet[kind] = self._failures_quiet.get(kind, 0) + 1
            return True
        quiet = self._failures_quiet.pop(kind, 0)
        self._failures_logged_at[kind] = now
        more = f" ({quiet} more like it since the last report)" if quiet else ""
        log.error("EA-DB-004 storage: %s%s", str(exc).splitlines()[0][:300], more)
        return True
