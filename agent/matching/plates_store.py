"""The plate watch-list on disk: one SQLite file in the state directory.

SQLite (WAL, ``synchronous=FULL``) makes each enrolment or removal atomic and
durable across power loss.  ``secure_delete`` overwrites erased rows, and an
erasure removes the database files altogether, so a withdrawn consent leaves
no watch-list behind.  The file is created on the first write only: reading
an absent watch-list never recreates it.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping

from agent.database import open_sqlite
from agent.errors import DecodeError, DeviceIOError, PolicyError
from agent.layout import StateLayout
from agent.matching.plates import PlateEntry, PlateList

_SUFFIXES = ("", "-wal", "-shm", "-journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plates (
    plate TEXT PRIMARY KEY,
    list TEXT NOT NULL CHECK (list IN ('allow', 'deny')),
    label TEXT,
    format TEXT,
    created_at REAL NOT NULL
);
"""


class PlateStore:
    """Crash-safe watch-list storage; implements ``agent.ports.PersonalDataHolder``."""

    name = "plates"

    def __init__(self, path: pathlib.Path, *, max_entries: int = 200_000) -> None:
        self.path = path
        self.max_entries = max_entries
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    @classmethod
    def in_state_dir(cls, state_dir: pathlib.Path, *, max_entries: int = 200_000) -> PlateStore:
        return cls(StateLayout(state_dir).plates_db, max_entries=max_entries)

    def files(self) -> list[pathlib.Path]:
        return [self.path.with_name(self.path.name + s) for s in _SUFFIXES]

    def _open(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        conn = open_sqlite(self.path, _SCHEMA, "plate watch-list")
        self._conn = conn
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._open(create=True)
            assert conn is not None
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

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            conn = self._open(create=False)
            if conn is None:
                return []
            try:
                return list(conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise DeviceIOError(f"plate watch-list read failed: {exc}") from exc

    def put(self, entry: PlateEntry) -> bool:
        """Insert or replace ``entry``; True if the plate was new."""
        with self._write() as conn:
            exists = conn.execute("SELECT 1 FROM plates WHERE plate = ?", (entry.plate,)).fetchone()
            if exists is None:
                (count,) = conn.execute("SELECT COUNT(*) FROM plates").fetchone()
                if count >= self.max_entries:
                    raise PolicyError(f"watch-list is full ({self.max_entries} plates)")
            conn.execute(
                "INSERT OR REPLACE INTO plates (plate, list, label, format, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (entry.plate, entry.list.value, entry.label, entry.format, entry.created_at),
            )
        return exists is None

    def remove(self, plate: str) -> bool:
        if not self.path.exists():
            return False
        with self._write() as conn:
            removed = conn.execute("DELETE FROM plates WHERE plate = ?", (plate,)).rowcount
        return removed > 0

    def entries(self) -> list[PlateEntry]:
        rows = self._read(
            "SELECT plate, list, label, format, created_at FROM plates ORDER BY plate"
        )
        return [_entry(row) for row in rows]

    def data_version(self) -> int:
        """Changes whenever any connection (another process too) commits a change."""
        rows = self._read("PRAGMA data_version")
        return int(str(rows[0][0])) if rows else -1

    def export_personal_data(self) -> Mapping[str, object]:
        return {"plates": [e.as_dict() for e in self.entries()]}

    def erase_personal_data(self) -> int:
        """Overwrite every row (``secure_delete``), then delete the files."""
        with self._lock:
            count = 0
            if self.path.exists():
                with self._write() as conn:
                    count = conn.execute("DELETE FROM plates").rowcount
                try:
                    assert self._conn is not None
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    raise DeviceIOError(f"plate watch-list checkpoint failed: {exc}") from exc
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
