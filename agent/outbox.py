"""Disk-backed store-and-forward queue of outgoing MQTT messages.

A message is committed to SQLite before it is handed to the broker and
deleted only when the broker acknowledged it (PUBACK), so nothing is lost
while the broker is away or when the agent is killed.  Each message keeps a
stable ``msg_id`` (inside the payload too) so receivers can drop the
duplicates that at-least-once delivery produces.  The queue is capped: when
full the oldest messages are dropped and counted; expired messages are
dropped and counted as well.

Every message gets the next number of the device's event sequence inside the
committing transaction (``seq``: the row key and a payload field, see
:mod:`agent.sequence`), and the high-water file records it after the commit.
A receiver that sees ``seq`` jump knows events are missing; the device counts
every gap it makes itself (overflow, expiry, space, withdrawal) and reports
the ones it finds (a database that lost committed rows) as ``lost``.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from agent.database import Database
from agent.errors import DeviceIOError
from agent.layout import StateLayout
from agent.minimise import OutgoingMessage, strip_image
from agent.purposes import Purpose
from agent.sequence import HighWater, stamp
from agent.storage_settings import StorageSettings

if TYPE_CHECKING:
    from agent.storage import StorageGuard

log = logging.getLogger(__name__)

DROPPED_OVERFLOW = "outbox_dropped_overflow"
DROPPED_EXPIRED = "outbox_dropped_expired"
DROPPED_FULL = "outbox_dropped_full"
LOST = "outbox_lost"
ACKED = "outbox_acked"
# What goes first when the disk is full (README "Storage"): usage statistics and motion,
# oldest first.  Matches, upgrade and device-status events are never dropped for space.
LOW_VALUE_PURPOSES = (Purpose.USAGE_STATISTICS.value, Purpose.CLOUD_EVENTS.value)
# Per-row overhead of a queued message beyond its payload (topic, id, b-tree cells).
ROW_OVERHEAD_BYTES = 160


@dataclasses.dataclass(frozen=True)
class Gap:
    """Sequence numbers the high-water file saw committed that the database no longer has."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


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

    def __init__(
        self,
        db: Database,
        *,
        max_messages: int,
        default_expiry_seconds: int,
        layout: StateLayout | None = None,
        storage: StorageSettings | None = None,
    ) -> None:
        self.db = db
        self.max_messages = max_messages
        self.default_expiry_seconds = default_expiry_seconds
        # Without a layout (a test peeking at a state directory) nothing is recorded.
        self.high_water = HighWater(layout.outbox_high_water) if layout is not None else None
        # Numbers at or below this were handed out before (perhaps lost since): never reuse.
        self._floor = self.high_water.value if self.high_water is not None else 0
        self._high_water_failing = False
        self.storage: StorageGuard | None = None
        if layout is not None and storage is not None:
            from agent.storage import StorageGuard

            self.storage = StorageGuard(layout, storage, self)

    def put_many(self, items: Iterable[tuple[str, OutgoingMessage]], now: float) -> PutResult:
        """Queue ``(topic, message)`` pairs in one transaction: the consent door.

        Consent is read inside the same transaction as the insert, so a
        withdrawal committed by anyone (this process, the CLI) before this
        commit keeps its purpose's messages out, and one committed after it
        purges them: there is no moment in between.  Images leave messages
        whose ``event_snapshots`` consent is gone.  Sequence numbers are given
        here, to the messages that pass the door, so consent never makes a gap.
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
            admitted = [
                (topic, message)
                for topic, message in pending
                if not message.purpose.needs_consent or message.purpose.value in granted
            ]
            first = max(self._sequence(conn), self._floor) + 1
            rows = [
                (
                    first + i,
                    message.msg_id,
                    topic,
                    stamp(message.payload if snapshots else _without_image(message), first + i),
                    message.purpose.value,
                    now,
                    now + (message.expiry_seconds or self.default_expiry_seconds),
                )
                for i, (topic, message) in enumerate(admitted)
            ]
            conn.executemany(
                "INSERT OR IGNORE INTO outbox "
                "(seq, msg_id, topic, payload, purpose, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            last = self._sequence(conn)
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
        if rows:
            self._record_high_water(last)
        return PutResult(len(rows), len(pending) - len(rows), int(dropped))

    @staticmethod
    def _sequence(conn: sqlite3.Connection) -> int:
        """The highest sequence number this database ever committed (AUTOINCREMENT keeps it)."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def _record_high_water(self, last: int) -> None:
        # After the commit: the file may lag the database (a crash in between), never lead it.
        if self.high_water is None:
            return
        try:
            self.high_water.record(last)
        except DeviceIOError as exc:
            # The events are committed; only a later loss of them could go uncounted.
            # Said once per failing stretch, not on every commit.
            if not self._high_water_failing:
                log.warning("EA-DB-004 %s; lost events may go uncounted until it works", exc)
            self._high_water_failing = True
        else:
            self._high_water_failing = False

    @property
    def last_seq(self) -> int:
        return self.db.query_int("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")

    def find_gap(self) -> Gap | None:
        """Committed numbers (per the high-water file) the database has lost, if any.

        Numbering then goes on after the gap, so a lost number is never given twice.
        """
        if self.high_water is None:
            return None
        recorded, have = self.high_water.value, self.last_seq
        self._floor = max(self._floor, recorded)
        if recorded <= have:
            return None
        return Gap(have + 1, recorded)

    def count_lost(self, gap: Gap) -> None:
        with self.db.transaction() as conn:
            self.db.bump_counter(conn, LOST, gap.count)

    def drop_low_value(self, want_bytes: int) -> int:
        """Drop the oldest low-value messages until about ``want_bytes`` are free; count them."""
        if want_bytes <= 0:
            return 0
        marks = ",".join("?" * len(LOW_VALUE_PURPOSES))
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"SELECT seq, length(payload) FROM outbox WHERE purpose IN ({marks}) "  # noqa: S608
                "ORDER BY seq LIMIT 100000",
                LOW_VALUE_PURPOSES,
            ).fetchall()
            freed, last = 0, None
            for seq, size in rows:
                if freed >= want_bytes:
                    break
                freed += int(size) + ROW_OVERHEAD_BYTES
                last = int(seq)
            if last is None:
                return 0
            dropped = int(
                conn.execute(
                    f"DELETE FROM outbox WHERE purpose IN ({marks}) AND seq <= ?",  # noqa: S608
                    (*LOW_VALUE_PURPOSES, last),
                ).rowcount
            )
            self.db.bump_counter(conn, DROPPED_FULL, dropped)
        return dropped

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
            "dropped_full": self.db.counter(DROPPED_FULL),
            "lost": self.db.counter(LOST),
            "acked": self.db.counter(ACKED),
            "last_seq": self.last_seq,
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
