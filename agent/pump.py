"""Moves committed outbox messages to the broker and deletes them on PUBACK.

Pure logic: the MQTT specifics live behind :class:`Transport` (drivers/mqtt.py).
Within one connection the pump walks the outbox in order with a cursor.  The
pump itself holds the window: at most ``window`` messages on the wire (the
client library's own limit is off, because it rescans its whole message table
on every PUBACK).  Up to ``ahead`` more are read from the outbox and wait in
the pump's queue; :meth:`Pump.refill`, called from the transport's thread on
each PUBACK, sends the next one at once, so the wire stays full while the main
loop is busy elsewhere (an fsync'd commit takes milliseconds).  Messages leave
strictly in queue order: only one thread sends at a time, and the transport's
thread, rather than wait for the main loop, leaves the sending to it.  Each new
connection starts the walk again from the oldest message, because anything not
acknowledged may not have arrived; receivers drop the repeats by message id.

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
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from agent.errors import TransportError
from agent.outbox import Outbox, QueuedMessage

# PUBACK reason codes that will fail the same way again (MQTT v5 3.4.2.1).
PERMANENT_REJECTIONS = frozenset({0x87, 0x90, 0x95, 0x99})
EXPIRE_EVERY_SECONDS = 60.0
ACK_BATCH = 1000
ACK_DELAY_SECONDS = 0.2
# Plaintext of committed messages kept for the walk (write-through); beyond it, the
# walk reads the outbox.
STAGE_BYTES = 4 * 1024 * 1024

log = logging.getLogger(__name__)


class Transport(Protocol):
    @property
    def connected(self) -> bool: ...

    def publish_queued(
        self,
        topic: str,
        payload: bytes,
        purpose: str,
        msg_id: str,
        expires_in: int,
        *,
        json: Callable[[], bytes] | None = None,
    ) -> int:
        """Publish at QoS 1; return the token later passed to ``Pump.on_ack``.

        ``json`` renders ``payload`` as JSON without decoding it, when the outbox
        could (see :class:`~agent.outbox.QueuedMessage`); a JSON link uses it.
        """
        ...


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
        # Read from the outbox beyond the window; dropped on a new connection (still
        # in the outbox for that connection's walk).
        self.ahead = window if ahead is None else ahead
        self.ack_batch = ack_batch
        self.ack_delay = ack_delay
        # This connection's window: ``window``, or less if the broker receives fewer.
        self._limit = window
        # Acknowledged by the broker, not yet deleted from the outbox.
        self._acked: list[str] = []
        self._acked_since: float | None = None
        # Token -> ack key (what ack_many() deletes by) of what this connection sent.
        self._inflight: dict[int, str] = {}
        self._cursor = 0
        self._session = 0
        self._acks: collections.deque[tuple[int, int, int]] = collections.deque()
        # A wake was asked for these acks; cleared when the loop drains them.
        self._wake_asked = False
        # The main loop's pass (cursor, acks, commits).
        self._lock = threading.Lock()
        # Sending: the queue read ahead and the counters below change only under it.
        self._send_lock = threading.Lock()
        self._queue: collections.deque[QueuedMessage] = collections.deque()
        # Committed messages handed over by the outbox (offer), in sequence order.
        self._staged: collections.deque[QueuedMessage] = collections.deque()
        self._staged_bytes = 0
        # Wall time of the last pass, for the expiry of what refill() sends meanwhile.
        self._now = 0.0
        # On this connection, QoS 1 messages sent (under _send_lock; replies too,
        # see sent_elsewhere) and PUBACKs seen (the transport's thread alone):
        # their difference is what is on the wire.
        self._sent = 0
        self._answered = 0
        self._sent_total = 0
        self._next_expiry = 0.0
        self.rejected = 0

    def offer(self, committed: list[QueuedMessage]) -> bool:
        """Messages just committed, as they go on the wire (write-through from the outbox).

        Kept in memory, up to ``STAGE_BYTES``, so the walk need not read back and
        unseal what the outbox was just handed; :meth:`_publish` takes them only
        when they follow its cursor exactly, and only those still in the outbox
        (one range query: a withdrawal, an expiry or a drop since is honoured).
        """
        if not committed:
            return False
        with self._lock:
            staged = self._staged
            if staged and committed[0].seq != staged[-1].seq + 1:
                staged.clear()
                self._staged_bytes = 0
            size = sum(len(m.payload) for m in committed)
            if self._staged_bytes + size > STAGE_BYTES:
                return False  # the walk reads them from the outbox, as before
            staged.extend(committed)
            self._staged_bytes += size
            return True

    def _take_staged(self, want: int, now: float) -> list[QueuedMessage] | None:
        """The next ``want`` messages from memory, or None if the walk must read the outbox."""
        staged = self._staged
        while staged and staged[0].seq <= self._cursor:
            self._staged_bytes -= len(staged.popleft().payload)
        if not staged or staged[0].seq != self._cursor + 1:
            return None
        batch = [staged.popleft() for _ in range(min(want, len(staged)))]
        self._staged_bytes -= sum(len(m.payload) for m in batch)
        present = self.outbox.hand_over(batch[0].seq, batch[-1].seq)
        self._cursor = batch[-1].seq
        return [m for m in batch if m.seq in present and m.expires_at > now]

    # Called from the transport's thread.
    def on_ack(self, session: int, token: int, reason_code: int) -> bool:
        """Queue a PUBACK; True when the main loop should wake for it.

        Each loop pass has a fixed cost, so the loop wakes once a quarter of the
        window is acknowledged or everything in flight is, and once per drain, not
        on every PUBACK (unlocked reads: a stale answer costs one early wake or one
        tick's delay, never a lost acknowledgement).
        """
        self._acks.append((session, token, reason_code))
        if session == self._session:
            self._answered += 1
        if self._wake_asked:
            return False
        pending = len(self._acks)
        if pending >= max(1, self._limit // 4) or pending >= len(self._inflight):
            self._wake_asked = True
            return True
        return False

    def refill(self, transport: Transport) -> int:
        """Send from the read-ahead queue into the room PUBACKs made; the transport's thread.

        Never waits: if the main loop is sending, it fills the window itself.
        """
        if not self._queue or not self._send_lock.acquire(blocking=False):
            return 0
        try:
            return self._send_queued(transport, self._now)
        finally:
            self._send_lock.release()

    def sent_elsewhere(self) -> None:
        """Another QoS 1 message (a reply, a status) went out on this connection.

        Every PUBACK of the connection comes to :meth:`on_ack`, so every QoS 1
        publish counts against the window too: the broker's receive maximum
        covers them all.
        """
        with self._send_lock:
            self._sent += 1

    def on_connected(self, receive_maximum: int | None = None) -> int:
        """A new connection: restart the walk; returns the session number for acks.

        ``receive_maximum`` is what the broker said it takes in flight (MQTT v5
        CONNACK); a tenth of it is left for replies and status messages.
        """
        with self._lock:
            # PUBACKs that arrived before this point belong to the old session's
            # in-flight map: apply them now rather than publish those messages again.
            try:
                self._drain_acks()
                self._commit_acks()
            except Exception:  # paho's thread: at worst those messages go again
                log.exception("could not apply the last session's acknowledgements")
            with self._send_lock:
                self._session += 1
                self._cursor = 0
                self.outbox.rewind_handed()
                self._inflight.clear()
                self._queue.clear()
                self._sent = self._answered = 0
                self._limit = self.window
                if receive_maximum is not None:
                    spare = max(1, receive_maximum // 10)
                    self._limit = max(1, min(self.window, receive_maximum - spare))
            return self._session

    @property
    def session(self) -> int:
        return self._session

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def published(self) -> int:
        return self._sent_total

    @property
    def pending_acks(self) -> int:
        """Acknowledged messages whose delete is not committed yet."""
        return len(self._acked)

    def _drain_acks(self) -> None:
        # Cleared before popping: an ack landing meanwhile may ask again (one spare wake).
        self._wake_asked = False
        done = self._acked
        inflight = self._inflight
        acks = self._acks
        while acks:
            session, token, reason = acks.popleft()
            if session != self._session:
                continue
            key = inflight.pop(token, None)
            if key is None:
                continue
            if reason < 0x80:
                done.append(key)
            elif reason in PERMANENT_REJECTIONS:
                self.rejected += 1
                done.append(key)
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
        """Acknowledge, expire and publish; returns how many messages this pass sent."""
        with self._lock:
            self._now = now
            self._drain_acks()
            if self._acks_due(now):
                self._commit_acks()
            if now >= self._next_expiry:
                self.outbox.expire(now)
                self._next_expiry = now + EXPIRE_EVERY_SECONDS
            sent = self._publish(transport, now)
            if self._acked and (not self._inflight or not transport.connected):
                # Nothing left to overlap the fsync with: delete what is acknowledged now.
                self._commit_acks()
            return sent

    def _publish(self, transport: Transport, now: float) -> int:
        sent = 0
        while transport.connected:
            # Read outside the send lock, so PUBACKs keep refilling the wire meanwhile.
            room = self._limit + self.ahead - (self._sent - self._answered) - len(self._queue)
            want = min(room, self.batch)
            staged = self._take_staged(want, now) if want > 0 else None
            if staged is not None:
                batch = staged
                if not batch:
                    continue  # all withdrawn, acknowledged or expired meanwhile: next ones
            else:
                batch = self.outbox.batch_after(self._cursor, want, now) if want > 0 else []
            if batch:
                self._cursor = batch[-1].seq
            with self._send_lock:
                self._queue.extend(batch)
                sent += self._send_queued(transport, now)
            if want <= 0 or len(batch) < want:
                break
        return sent

    def _send_queued(self, transport: Transport, now: float) -> int:
        """Send from the queue while the window has room; the caller holds ``_send_lock``."""
        queue, inflight, limit = self._queue, self._inflight, self._limit
        sent = 0
        try:
            while queue and self._sent - self._answered < limit:
                # Taken off first: a message the transport refuses outright (not a lost
                # connection) is skipped on this connection, not offered again and again.
                message = queue.popleft()
                try:
                    token = transport.publish_queued(
                        message.topic,
                        message.payload,
                        message.purpose,
                        message.msg_id,
                        max(1, int(message.expires_at - now)),
                        json=message.json,
                    )
                except TransportError:
                    # The connection is going: its successor walks from the start again.
                    queue.appendleft(message)
                    break
                inflight[token] = message.ack_key  # what ack_many() deletes by
                self._sent += 1
                sent += 1
        finally:
            self._sent_total += sent
        return sent
