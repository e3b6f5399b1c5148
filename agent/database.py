"""The agent's SQLite database: consent ledger and outbox share one file.

They share a file so that withdrawing a purpose and purging every queued item
of that purpose happen in ONE transaction: after a power cut either both
happened or neither did.  WAL mode lets the publisher read while the camera
pipeline writes; ``synchronous=FULL`` makes each commit durable.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
from collections.abc import Iterator

from agent.errors import DeviceIOError
from agent.layout import StateLayout

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_state (
    purpose TEXT PRIMARY KEY,
    granted INTEGER NOT NULL,
    changed_at REAL NOT NULL,
    policy_version TEXT NOT NULL,
    key_generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS consent_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    purpose TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('grant', 'withdraw')),
    at REAL NOT NULL,
    policy_version TEXT NOT NULL,
    source TEXT NOT NULL,
    purged INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    purpose TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_purpose ON outbox (purpose);
CREATE INDEX IF NOT EXISTS outbox_expiry ON outbox (expires_at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def open_sqlite(path: pathlib.Path, schema: str, what: str) -> sqlite3.Connection:
    """A durable SQLite connection: WAL, fsync on every commit, deleted data overwritten.

    Shared by every store of the agent; ``what`` names the store in the error.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Erased personal data must not linger in free pages.
        conn.execute("PRAGMA secure_delete=ON")
        conn.executescript(schema)
    except sqlite3.Error as exc:
        raise DeviceIOError(f"cannot open {what} {path}: {exc}") from exc
    return conn


class Database:
    """One SQLite connection guarded by a lock (paho calls back from its thread)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.conn = open_sqlite(path, _SCHEMA, "database")
        try:
            self.conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        except sqlite3.Error as exc:
            raise DeviceIOError(f"cannot open database {path}: {exc}") from exc

    @classmethod
    def in_state_dir(cls, state_dir: pathlib.Path) -> Database:
        return cls(StateLayout(state_dir).database)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolls back on any exception."""
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise DeviceIOError(f"database busy or broken: {exc}") from exc
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # A failed COMMIT (busy, deferred constraint, I/O) can leave the
                # transaction open; every later BEGIN would then fail for good.
                if self.conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise DeviceIOError(f"commit failed: {exc}") from exc

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def query_int(self, sql: str, params: tuple[object, ...] = (), default: int = 0) -> int:
        rows = self.query(sql, params)
        if not rows or rows[0][0] is None:
            return default
        value = rows[0][0]
        return value if isinstance(value, int) else int(str(value))

    def bump_counter(self, conn: sqlite3.Connection, name: str, by: int) -> None:
        if by:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, by),
            )

    def counter(self, name: str) -> int:
        return self.query_int("SELECT value FROM counters WHERE name = ?", (name,))

    def scrub(self) -> None:
        """After an erasure: rewrite the file and empty the WAL so no old page survives."""
        with self.lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.conn.execute("VACUUM")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise DeviceIOError(f"cannot scrub {self.path}: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()
