"""Disk-backed store-and-forward queue of outgoing MQTT messages.

A message is committed to SQLite before it is handed to the broker and
deleted only when the broker acknowledged it (PUBACK), so nothing is lost
while the broker is away or when the agent is killed.  Each message keeps a
stable ``msg_id`` (inside the payload too) so receivers can drop the
duplicates that at-least-once delivery produces.  The queue is capped: when
full the oldest messages are dropped and counted; expired messages are
dropped and counted as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from agent.database import Database
from agent.minimise import OutgoingMessage, strip_image
from agent.purposes import Purpose

DROPPED_OVERFLOW = "outbox_dropped_overflow"
DROPPED_EXPIRED = "outbox_dropped_expired"
ACKED = "outbox_acked"


@dataclasses.dataclass(frozen=True)
class PutResult:
    queued: int
    # Purpose not consented at the door: never written.
    refused: int
    # Oldest messages dropped to stay under the cap.
    dropped: int


def _without_image(message: OutgoingMessage) -> bytes:
    if not message.has_image:
        return message.payload
    stripped = strip_image(message.payload)
    return message.payload if stripped is None else stripped


@dataclasses.dataclass(frozen=True)
class QueuedMessage:
    seq: int
    msg_id: str
    topic: str
    payload: bytes
    purpose: str
    created_at: float
    expires_at: float


class Outbox:
    name = "outbox"

    def __init__(self, db: Database, *, max_messages: int, default_expiry_seconds: int) -> None:
        self.db = db
        self.max_messages = max_messages
        self.default_expiry_seconds = default_expiry_seconds

    def put_many(self, items: Iterable[tuple[str, OutgoingMessage]], now: float) -> PutResult:
        """Queue ``(topic, message)`` pairs in one transaction: the consent door.

        Consent is read inside the same transaction as the insert, so a
        withdrawal committed by anyone (this process, the CLI) before this
        commit keeps its purpose's messages out, and one committed after it
        purges them: there is no moment in between.  Images leave messages
        whose ``event_snapshots`` consent is gone.
        """
        pending = list(items)
        if not pending:
            return PutResult(0, 0, 0)
        with self.db.transaction() as conn:
            granted = {
                str(row[0])
                for row in conn.execute("SELECT purpose FROM consent_state WHERE granted = 1")
            }
            snapshots = Purpose.EVENT_SNAPSHOTS.value in granted
            rows = [
                (
                    message.msg_id,
                    topic,
                    message.payload if snapshots else _without_image(message),
                    message.purpose.value,
                    now,
                    now + (message.expiry_seconds or self.default_expiry_seconds),
                )
                for topic, message in pending
                if not message.purpose.needs_consent or message.purpose.value in granted
            ]
            conn.executemany(
                "INSERT OR IGNORE INTO outbox "
                "(msg_id, topic, payload, purpose, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            count = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            excess = count - self.max_messages
            dropped = 0
            if excess > 0:
                dropped = conn.execute(
                    "DELETE FROM outbox WHERE seq IN "
                    "(SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                    (excess,),
                ).rowcount
                self.db.bump_counter(conn, DROPPED_OVERFLOW, dropped)
        return PutResult(len(rows), len(pending) - len(rows), int(dropped))

    def put(self, topic: str, message: OutgoingMessage, now: float) -> PutResult:
        return self.put_many([(topic, message)], now)

    def expire(self, now: float) -> int:
        with self.db.transaction() as conn:
            expired = int(
                conn.execute("DELETE FROM outbox WHERE expires_at <= ?", (now,)).rowcount
            )
            self.db.bump_counter(conn, DROPPED_EXPIRED, expired)
        return expired

    def batch_after(self, after_seq: int, limit: int, now: float) -> list[QueuedMessage]:
        """The next unexpired messages in queue order after ``after_seq``."""
        rows = self.db.query(
            "SELECT seq, msg_id, topic, payload, purpose, created_at, expires_at FROM outbox "
            "WHERE seq > ? AND expires_at > ? ORDER BY seq LIMIT ?",
            (after_seq, now, limit),
        )
        return [QueuedMessage(*row) for row in rows]  # type: ignore[arg-type]

    def ack_many(self, msg_ids: Iterable[str]) -> int:
        ids = [(m,) for m in msg_ids]
        if not ids:
            return 0
        with self.db.transaction() as conn:
            before = conn.total_changes
            conn.executemany("DELETE FROM outbox WHERE msg_id = ?", ids)
            acked = conn.total_changes - before
            self.db.bump_counter(conn, ACKED, acked)
        return acked

    def contains(self, msg_id: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM outbox WHERE msg_id = ?", (msg_id,)))

    def __len__(self) -> int:
        return self.db.query_int("SELECT COUNT(*) FROM outbox")

    def stats(self) -> Mapping[str, int]:
        return {
            "queued": len(self),
            "dropped_overflow": self.db.counter(DROPPED_OVERFLOW),
            "dropped_expired": self.db.counter(DROPPED_EXPIRED),
            "acked": self.db.counter(ACKED),
        }

    # --- retention and data-subject rights -----------------------------------

    def purge_older_than(self, cutoff: float) -> int:
        with self.db.transaction() as conn:
            return int(
                conn.execute("DELETE FROM outbox WHERE created_at < ?", (cutoff,)).rowcount
            )

    def export_personal_data(self) -> Mapping[str, object]:
        rows = self.db.query(
            "SELECT msg_id, topic, purpose, created_at, payload FROM outbox "
            "WHERE purpose != 'device_operation' ORDER BY seq"
        )
        keys = ("msg_id", "topic", "purpose", "created_at", "payload")
        return {"queued_events": [dict(zip(keys, row, strict=True)) for row in rows]}

    def erase_personal_data(self) -> int:
        with self.db.transaction() as conn:
            erased = int(
                conn.execute("DELETE FROM outbox WHERE purpose != 'device_operation'").rowcount
            )
        self.db.scrub()
        return erased
