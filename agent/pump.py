"""Moves committed outbox messages to the broker and deletes them on PUBACK.

Pure logic: the MQTT specifics live behind :class:`Transport` (drivers/mqtt.py).
Within one connection the pump walks the outbox in order with a cursor and
keeps at most ``window`` messages in flight.  Each new connection starts the
walk again from the oldest message, because anything not acknowledged may not
have arrived; receivers drop the repeats by message id.
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
    ) -> None:
        self.outbox = outbox
        self.window = window
        self.batch = batch
        self._inflight: dict[int, _InFlight] = {}
        self._cursor = 0
        self._session = 0
        self._acks: collections.deque[tuple[int, int, int]] = collections.deque()
        self._lock = threading.Lock()
        self._next_expiry = 0.0
        self.published = 0
        self.rejected = 0

    # Called from the transport's thread.
    def on_ack(self, session: int, token: int, reason_code: int) -> None:
        self._acks.append((session, token, reason_code))

    def on_connected(self) -> int:
        """A new connection: restart the walk; returns the session number for acks."""
        with self._lock:
            # PUBACKs that arrived before this point belong to the old session's
            # in-flight map: apply them now rather than publish those messages again.
            try:
                self._drain_acks()
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

    def _drain_acks(self) -> None:
        done: list[str] = []
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
        self.outbox.ack_many(done)

    def tick(self, transport: Transport, now: float) -> int:
        """Acknowledge, expire and publish; returns how many messages were sent."""
        with self._lock:
            self._drain_acks()
            if now >= self._next_expiry:
                self.outbox.expire(now)
                self._next_expiry = now + EXPIRE_EVERY_SECONDS
            sent = 0
            while transport.connected and len(self._inflight) < self.window:
                room = min(self.window - len(self._inflight), self.batch)
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
                    self._inflight[token] = _InFlight(message.msg_id, message.seq)
                    sent += 1
            self.published += sent
            return sent
