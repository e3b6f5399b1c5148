"""The plate watch-list on disk: one SQLite file in the state directory, sealed row by row.

SQLite (WAL, ``synchronous=FULL``) makes each enrolment or removal atomic and
durable across power loss.  No plate text or label is ever written in clear:
each row holds the entry sealed (AES-256-GCM, :mod:`agent.sealing`) under the
``plate_recognition`` data key, found by a *tag*, an HMAC of the plate under a
key derived from that same data key.  Destroying the key (withdrawal, erasure)
leaves every copy -- WAL frames, freed pages, the files of an older version --
unreadable, the tags included: without the key a tag cannot even be tested
against a guessed plate.  Matching decrypts the list into memory.

``secure_delete`` overwrites erased rows, purges checkpoint the WAL away, and an
erasure removes the database files altogether.  The file is created on the
first write only: reading an absent watch-list never recreates it.  A file from
before sealing (a ``plates`` table in clear) is sealed on first open.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import pathlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from agent.database import open_sqlite
from agent.errors import DecodeError, DeviceIOError, PolicyError
from agent.layout import StateLayout
from agent.matching.plates import PlateEntry, PlateList
from agent.purposes import Purpose
from agent.sealing import DataKey, KeyDestroyed, SealedDataError, open_sealed, seal

if TYPE_CHECKING:
    from agent.keystore import DataKeys

log = logging.getLogger(__name__)

DOMAIN = Purpose.PLATE_RECOGNITION.value
ROW_CONTEXT = b"plates:entry"
# HKDF-Expand (RFC 5869, one block) of the data key: the key of the row tags.
_TAG_INFO = b"edge-agent plate watch-list tag v1\x01"
_SUFFIXES = ("", "-wal", "-shm", "-journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watchlist (
    tag BLOB PRIMARY KEY,
    key_number INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""


def plate_tag(key: DataKey, plate: str) -> bytes:
    """The row tag of ``plate`` under ``key``: no plate (nor an unkeyed hash of one) on disk."""
    tag_key = hmac.new(key.secret, _TAG_INFO, hashlib.sha256).digest()
    return hmac.new(tag_key, plate.encode("utf-8"), hashlib.sha256).digest()


class PlateStore:
    """Crash-safe watch-list storage; implements ``agent.ports.PersonalDataHolder``
    and ``agent.ports.Resealable``."""

    name = "plates"

    def __init__(
        self, path: pathlib.Path, *, keys: DataKeys, max_entries: int = 200_000
    ) -> None:
        self.path = path
        self.keys = keys
        self.max_entries = max_entries
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._migrated = 0
        self._legacy_checked = False

    @classmethod
    def in_state_dir(
        cls, state_dir: pathlib.Path, *, keys: DataKeys, max_entries: int = 200_000
    ) -> PlateStore:
        return cls(StateLayout(state_dir).plates_db, keys=keys, max_entries=max_entries)

    def files(self) -> list[pathlib.Path]:
        return [self.path.with_name(self.path.name + s) for s in _SUFFIXES]

    # --- the connection -------------------------------------------------------------

    def _open(self, create: bool, *, migrate: bool = True) -> sqlite3.Connection | None:
        if self._conn is None:
            if not create and not self.path.exists():
                return None
            self._conn = open_sqlite(self.path, _SCHEMA, "plate watch-list")
            self._legacy_checked = False
        if migrate and not self._legacy_checked:
            self._migrate_legacy(self._conn)
            self._legacy_checked = True
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise DeviceIOError(f"plate watch-list write failed: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._open(create=True)
            assert conn is not None
            with self._transaction(conn):
                yield conn

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """After a purge: fold the WAL in and cut it to nothing (its frames held the rows)."""
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise DeviceIOError(f"plate watch-list checkpoint failed: {exc}") from exc

    def _migrate_legacy(self, conn: sqlite3.Connection) -> None:
        """Seal a watch-list written before sealing, then drop its clear table."""
        try:
            legacy = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plates'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise DeviceIOError(f"plate watch-list read failed: {exc}") from exc
        if legacy is None:
            return
        with self._transaction(conn):
            rows = conn.execute(
                "SELECT plate, list, label, format, created_at FROM plates"
            ).fetchall()
            current = self.keys.current(DOMAIN)
            for row in rows:
                try:
                    entry = _entry(tuple(row))
                except DecodeError:
                    log.error("dropping a corrupt row of the old plate watch-list")
                    continue
                conn.execute(
                    "INSERT OR IGNORE INTO watchlist (tag, key_number, body) VALUES (?, ?, ?)",
                    _sealed_row(current, entry),
                )
            # secure_delete: the freed pages are overwritten, and the checkpoint below
            # empties the WAL that held the clear rows.
            conn.execute("DELETE FROM plates")
            conn.execute("DROP TABLE plates")
        self._checkpoint(conn)
        self._migrated += len(rows)
        log.info("sealed %d plate watch-list entries written before sealing", len(rows))

    # --- keys -----------------------------------------------------------------------

    def _live_keys(self) -> list[DataKey]:
        live: list[DataKey] = []
        for number in self.keys.live_numbers(DOMAIN):
            with contextlib.suppress(KeyDestroyed):
                live.append(self.keys.key(DOMAIN, number))
        return live

    def _tags(self, plate: str) -> list[bytes]:
        """The plate's tag under every live key (two while a rotation is under way)."""
        self.keys.current(DOMAIN)
        return [plate_tag(key, plate) for key in self._live_keys()]

    # --- the watch-list -------------------------------------------------------------

    def put(self, entry: PlateEntry) -> bool:
        """Insert or replace ``entry``; True if the plate was new."""
        with self._write() as conn:
            current = self.keys.current(DOMAIN)
            tags = self._tags(entry.plate)
            existing = sum(
                conn.execute("SELECT COUNT(*) FROM watchlist WHERE tag = ?", (tag,)).fetchone()[0]
                for tag in tags
            )
            if not existing:
                (count,) = conn.execute("SELECT COUNT(*) FROM watchlist").fetchone()
                if count >= self.max_entries:
                    raise PolicyError(f"watch-list is full ({self.max_entries} plates)")
            for tag in tags:
                conn.execute("DELETE FROM watchlist WHERE tag = ?", (tag,))
            conn.execute(
                "INSERT INTO watchlist (tag, key_number, body) VALUES (?, ?, ?)",
                _sealed_row(current, entry),
            )
        return not existing

    def remove(self, plate: str) -> bool:
        if not self.path.exists():
            return False
        with self._lock:
            with self._write() as conn:
                removed = sum(
                    conn.execute("DELETE FROM watchlist WHERE tag = ?", (tag,)).rowcount
                    for tag in self._tags(plate)
                )
            if removed:
                self._checkpoint(conn)
                # Its row may survive in freed WAL frames, sealed under the live key.
                self.keys.request_rotation(DOMAIN)
        return removed > 0

    def entries(self) -> list[PlateEntry]:
        """Every readable entry, decrypted in memory; rows whose key was destroyed are dropped."""
        with self._lock:
            conn = self._open(create=False)
            if conn is None:
                return []
            try:
                rows = conn.execute("SELECT key_number, body FROM watchlist").fetchall()
            except sqlite3.Error as exc:
                raise DeviceIOError(f"plate watch-list read failed: {exc}") from exc
            found: list[PlateEntry] = []
            opener = _Opener(self.keys)
            for number, body in rows:
                entry = opener.entry(int(number), bytes(body))
                if entry is not None:
                    found.append(entry)
            if opener.destroyed:
                self._drop_numbers(conn, sorted(opener.destroyed))
            if opener.damaged:
                log.error("%d plate watch-list rows are damaged and were skipped", opener.damaged)
        return sorted(found, key=lambda e: e.plate)

    def _drop_numbers(self, conn: sqlite3.Connection, numbers: list[int]) -> None:
        """Delete rows sealed under destroyed keys: already erased, only ciphertext is left."""
        with self._transaction(conn):
            conn.executemany(
                "DELETE FROM watchlist WHERE key_number = ?", [(n,) for n in numbers]
            )
        self._checkpoint(conn)

    def data_version(self) -> int:
        """Changes whenever any connection (another process too) commits a change."""
        with self._lock:
            conn = self._open(create=False)
            if conn is None:
                return -1
            try:
                return int(conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise DeviceIOError(f"plate watch-list read failed: {exc}") from exc

    # --- personal data ----------------------------------------------------------------

    def export_personal_data(self) -> Mapping[str, object]:
        return {"plates": [e.as_dict() for e in self.entries()]}

    def reseal_personal_data(self) -> int:
        """Move every row to the current key (re-tagged too); returns the rows moved."""
        with self._lock:
            conn = self._open(create=False)
            if conn is None:
                return 0
            moved, self._migrated = self._migrated, 0
            dead: set[int] = set()
            with self._transaction(conn):
                current = self.keys.current(DOMAIN)
                rows = conn.execute(
                    "SELECT tag, key_number, body FROM watchlist WHERE key_number != ?",
                    (current.number,),
                ).fetchall()
                opener = _Opener(self.keys)
                for tag, number, body in rows:
                    entry = opener.entry(int(number), bytes(body))
                    if entry is None:
                        dead.add(int(number))
                        continue
                    conn.execute("DELETE FROM watchlist WHERE tag = ?", (tag,))
                    # IGNORE: a row already under the current key was written later.
                    conn.execute(
                        "INSERT OR IGNORE INTO watchlist (tag, key_number, body) VALUES (?, ?, ?)",
                        _sealed_row(current, entry),
                    )
                    moved += 1
            if dead:
                self._drop_numbers(conn, sorted(dead))
            return moved

    def erase_personal_data(self) -> int:
        """Overwrite every row (``secure_delete``), then delete the files."""
        with self._lock:
            count = 0
            if self.path.exists():
                conn = self._open(create=True, migrate=False)
                assert conn is not None
                with self._transaction(conn):
                    count = conn.execute("DELETE FROM watchlist").rowcount
                    legacy = conn.execute(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plates'"
                    ).fetchone()
                    if legacy is not None:
                        count += conn.execute("DELETE FROM plates").rowcount
                self._checkpoint(conn)
            self.close()
            for path in self.files():
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise DeviceIOError(f"cannot delete {path}: {exc.strerror}") from exc
            return count

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class _Opener:
    """Opens rows, fetching each key once per pass; counts the destroyed and the damaged."""

    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys
        self._found: dict[int, DataKey | None] = {}
        self.destroyed: set[int] = set()
        self.damaged = 0

    def entry(self, number: int, body: bytes) -> PlateEntry | None:
        if number not in self._found:
            try:
                self._found[number] = self._keys.key(DOMAIN, number)
            except KeyDestroyed:
                self._found[number] = None
        key = self._found[number]
        if key is None:
            self.destroyed.add(number)
            return None
        try:
            return _decode_entry(open_sealed(key, body, ROW_CONTEXT))
        except (SealedDataError, DecodeError):
            self.damaged += 1
            return None


def _sealed_row(key: DataKey, entry: PlateEntry) -> tuple[bytes, int, bytes]:
    body = json.dumps(entry.as_dict(), ensure_ascii=False, separators=(",", ":"))
    return plate_tag(key, entry.plate), key.number, seal(key, body.encode("utf-8"), ROW_CONTEXT)


def _decode_entry(plain: bytes) -> PlateEntry:
    try:
        data = json.loads(plain)
        return _entry(
            (data["plate"], data["list"], data.get("label"), data.get("format"),
             data.get("created_at", 0.0))
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"corrupt plate watch-list row: {exc}") from exc


def _entry(row: tuple[object, ...]) -> PlateEntry:
    plate, plate_list, label, plate_format, created_at = row
    try:
        return PlateEntry(
            str(plate),
            PlateList(plate_list),
            None if label is None else str(label),
            None if plate_format is None else str(plate_format),
            float(str(created_at)),
        )
    except ValueError as exc:
        raise DecodeError(f"corrupt plate watch-list row: {exc}") from exc
