"""The event sink: minimise, then queue durably, in groups.

``emit`` minimises right away (so a refused purpose is never held anywhere)
and buffers the result; ``flush`` commits the buffer to the outbox in one
transaction.  The runtime flushes before every publish pass, so a message is
always on disk before it is offered to the broker, and one fsync covers many
events.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from agent.errors import BadDataError
from agent.events import Event
from agent.minimise import Minimiser, OutgoingMessage, strip_image
from agent.outbox import Outbox
from agent.purposes import Purpose
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
        refresh_consent: Callable[[], None] = lambda: None,
    ) -> None:
        self.minimiser = minimiser
        self.outbox = outbox
        self.topics = topics
        self.max_buffer = max_buffer
        self.observers = observers
        self.refresh_consent = refresh_consent
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
        with self._lock:
            pending, self._buffer = self._buffer, []
        # Consent may have been withdrawn since emit(), even by another process:
        # read the ledger again and check at the door.
        self.refresh_consent()
        allowed = [(t, m) for t, m in pending if self.minimiser.is_granted(m.purpose)]
        self.refused += len(pending) - len(allowed)
        if not self.minimiser.is_granted(Purpose.EVENT_SNAPSHOTS):
            allowed = [(t, _without_image(m)) for t, m in allowed]
        if allowed:
            try:
                self.dropped_overflow += self.outbox.put_many(allowed, now)
            except Exception:
                # Nothing was committed: keep the events for the next flush.
                self._requeue(allowed)
                raise
        return len(allowed)

    def _requeue(self, pending: list[tuple[str, OutgoingMessage]]) -> None:
        with self._lock:
            self._buffer[:0] = pending
            excess = len(self._buffer) - self.max_buffer
            if excess > 0:
                del self._buffer[:excess]
                self.dropped_overflow += excess


def _without_image(message: OutgoingMessage) -> OutgoingMessage:
    if not message.has_image:
        return message
    stripped = strip_image(message.payload)
    payload = message.payload if stripped is None else stripped
    return dataclasses.replace(message, payload=payload, has_image=False)
