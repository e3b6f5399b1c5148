"""Disk-backed store-and-forward queue of outgoing MQTT messages.

A message is committed to SQLite before it is handed to the broker and
deleted only when the broker acknowledged it (PUBACK), so nothing is lost
while the broker is away or when the agent is killed.  Each message keeps a
stable ``msg_id`` (inside the payload too) so receivers can drop the
duplicates that at-least-once delivery produces.  The queue is capped: when
full the oldest messages are dropped and counted (never those the current
connection already read for sending: the broker gets them anyway); expired
messages are dropped and counted as well.

Every message gets the next number of the device's event sequence inside the
committing transaction (``seq``: the row key and a payload field, see
:mod:`agent.sequence`), and the high-water file records it after the commit.
A receiver that sees ``seq`` jump knows events are missing; the device counts
every gap it makes itself (overflow, expiry, space, withdrawal) and reports
the ones it finds (a database that lost committed rows) as ``lost``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from agent.database import Database
from agent.errors import DecodeError, DeviceIOError
from agent.layout import StateLayout
from agent.minimise import OutgoingMessage
from agent.outbox_rows import (
    IMAGE_CONTEXT,
    blob,
    optional_blob,
    pack_row,
    sealing_context,
    stamped,
    unpack_row,
    with_image,
)
from agent.purposes import Purpose
from agent.sealing import KeyDestroyed, SealedDataError, is_sealed, read_header
from agent.sequence import HighWater
from agent.storage_settings import StorageSettings

if TYPE_CHECKING:
    from agent.keystore import DataKeys
    from agent.storage import StorageGuard

log = logging.getLogger(__name__)

DROPPED_OVERFLOW = "outbox_dropped_overflow"
DROPPED_EXPIRED = "outbox_dropped_expired"
DROPPED_FULL = "outbox_dropped_full"
LOST = "outbox_lost"
# Rows whose data key was destroyed (a withdrawal by another process) or that fail to open.
DROPPED_UNREADABLE = "outbox_dropped_unreadable"
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


# Not frozen: a frozen dataclass's __init__ costs five times a plain one's, once per
# queued event (issue 12).  Nothing changes a message once made.
@dataclasses.dataclass(slots=True)
class QueuedMessage:
    seq: int
    msg_id: str
    topic: str
    payload: bytes
    purpose: str
    created_at: float
    expires_at: float
    # What ack_many() takes: the msg_id, or for a sealed row its keyed tag.
    row_key: str = ""
    # The payload as JSON, made from the minimiser's pieces (None: convert the CBOR).
    json: Callable[[], bytes] | None = dataclasses.field(default=None, compare=False)

    @property
    def ack_key(self) -> str:
        return self.row_key or self.msg_id


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
        keys: DataKeys | None = None,
    ) -> None:
        self.db = db
        # Payloads of consented purposes are sealed under their purpose's data key,
        # images under event_snapshots' (None: plaintext, for tests of the queue alone).
        self.keys = keys
        # Write-through: told of each batch right after its commit, as it goes on the
        # wire, so the pump need not read back and unseal what it was just handed.
        self.on_committed: Callable[[list[QueuedMessage]], object] | None = None
        self.max_messages = max_messages
        self.default_expiry_seconds = default_expiry_seconds
        # Without a layout (a test peeking at a state directory) nothing is recorded.
        self.high_water = HighWater(layout.outbox_high_water) if layout is not None else None
        # Numbers at or below this were handed out before (perhaps lost since): never reuse.
        self._floor = self.high_water.value if self.high_water is not None else 0
        self._high_water_failing = False
        # Rows at or below this were read by the walk of the current connection: on the
        # wire or about to be.  Drops for room skip them -- the broker gets them anyway,
        # so a drop would be counted for an event that is delivered.  Under db.lock.
        self._handed_through = 0
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
            granted.add(Purpose.DEVICE_OPERATION.value)  # needs no consent
            admitted = [
                (topic, message)
                for topic, message in pending
                if message.purpose.value in granted
            ]
            first = max(self._sequence(conn), self._floor) + 1
            rows = []
            wire: list[QueuedMessage] = []
            for i, (topic, message) in enumerate(admitted):
                seq = first + i
                purpose = message.purpose.value
                expires = now + (message.expiry_seconds or self.default_expiry_seconds)
                row_key, stored_topic, payload, image, plain, render = self._stored(
                    topic, message, seq, snapshots
                )
                rows.append((seq, row_key, stored_topic, payload, image, purpose, now, expires))
                wire.append(QueuedMessage(seq, message.msg_id, topic, plain, purpose, now,
                                          expires, row_key, render))
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO outbox "
                "(seq, msg_id, topic, payload, image, purpose, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            inserted = conn.total_changes - before
            last = self._sequence(conn)
            excess = self._count_at_most(conn, last) - self.max_messages
            dropped = 0
            if excess > 0:
                dropped = conn.execute(
                    "DELETE FROM outbox WHERE seq IN "
                    "(SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?)",
                    (self._handed_through, excess),
                ).rowcount
                self.db.bump_counter(conn, DROPPED_OVERFLOW, dropped)
        if rows:
            self._record_high_water(last)
            tap = self.on_committed
            # Only a clean append (nothing ignored as a duplicate, nothing dropped for
            # room) goes straight to the pump; otherwise it walks the table as ever.
            if tap is not None and inserted == len(rows) and not dropped:
                tap(wire)
        return PutResult(len(rows), len(pending) - len(rows), int(dropped))

    def _count_at_most(self, conn: sqlite3.Connection, last: int) -> int:
        """The rows waiting (not on the wire), or a bound on them when that is enough
        to stay under the cap; the wire holds at most the pump's window more.

        Rows hold distinct numbers from the oldest to ``last``, so their count is at
        most the span: one index probe, where COUNT(*) reads every row (issue 12).
        """
        handed = self._handed_through
        row = conn.execute(
            "SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", (handed,)
        ).fetchone()
        if row is None:
            return 0
        span = last - int(row[0]) + 1
        if span <= self.max_messages:
            return span
        return int(
            conn.execute("SELECT COUNT(*) FROM outbox WHERE seq > ?", (handed,)).fetchone()[0]
        )

    def _stored(
        self, topic: str, message: OutgoingMessage, seq: int, snapshots: bool
    ) -> tuple[str, str, bytes, bytes | None, bytes, Callable[[], bytes] | None]:
        """The msg_id, topic, payload and image columns, stamped then sealed at rest,
        the payload as it goes on the wire (for the write-through to the pump), and
        what renders that payload as JSON without decoding it (None: convert it).

        A sealed row keeps nothing in clear that names the event: the topic and
        the msg_id travel inside the sealed payload, and the msg_id column holds
        a tag keyed by the purpose's data key (for acks and de-duplication), so a
        row left in a freed block after the key is destroyed says nothing.
        """
        encoded = message.encoded
        render: Callable[[], bytes] | None = None
        if encoded is not None:
            # Spliced from the minimiser's pieces: no decode, no second encode.
            keep = snapshots and encoded.image is not None
            payload = encoded.cbor(seq, with_image=False)
            image = encoded.image if keep else None
            plain = encoded.cbor(seq, with_image=True) if keep else payload
            render = functools.partial(encoded.json, seq, with_image=keep)
        else:
            payload, image = stamped(message, seq, keep_image=snapshots)
            plain = payload if image is None else with_image(payload, image)
        keys = self.keys
        if keys is None or message.purpose is Purpose.DEVICE_OPERATION:
            return message.msg_id, topic, payload, image, plain, render
        purpose = message.purpose.value
        sealed_image = (
            None if image is None
            else keys.seal(Purpose.EVENT_SNAPSHOTS.value, image, IMAGE_CONTEXT)
        )
        sealed, tag = keys.seal_tagged(
            purpose,
            pack_row(message.msg_id, topic, payload),
            sealing_context(purpose),
            message.msg_id,
        )
        return tag, "", sealed, sealed_image, plain, render

    def _readable(
        self, row_key: str, topic: str, payload: bytes, image: bytes | None, purpose: str
    ) -> tuple[str, str, bytes]:
        """msg_id, topic and payload as they go out; :class:`KeyDestroyed` if the key is gone."""
        msg_id = row_key
        if self.keys is not None and is_sealed(payload):
            msg_id, topic, payload = unpack_row(self.keys.open(payload, sealing_context(purpose)))
        if image is None:
            return msg_id, topic, payload
        if self.keys is not None and is_sealed(image):
            try:
                image = self.keys.open(image, IMAGE_CONTEXT)
            except KeyDestroyed:
                # event_snapshots withdrawn: the event goes without it
                return msg_id, topic, payload
        return msg_id, topic, with_image(payload, image)

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
                f"SELECT seq, length(payload) + ifnull(length(image), 0) FROM outbox "  # noqa: S608
                f"WHERE purpose IN ({marks}) AND seq > ? "
                "ORDER BY seq LIMIT 100000",
                (*LOW_VALUE_PURPOSES, self._handed_through),
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
                    f"DELETE FROM outbox WHERE purpose IN ({marks}) "  # noqa: S608
                    "AND seq > ? AND seq <= ?",
                    (*LOW_VALUE_PURPOSES, self._handed_through, last),
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
        """The next unexpired messages in queue order after ``after_seq``, handed to the
        walk: until :meth:`rewind_handed`, drops for room leave them alone."""
        with self.db.lock:
            rows = self.db.query(
                "SELECT seq, msg_id, topic, payload, image, purpose, created_at, expires_at "
                "FROM outbox WHERE seq > ? AND expires_at > ? ORDER BY seq LIMIT ?",
                (after_seq, now, limit),
            )
            if rows:
                self._handed_through = max(self._handed_through, int(str(rows[-1][0])))
        batch: list[QueuedMessage] = []
        unreadable: list[int] = []
        for seq, row_key, topic, payload, image, purpose, created, expires in rows:
            try:
                msg_id, real_topic, readable = self._readable(
                    str(row_key), str(topic), blob(payload), optional_blob(image), str(purpose)
                )
            except (KeyDestroyed, SealedDataError, DecodeError) as exc:
                log.warning("dropping queued event %s: %s", seq, exc)
                unreadable.append(int(str(seq)))
                continue
            batch.append(
                QueuedMessage(
                    seq, msg_id, real_topic, readable, purpose, created, expires,  # type: ignore[arg-type]
                    row_key=str(row_key),
                )
            )
        if unreadable:
            self._drop_unreadable(unreadable)
        return batch

    def present_seqs(self, first: int, last: int) -> set[int]:
        """Which sequence numbers between ``first`` and ``last`` are still queued."""
        rows = self.db.query("SELECT seq FROM outbox WHERE seq BETWEEN ? AND ?", (first, last))
        return {int(str(row[0])) for row in rows}

    def hand_over(self, first: int, last: int) -> set[int]:
        """:meth:`present_seqs`, handed to the walk as :meth:`batch_after`'s rows are."""
        with self.db.lock:
            present = self.present_seqs(first, last)
            self._handed_through = max(self._handed_through, last)
        return present

    def rewind_handed(self) -> None:
        """A new connection walks the queue from the start: nothing is on the wire."""
        with self.db.lock:
            self._handed_through = 0

    def _drop_unreadable(self, seqs: list[int]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self.db.bump_counter(conn, DROPPED_UNREADABLE, len(seqs))

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
        """Whether ``msg_id`` is queued (plain, or under a tag of any purpose's current key)."""
        candidates = [msg_id]
        if self.keys is not None:
            candidates += [
                self.keys.tag(p.value, msg_id) for p in Purpose
                if p.needs_consent and self.keys.live_numbers(p.value)
            ]
        marks = ",".join("?" * len(candidates))
        return bool(self.db.query(
            f"SELECT 1 FROM outbox WHERE msg_id IN ({marks})", tuple(candidates)  # noqa: S608
        ))

    def __len__(self) -> int:
        return self.db.query_int("SELECT COUNT(*) FROM outbox")

    def stats(self) -> Mapping[str, int]:
        return {
            "queued": len(self),
            "dropped_overflow": self.db.counter(DROPPED_OVERFLOW),
            "dropped_expired": self.db.counter(DROPPED_EXPIRED),
            "dropped_unreadable": self.db.counter(DROPPED_UNREADABLE),
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
            "SELECT msg_id, topic, purpose, created_at, payload, image FROM outbox "
            "WHERE purpose != 'device_operation' ORDER BY seq"
        )
        events: list[dict[str, object]] = []
        for row_key, stored_topic, purpose, created_at, payload, image in rows:
            try:
                msg_id, topic, readable = self._readable(
                    str(row_key), str(stored_topic), blob(payload), optional_blob(image),
                    str(purpose),
                )
            except (KeyDestroyed, SealedDataError, DecodeError):
                continue  # erased (its key is gone) or unreadable: nothing to hand over
            events.append({"msg_id": msg_id, "topic": topic, "purpose": purpose,
                           "created_at": created_at, "payload": readable})
        return {"queued_events": events}

    def reseal_personal_data(self) -> int:
        """Move every queued payload and image to its domain's current key (key rotation)."""
        keys = self.keys
        if keys is None:
            return 0
        rows = self.db.query(
            "SELECT seq, payload, image, purpose FROM outbox WHERE purpose != 'device_operation'"
        )
        current: dict[str, int] = {}

        def fresh(sealed: bytes, context: bytes) -> bytes | None:
            header = read_header(sealed)
            if header.domain not in current:
                current[header.domain] = keys.current(header.domain).number
            if header.number == current[header.domain]:
                return None
            return keys.seal(header.domain, keys.open(sealed, context), context)

        updates: list[tuple[bytes, bytes | None, int]] = []
        for seq, raw_payload, raw_image, purpose in rows:
            try:
                payload, image = blob(raw_payload), optional_blob(raw_image)
                context = sealing_context(str(purpose))
                new_payload = fresh(payload, context) if is_sealed(payload) else None
                new_image = fresh(image, IMAGE_CONTEXT) if image and is_sealed(image) else None
            except (KeyDestroyed, DecodeError):
                continue  # unreadable already: batch_after drops and counts it
            if new_payload is not None or new_image is not None:
                updates.append((new_payload or payload, new_image or image, int(str(seq))))
        if updates:
            with self.db.transaction() as conn:
                conn.executemany("UPDATE outbox SET payload = ?, image = ? WHERE seq = ?", updates)
        return len(updates)

    def erase_personal_data(self) -> int:
        with self.db.transaction() as conn:
            erased = int(
                conn.execute("DELETE FROM outbox WHERE purpose != 'device_operation'").rowcount
            )
        self.db.scrub()
        return erased
