"""The event sink: minimise, then queue durably, in groups.

``emit`` minimises right away (so a refused purpose is never held anywhere)
and buffers the result; ``flush`` commits the buffer to the outbox in one
transaction, where the outbox checks consent once more inside that same
transaction.  The runtime flushes before every publish pass, so a message is
always on disk before it is offered to the broker, and one fsync covers many
events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.errors import BadDataError
from agent.events import Event
from agent.minimise import Minimiser, OutgoingMessage
from agent.outbox import Outbox
from agent.topics import Topics

log = logging.getLogger(__name__)


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
        self.topics = topics
        self.max_buffer = max_buffer
        self.observers = observers
        self._buffer: list[tuple[str, OutgoingMessage]] = []
        self._lock = threading.Lock()
        self.refused = 0
        self.invalid = 0
        self.dropped_overflow = 0

    def emit(self, event: Event) -> bool:
        for observer in self.observers:
            observer(event)
        try:
            message = self.minimiser.minimise(event)
        except BadDataError as exc:
            self.invalid += 1
            log.warning("dropping invalid %s event: %s", event.type, exc)
            return False
        if message is None:
            self.refused += 1
            return False
        with self._lock:
            self._buffer.append((self.topics.event(event.type), message))
            full = len(self._buffer) >= self.max_buffer
        if full:
            self.flush(event.occurred_at)
        return True

    def flush(self, now: float) -> int:
        """Commit the buffer in one transaction; the outbox checks consent at its door."""
        with self._lock:
            pending, self._buffer = self._buffer, []
        if not pending:
            return 0
        try:
            result = self.outbox.put_many(pending, now)
        except Exception:
            # Nothing was committed: keep the events for the next flush.
            self._requeue(pending)
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

