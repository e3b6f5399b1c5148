"""Moves committed outbox messages to the broker and deletes them on PUBACK.

Pure logic: the MQTT specifics live behind :class:`Transport` (drivers/mqtt.py).
Within one connection the pump walks the outbox in order with a cursor.  The
transport keeps at most ``window`` messages in flight on the wire (paho's
``max_inflight_messages``); the pump hands it up to ``ahead`` more, which wait
in paho's queue, so paho's own thread refills the wire on each PUBACK while
the main loop is busy elsewhere (an fsync'd commit takes milliseconds).  Each
new connection starts the walk again from the oldest message, because anything
not acknowledged may not have arrived; receivers drop the repeats by message id.

Deleting acknowledged messages is batched (group commit of acks): a delete
lost to a crash only means that message goes again, which at-least-once
delivery already allows, whereas one fsync'd commit per handful of PUBACKs
was the largest wall-clock cost of the event path (issue 12).  Acks are
committed when ``ack_batch`` are pending, when the oldest has waited
``ack_delay`` seconds, when nothing is in flight any more (a quiet link or a
shutdown draining its window), and always before a new connection restarts
the walk, so an acknowledged message is never offered twice on purpose.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Protocol

from agent.errors import TransportError
from agent.outbox import Outbox

# PUBACK reason codes that will fail the same way again (MQTT v5 3.4.2.1).
PERMANENT_REJECTIONS = frozenset({0x87, 0x90, 0x95, 0x99})
EXPIRE_EVERY_SECONDS = 60.0
ACK_BATCH = 1000
ACK_DELAY_SECONDS = 0.2

log = logging.getLogger(__name__)


class Transport(Protocol):
    @property
    def connected(self) -> bool: ...

    def publish_queued(
        self, topic: str, payload: bytes, purpose: str, msg_id: str, expires_in: int
    ) -> int:
        """Publish at QoS 1; return the token later passed to ``Pump.on_ack``."""
        ...


@dataclasses.dataclass
class _InFlight:
    msg_id: str
    seq: int


class Pump:
    def __init__(
        self,
        outbox: Outbox,
        *,
        window: int,
        batch: int,
        ahead: int | None = None,
        ack_batch: int = ACK_BATCH,
        ack_delay: float = ACK_DELAY_SECONDS,
    ) -> None:
        self.outbox = outbox
        self.window = window
        self.batch = batch
        # Handed over beyond the window; a client torn down takes them along, and
        # they are still in the outbox for the next connection's walk.
        self.ahead = window if ahead is None else ahead
        self.ack_batch = ack_batch
        self.ack_delay = ack_delay
        # Acknowledged by the broker, not yet deleted from the outbox.
        self._acked: list[str] = []
        self._acked_since: float | None = None
        self._inflight: dict[int, _InFlight] = {}
        self._cursor = 0
        self._session = 0
        self._acks: collections.deque[tuple[int, int, int]] = collections.deque()
        # A wake was asked for these acks; cleared when the loop drains them.
        self._wake_asked = False
        self._lock = threading.Lock()
        self._next_expiry = 0.0
        self.published = 0
        self.rejected = 0

    # Called from the transport's thread.
    def on_ack(self, session: int, token: int, reason_code: int) -> bool:
        """Queue a PUBACK; True when the main loop should wake for it.

        Each loop pass has a fixed cost, so the loop wakes once a quarter of the
        window is acknowledged or everything in flight is, and once per drain, not
        on every PUBACK (unlocked reads: a stale answer costs one early wake or one
        tick's delay, never a lost acknowledgement).
        """
        self._acks.append((session, token, reason_code))
        if self._wake_asked:
            return False
        pending = len(self._acks)
        if pending >= max(1, self.window // 4) or pending >= len(self._inflight):
            self._wake_asked = True
            return True
        return False

    def on_connected(self) -> int:
        """A new connection: restart the walk; returns the session number for acks."""
        with self._lock:
            # PUBACKs that arrived before this point belong to the old session's
            # in-flight map: apply them now rather than publish those messages again.
            try:
                self._drain_acks()
                self._commit_acks()
            except Exception:  # paho's thread: at worst those messages go again
                log.exception("could not apply the last session's acknowledgements")
            self._session += 1
            self._cursor = 0
            self._inflight.clear()
            return self._session

    @property
    def session(self) -> int:
        return self._session

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def pending_acks(self) -> int:
        """Acknowledged messages whose delete is not committed yet."""
        return len(self._acked)

    def _drain_acks(self) -> None:
        # Cleared before popping: an ack landing meanwhile may ask again (one spare wake).
        self._wake_asked = False
        done = self._acked
        while self._acks:
            session, token, reason = self._acks.popleft()
            if session != self._session:
                continue
            entry = self._inflight.pop(token, None)
            if entry is None:
                continue
            if reason < 0x80:
                done.append(entry.msg_id)
            elif reason in PERMANENT_REJECTIONS:
                self.rejected += 1
                done.append(entry.msg_id)
            # Other failures stay queued and go again on the next connection.

    def _commit_acks(self) -> None:
        # The list is emptied only once the delete committed: a failed commit retries.
        if self._acked:
            self.outbox.ack_many(self._acked)
            self._acked = []
        self._acked_since = None

    def _acks_due(self, now: float) -> bool:
        if not self._acked:
            return False
        if self._acked_since is None:
            self._acked_since = now
        # A clock stepped backwards counts as due rather than postponing forever.
        age = now - self._acked_since
        return len(self._acked) >= self.ack_batch or not 0 <= age < self.ack_delay

    def tick(self, transport: Transport, now: float) -> int:
        """Acknowledge, expire and publish; returns how many messages were sent."""
        with self._lock:
            self._drain_acks()
            if self._acks_due(now):
                self._commit_acks()
            if now >= self._next_expiry:
                self.outbox.expire(now)
                self._next_expiry = now + EXPIRE_EVERY_SECONDS
            sent = self._publish(transport, now)
            self.published += sent
            if self._acked and (not self._inflight or not transport.connected):
                # Nothing left to overlap the fsync with: delete what is acknowledged now.
                self._commit_acks()
            return sent

    def _publish(self, transport: Transport, now: float) -> int:
        sent = 0
        limit = self.window + self.ahead
        while transport.connected and len(self._inflight) < limit:
            room = min(limit - len(self._inflight), self.batch)
            batch = self.outbox.batch_after(self._cursor, room, now)
            if not batch:
                break
            for message in batch:
                self._cursor = message.seq
                try:
                    token = transport.publish_queued(
                        message.topic,
                        message.payload,
                        message.purpose,
                        message.msg_id,
                        max(1, int(message.expires_at - now)),
                    )
                except TransportError:
                    self._cursor = message.seq - 1
                    return sent
                # What ack_many() deletes by: the msg_id, or a sealed row's keyed tag.
                self._inflight[token] = _InFlight(message.ack_key, message.seq)
                sent += 1
        return sent
