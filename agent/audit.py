"""Append-only audit log, chained under a device key (implements :class:`agent.ports.AuditSink`).

Each entry stores ``mac = HMAC-SHA256(key, prev_mac || canonical(entry))``,
where the canonical form is sorted-key compact JSON of ``{index, at, kind,
detail}`` and the key is the device's audit key (``StateLayout.audit_key``,
32 random bytes, 0600).  An unkeyed hash chain (the format before this one)
can be rewritten by anyone who can write the file: delete a record, recompute
every later hash, and it verifies.  Under a key that only the device holds a
rewritten chain does not verify, and the head (index and MAC of the newest
entry) is published over MQTT (``audit.head``) and included in every export,
so a chain that was cut short or recomputed -- even by someone who stole the
key -- no longer matches what receivers saw.

:meth:`AuditLog.verify` says which of these it found (:class:`Verdict`):
``intact``; ``edited`` (an entry changed, removed or moved, its MAC left as it
was); ``rechained`` (MACs recomputed under another key, or history before a
published head rewritten); ``truncated`` (the log ends before a published head).

SQLite triggers refuse UPDATE and DELETE so honest code cannot rewrite history
by accident; the MACs catch someone who drops the triggers.

Details must not contain personal data -- the trail outlives erasures -- so
callers record counts, purposes and holder names, never values.

A log of the old unkeyed format is migrated when opened: its SHA-256 chain is
checked first, and only an intact one is re-chained under the key (with an
``audit.migrated`` entry naming the old head); a broken one is refused, since
re-chaining it would launder the tampering.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import hmac
import json
import pathlib
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from agent.atomicfile import read_optional, write_atomic
from agent.database import open_sqlite
from agent.errors import DecodeError, DeviceIOError, VerificationError
from agent.layout import StateLayout

GENESIS = bytes(32)
KEY_BYTES = 32
MAX_DETAIL_BYTES = 8 * 1024
CHAIN = "hmac-sha256"
LEGACY_CHAIN = "sha256"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    idx INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_NO_UPDATE_TRIGGER = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
)


class Verdict(enum.Enum):
    INTACT = "intact"
    EDITED = "edited"
    RECHAINED = "rechained"
    TRUNCATED = "truncated"


def canonical(index: int, at: float, kind: str, detail_json: str) -> bytes:
    return json.dumps(
        {"index": index, "at": at, "kind": kind, "detail": json.loads(detail_json)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


def chain_mac(key: bytes, prev: bytes, body: bytes) -> bytes:
    """The MAC of an entry whose canonical form is ``body``, following ``prev``."""
    return hmac.new(key, prev + body, hashlib.sha256).digest()


def legacy_hash(prev: bytes, index: int, at: float, kind: str, detail_json: str) -> bytes:
    """The unkeyed chain of the old format; only read, to check a log before migrating it."""
    return hashlib.sha256(prev + canonical(index, at, kind, detail_json)).digest()


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    index: int
    at: float
    kind: str
    detail: Mapping[str, object]
    # The entry's MAC: the chain's head when this entry is the newest.
    hash: bytes


@dataclasses.dataclass(frozen=True)
class AuditHead:
    """The newest entry's index and MAC (index -1 and the genesis value for an empty log)."""

    index: int
    mac: bytes

    @property
    def entries(self) -> int:
        return self.index + 1


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_index: int | None = None
    reason: str = ""
    head: bytes = GENESIS
    verdict: Verdict = Verdict.INTACT


Row = tuple[int, float, str, str, bytes, bytes]


def load_or_create_key(path: pathlib.Path, *, may_create: bool) -> bytes:
    """The audit key; made only for a log with no entries, never silently replaced.

    A fresh key under an existing chain would make every honest entry look
    forged, so a missing or damaged key is an error there.  Creation is a hard
    link of a fully written temp file: of two processes starting at once
    (daemon and CLI) exactly one key wins and both use it.
    """
    existing = read_optional(path, KEY_BYTES)
    if existing is not None and len(existing) == KEY_BYTES:
        return existing
    if existing is not None or not may_create:
        state = "damaged" if existing is not None else "missing"
        raise VerificationError(
            f"audit key {path} is {state} but the audit log already has entries: they can "
            "no longer be verified. Keep the log as evidence (move it aside) and restart "
            "to begin a new one"
        )
    with contextlib.suppress(FileExistsError):
        write_atomic(path, secrets.token_bytes(KEY_BYTES), exclusive=True)
    return load_or_create_key(path, may_create=False)


class AuditLog:
    def __init__(self, path: pathlib.Path, key_path: pathlib.Path | None = None) -> None:
        self.path = path
        # The layout keeps the key beside the log, in the state directory.
        self.key_path = key_path or StateLayout(path.parent).audit_key
        self._lock = threading.Lock()
        self._conn = open_sqlite(path, _SCHEMA, "audit log")
        try:
            self._key = self._open_chain()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def in_state_dir(cls, state_dir: pathlib.Path) -> AuditLog:
        layout = StateLayout(state_dir)
        return cls(layout.audit, layout.audit_key)

    # --- opening and migration -------------------------------------------------

    def _open_chain(self) -> bytes:
        try:
            chain, rows = self._format()
            if chain == CHAIN:
                return load_or_create_key(self.key_path, may_create=rows == 0)
            if chain is not None:
                raise VerificationError(f"audit log {self.path} uses an unknown chain {chain!r}")
            key = load_or_create_key(self.key_path, may_create=True)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read inside the lock: another process may have migrated meanwhile.
                chain, rows = self._format()
                if chain is None:
                    if rows:
                        self._migrate(key)
                    self._conn.execute(
                        "INSERT INTO audit_meta (key, value) VALUES ('chain', ?)", (CHAIN,)
                    )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return key
        except sqlite3.Error as exc:
            raise DeviceIOError(f"cannot open audit log {self.path}: {exc}") from exc

    def _format(self) -> tuple[str | None, int]:
        row = self._conn.execute("SELECT value FROM audit_meta WHERE key = 'chain'").fetchone()
        count = int(self._conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
        return (None if row is None else str(row[0])), count

    def _migrate(self, key: bytes) -> None:
        """Re-chain an intact old-format log under ``key``; refuse a broken one."""
        rows = [
            (int(i), float(a), str(k), str(d), bytes(p), bytes(h))
            for i, a, k, d, p, h in self._conn.execute(
                "SELECT idx, at, kind, detail, prev, hash FROM audit ORDER BY rowid"
            )
        ]
        prev = GENESIS
        for position, (idx, at, kind, detail, stored_prev, digest) in enumerate(rows):
            try:
                good = idx == position and stored_prev == prev and (
                    legacy_hash(prev, idx, at, kind, detail) == digest
                )
            except ValueError:
                good = False
            if not good:
                raise VerificationError(
                    f"audit log {self.path} has the old unkeyed format and its chain is broken "
                    f"at index {position}; re-chaining it under the device key would hide that. "
                    "Keep it as evidence (move it aside) and restart to begin a new log"
                )
            prev = digest
        self._conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        mac = GENESIS
        for idx, at, kind, detail, _, _ in rows:
            new = chain_mac(key, mac, canonical(idx, at, kind, detail))
            self._conn.execute("UPDATE audit SET prev = ?, hash = ? WHERE idx = ?", (mac, new, idx))
            mac = new
        self._conn.execute(_NO_UPDATE_TRIGGER)
        # Stamped with the last entry's time: agent/ has no clock of its own, and the
        # migration happens on the first open after the upgrade anyway.
        detail = json.dumps(
            {"from": LEGACY_CHAIN, "to": CHAIN, "entries": len(rows), "old_head": prev.hex()},
            sort_keys=True,
            separators=(",", ":"),
        )
        index, at = len(rows), rows[-1][1]
        self._conn.execute(
            "INSERT INTO audit (idx, at, kind, detail, prev, hash) VALUES (?, ?, ?, ?, ?, ?)",
            (index, at, "audit.migrated", detail, mac,
             chain_mac(key, mac, canonical(index, at, "audit.migrated", detail))),
        )

    # --- writing ---------------------------------------------------------------

    def record(self, kind: str, detail: Mapping[str, object], now: float) -> None:
        try:
            detail_json = json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"audit detail is not JSON-able: {exc}") from exc
        if len(detail_json) > MAX_DETAIL_BYTES or not kind or len(kind) > 64:
            raise DecodeError("audit kind or detail too large")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute(
                        "SELECT idx, hash FROM audit ORDER BY idx DESC LIMIT 1"
                    ).fetchone()
                    index, prev = (row[0] + 1, bytes(row[1])) if row else (0, GENESIS)
                    digest = chain_mac(
                        self._key, prev, canonical(index, float(now), kind, detail_json)
                    )
                    self._conn.execute(
                        "INSERT INTO audit (idx, at, kind, detail, prev, hash) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (index, float(now), kind, detail_json, prev, digest),
                    )
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise DeviceIOError(f"cannot append to audit log: {exc}") from exc

    # --- reading ---------------------------------------------------------------

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise DeviceIOError(f"cannot read audit log: {exc}") from exc

    def _rows(self) -> Iterator[Row]:
        rows = self._query("SELECT idx, at, kind, detail, prev, hash FROM audit ORDER BY rowid")
        for idx, at, kind, detail, prev, digest in rows:
            yield int(idx), float(at), str(kind), str(detail), bytes(prev), bytes(digest)

    def entries(self) -> list[AuditEntry]:
        return [
            AuditEntry(idx, at, kind, json.loads(detail), digest)
            for idx, at, kind, detail, _, digest in self._rows()
        ]

    def entries_after(
        self, index: int, kinds: Iterable[str], limit: int = 100
    ) -> list[AuditEntry]:
        """Up to ``limit`` entries of ``kinds`` with an index above ``index``, oldest first."""
        wanted = sorted(set(kinds))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = self._query(
            # Only "?" placeholders are spliced in; every value is bound.
            f"SELECT idx, at, kind, detail, hash FROM audit WHERE idx > ? AND kind IN ({marks}) "  # noqa: S608
            "ORDER BY idx LIMIT ?",
            (index, *wanted, limit),
        )
        found = []
        for idx, at, kind, detail, digest in rows:
            try:
                parsed = json.loads(str(detail))
            except ValueError:
                parsed = {}
            found.append(AuditEntry(int(idx), float(at), str(kind),
                                    parsed if isinstance(parsed, dict) else {}, bytes(digest)))
        return found

    def head(self) -> AuditHead:
        rows = self._query("SELECT idx, hash FROM audit ORDER BY idx DESC LIMIT 1")
        if not rows:
            return AuditHead(-1, GENESIS)
        idx, digest = rows[0]
        return AuditHead(int(idx), bytes(digest))

    # --- verifying -------------------------------------------------------------

    def verify(
        self, expected_head: bytes | None = None, head_index: int | None = None
    ) -> VerifyResult:
        """Walk the chain under the key; classify what is wrong, if anything.

        ``expected_head`` with ``head_index`` is a head published earlier (the
        ``audit.head`` event, an export): entries cut off after it, or history
        before it recomputed, show only against such a head.  Without
        ``head_index`` the head is looked up among all entries.
        """
        rows = list(self._rows())
        macs = [row[5] for row in rows]
        head = macs[-1] if macs else GENESIS
        broken = self._first_break(rows)
        if head_index is None and expected_head is not None:
            head_index = macs.index(expected_head) if expected_head in macs else None
            if head_index is None and broken is None:
                return VerifyResult(
                    False, len(rows), len(rows),
                    "recorded head not found: entries were removed from the end "
                    "(or the chain was recomputed)", head, Verdict.TRUNCATED,
                )
        if broken is not None:
            position, verdict, reason = broken
            if (
                verdict is Verdict.RECHAINED
                and expected_head is not None
                and head_index is not None
                and position <= head_index < len(rows)
                and hmac.compare_digest(macs[head_index], expected_head)
            ):
                # The MACs are the ones published: the content under them changed.
                verdict, reason = Verdict.EDITED, "entry content altered"
            return VerifyResult(False, len(rows), position, reason, head, verdict)
        if expected_head is not None and head_index is not None:
            if head_index >= len(rows):
                return VerifyResult(
                    False, len(rows), len(rows),
                    f"the log ends at index {len(rows) - 1} but index {head_index} was "
                    "published: entries were removed from the end", head, Verdict.TRUNCATED,
                )
            if not hmac.compare_digest(macs[head_index], expected_head):
                return VerifyResult(
                    False, len(rows), head_index,
                    f"entry {head_index} is not the one published: the chain up to it was "
                    "recomputed", head, Verdict.RECHAINED,
                )
        return VerifyResult(True, len(rows), None, "", head, Verdict.INTACT)

    def _first_break(self, rows: list[Row]) -> tuple[int, Verdict, str] | None:
        prev = GENESIS
        bad: list[int] = []
        structural: tuple[int, str] | None = None
        for position, (idx, at, kind, detail, stored_prev, digest) in enumerate(rows):
            if idx != position:
                structural = (position, f"expected index {position}, found {idx}: "
                              "an entry was removed or moved")
                break
            if stored_prev != prev:
                structural = (position, "link to the previous entry broken: an entry was "
                              "removed or replaced")
                break
            try:
                good = hmac.compare_digest(
                    chain_mac(self._key, prev, canonical(idx, at, kind, detail)), digest
                )
            except ValueError:
                good = False
            if not good:
                bad.append(position)
            prev = digest
        if bad and (structural is None or bad[0] < structural[0]):
            first = bad[0]
            # Every entry from the first bad one to the end fails, yet each links to
            # the one before: the chain was recomputed, under a key that is not ours.
            if structural is None and len(bad) >= 2 and bad == list(range(first, len(rows))):
                return first, Verdict.RECHAINED, (
                    f"entries from index {first} on carry MACs under another key: "
                    "the chain was recomputed"
                )
            return first, Verdict.EDITED, "entry content altered"
        if structural is not None:
            return structural[0], Verdict.EDITED, structural[1]
        return None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
