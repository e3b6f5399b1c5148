"""The agent's SQLite database: consent ledger and outbox share one file.

They share a file so that withdrawing a purpose and purging every queued item
of that purpose happen in ONE transaction: after a power cut either both
happened or neither did.  WAL mode lets the publisher read while the camera
pipeline writes; ``synchronous=FULL`` makes each commit durable.

The WAL is bounded (``journal_size_limit`` and an automatic checkpoint at half
of ``storage.wal_max_bytes``): left to SQLite's default it grows to about 4 MB
before a checkpoint, enough to fill a small state partition on its own.

A damaged file is never worked around.  ``PRAGMA quick_check`` runs at open,
and again after any error that may mean damage; a damaged file is handed to
the ``salvage`` function the daemon passes in (``drivers/storage.py``: moved
aside, its rows recovered into a fresh file by the sqlite3 shell), and the
agent goes on with the fresh file.  Without one (the CLI, which must not move
the daemon's file from under it) opening a damaged database is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from agent.errors import DeviceIOError
from agent.layout import StateLayout

SCHEMA_VERSION = 1
DEFAULT_WAL_MAX_BYTES = 4 * 1024 * 1024
PAGE_BYTES = 4096

# Primary result codes (sqlite3.h).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CONSTRAINT = 19
SQLITE_NOTADB = 26
# Errors that say nothing about the file's health: no integrity check for these.
_HEALTHY_CODES = frozenset({SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL, SQLITE_CONSTRAINT})
_DAMAGE_CODES = frozenset({SQLITE_CORRUPT, SQLITE_NOTADB})


class StorageIOError(DeviceIOError):
    """The device's own storage failed (database, high-water file, reserve, measuring).

    A :class:`DeviceIOError`, so callers that retry or answer ``unavailable``
    treat it as before; its own type lets the loop report it in one line.
    """

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
    expires_at REAL NOT NULL,
    image BLOB
);
CREATE INDEX IF NOT EXISTS outbox_purpose ON outbox (purpose);
CREATE INDEX IF NOT EXISTS outbox_expiry ON outbox (expires_at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def sqlite_code(exc: BaseException | None) -> int | None:
    """The primary SQLite result code behind ``exc`` (or its causes), if any."""
    while exc is not None:
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            return None if code is None else int(code) & 0xFF
        exc = exc.__cause__
    return None


def is_disk_full(exc: BaseException) -> bool:
    return sqlite_code(exc) == SQLITE_FULL or "disk is full" in str(exc)


def _first_line(text: object, limit: int = 200) -> str:
    return str(text).strip().splitlines()[0][:limit] if str(text).strip() else "unknown"


# How long opening waits out another process that holds the file for a moment.
OPEN_BUSY_SECONDS = 30.0


def retry_while_busy(
    open_once: Callable[[], sqlite3.Connection],
    *,
    budget_seconds: float = OPEN_BUSY_SECONDS,
) -> sqlite3.Connection:
    """``open_once()``, again after a short pause for as long as SQLite answers BUSY.

    SQLite's busy timeout does not cover every moment of opening a WAL file: while
    another process creates the file and switches it to WAL, runs WAL recovery, or
    cleans up as the last connection closes, an opener gets ``database is locked``
    at once (sqlite.org/wal.html, "Sometimes queries return SQLITE_BUSY").  A
    technician's ``logs bundle`` started while the daemon starts must wait, not fail.
    """
    deadline = time.monotonic() + budget_seconds
    pause = 0.005
    while True:
        try:
            return open_once()
        except DeviceIOError as exc:
            if sqlite_code(exc) != SQLITE_BUSY or time.monotonic() + pause > deadline:
                raise
        # Jittered so that processes that collided once do not collide again.
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.25)


def open_sqlite(
    path: pathlib.Path,
    schema: str,
    what: str,
    *,
    wal_max_bytes: int = DEFAULT_WAL_MAX_BYTES,
) -> sqlite3.Connection:
    """A durable SQLite connection: WAL, fsync on every commit, deleted data overwritten.

    Shared by every store of the agent; ``what`` names the store in the error.
    """
    return retry_while_busy(lambda: _open_sqlite_once(path, schema, what, wal_max_bytes))


def _open_sqlite_once(
    path: pathlib.Path, schema: str, what: str, wal_max_bytes: int
) -> sqlite3.Connection:
    conn: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Erased personal data must not linger in free pages.
        conn.execute("PRAGMA secure_delete=ON")
        # Checkpoint at half the bound, and cut the log back to the bound after each reset.
        conn.execute(f"PRAGMA journal_size_limit={int(wal_max_bytes)}")
        conn.execute(f"PRAGMA wal_autocheckpoint={max(16, wal_max_bytes // PAGE_BYTES // 2)}")
        conn.executescript(schema)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise StorageIOError(f"cannot open {what} {path}: {exc}") from exc
    return conn


def quick_check(conn: sqlite3.Connection) -> str | None:
    """None if ``PRAGMA quick_check`` finds the file sound, else what it (or SQLite) said."""
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        return _first_line(exc)
    if [tuple(r) for r in rows] == [("ok",)]:
        return None
    return "; ".join(_first_line(r[0], 120) for r in rows)


@dataclasses.dataclass(frozen=True)
class SalvageReport:
    """What happened to a damaged database file."""

    problem: str
    moved_to: pathlib.Path | None
    # ".recover", ".dump" or "none" (nothing could be read: a fresh, empty file).
    tool: str
    # Rows per table found in the fresh file (lost_and_found: rows of unknown tables).
    recovered: Mapping[str, int]
    note: str = ""


# ``salvage(path, problem)``: move the damaged file aside and leave a fresh one at ``path``.
Salvager = Callable[[pathlib.Path, str], SalvageReport]


class Database:
    """One SQLite connection guarded by a lock (paho calls back from its thread)."""

    def __init__(
        self,
        path: pathlib.Path,
        *,
        salvage: Salvager | None = None,
        wal_max_bytes: int = DEFAULT_WAL_MAX_BYTES,
    ) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.wal_max_bytes = wal_max_bytes
        self._salvage = salvage
        # Every salvage this process did, for the storage guard to report once.
        self.salvaged: list[SalvageReport] = []
        # An error that may mean damage; the next pass runs an integrity check.
        self.suspect: str | None = None
        self._schema: list[str] = []
        self.conn = self._open_checked()

    @classmethod
    def in_state_dir(cls, state_dir: pathlib.Path) -> Database:
        return cls(StateLayout(state_dir).database)

    # --- opening, checking, salvaging -------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        return retry_while_busy(self._open_once)

    def _open_once(self) -> sqlite3.Connection:
        conn = _open_sqlite_once(self.path, _SCHEMA, "database", self.wal_max_bytes)
        try:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(outbox)")}
            if "image" not in columns:
                # Before crypto-erase, images rode inside the payload; now they are
                # sealed apart, under the event_snapshots key.
                conn.execute("ALTER TABLE outbox ADD COLUMN image BLOB")
        except sqlite3.Error as exc:
            conn.close()
            raise StorageIOError(f"cannot open database {self.path}: {exc}") from exc
        return conn

    def _open_checked(self) -> sqlite3.Connection:
        try:
            conn = self._open()
        except DeviceIOError as exc:
            if sqlite_code(exc) not in _DAMAGE_CODES:
                raise
            return self._salvage_and_open(_first_line(exc.__cause__ or exc))
        problem = quick_check(conn)
        if problem is None:
            return conn
        conn.close()
        return self._salvage_and_open(problem)

    def _salvage_and_open(self, problem: str) -> sqlite3.Connection:
        if self._salvage is None:
            raise StorageIOError(
                f"EA-DB-001 database {self.path} is damaged ({problem}); `edge-agent run` "
                "moves it aside and salvages its rows at start"
            )
        report = self._salvage(self.path, problem)
        self.salvaged.append(report)
        conn = self._open()
        # Tables other stores made in this file (principals...) that the salvage lost.
        for statement in self._schema:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(statement)
        return conn

    def remember_schema(self) -> None:
        """Note every table and index, to re-create any a later salvage could not recover."""
        rows = self.query(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY type = 'index', rowid"
        )
        self._schema = [str(r[0]) for r in rows]

    def note_error(self, exc: BaseException) -> None:
        """Remember an error that may mean the file is damaged (checked by :meth:`check`)."""
        code = sqlite_code(exc)
        if code is not None and code not in _HEALTHY_CODES and self.suspect is None:
            self.suspect = _first_line(exc)

    def check(self) -> SalvageReport | None:
        """Run the integrity check; salvage the file in place if it is damaged.

        Holds the lock throughout, so the broker thread's acknowledgements wait
        for the fresh file instead of failing against the old one.
        """
        with self.lock:
            self.suspect = None
            problem = quick_check(self.conn)
            if problem is None:
                return None
            self.conn.close()
            self.conn = self._salvage_and_open(problem)
            return self.salvaged[-1]

    # --- use ------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolls back on any exception.

        SQLite errors leave as :class:`DeviceIOError` (``unavailable`` to a
        command's requester), with the SQLite error as their cause.
        """
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self.note_error(exc)
                raise StorageIOError(f"database busy or broken: {exc}") from exc
            try:
                yield self.conn
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does).
                if self.conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    self.note_error(exc)
                    raise StorageIOError(f"database write failed: {exc}") from exc
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # A failed COMMIT (busy, deferred constraint, I/O) can leave the
                # transaction open; every later BEGIN would then fail for good.
                if self.conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                self.note_error(exc)
                raise StorageIOError(f"commit failed: {exc}") from exc

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.lock:
            try:
                return list(self.conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                self.note_error(exc)
                raise StorageIOError(f"database read failed: {exc}") from exc

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

    # --- space ----------------------------------------------------------------------

    def free_page_bytes(self) -> int:
        """Bytes of free pages inside the file: room new rows take before the file grows."""
        return self.query_int("PRAGMA freelist_count") * self.query_int("PRAGMA page_size")

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        """Copy the WAL into the file (``RESTART``: and start the log over from its head)."""
        if mode not in {"PASSIVE", "FULL", "RESTART", "TRUNCATE"}:
            raise ValueError(f"bad checkpoint mode {mode!r}")
        self.query(f"PRAGMA wal_checkpoint({mode})")

    def scrub(self) -> None:
        """After an erasure: rewrite the file and empty the WAL so no old page survives."""
        with self.lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.conn.execute("VACUUM")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                self.note_error(exc)
                raise StorageIOError(f"cannot scrub {self.path}: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()
