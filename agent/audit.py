"""Append-only, hash-chained audit log (implements :class:`agent.ports.AuditSink`).

Each entry stores ``hash = SHA-256(prev_hash || canonical(entry))`` where the
canonical form is sorted-key compact JSON of ``{index, at, kind, detail}``.
Changing, deleting, reordering or cutting out entries breaks the chain at the
first affected index, which :meth:`AuditLog.verify` reports.  SQLite triggers
refuse UPDATE and DELETE so honest code cannot rewrite history by accident;
the chain is what catches someone who drops the triggers.  (Cutting entries
off the *end* is only detectable against a head hash kept elsewhere, e.g. the
one ``verify`` prints, which operators can record.)

Details must not contain personal data -- the trail outlives erasures -- so
callers record counts, purposes and holder names, never values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping

from agent.database import open_sqlite
from agent.errors import DecodeError, DeviceIOError
from agent.layout import StateLayout

GENESIS = bytes(32)
MAX_DETAIL_BYTES = 8 * 1024

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
"""


def canonical(index: int, at: float, kind: str, detail_json: str) -> bytes:
    return json.dumps(
        {"index": index, "at": at, "kind": kind, "detail": json.loads(detail_json)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


def chain_hash(prev: bytes, index: int, at: float, kind: str, detail_json: str) -> bytes:
    return hashlib.sha256(prev + canonical(index, at, kind, detail_json)).digest()


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    index: int
    at: float
    kind: str
    detail: Mapping[str, object]
    hash: bytes


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_index: int | None = None
    reason: str = ""
    head: bytes = GENESIS


class AuditLog:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = open_sqlite(path, _SCHEMA, "audit log")

    @classmethod
    def in_state_dir(cls, state_dir: pathlib.Path) -> AuditLog:
        return cls(StateLayout(state_dir).audit)

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
                    digest = chain_hash(prev, index, float(now), kind, detail_json)
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

    def _rows(self) -> Iterator[tuple[int, float, str, str, bytes, bytes]]:
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT idx, at, kind, detail, prev, hash FROM audit ORDER BY rowid"
                ).fetchall()
            except sqlite3.Error as exc:
                raise DeviceIOError(f"cannot read audit log: {exc}") from exc
        for idx, at, kind, detail, prev, digest in rows:
            yield int(idx), float(at), str(kind), str(detail), bytes(prev), bytes(digest)

    def entries(self) -> list[AuditEntry]:
        return [
            AuditEntry(idx, at, kind, json.loads(detail), digest)
            for idx, at, kind, detail, _, digest in self._rows()
        ]

    def verify(self, expected_head: bytes | None = None) -> VerifyResult:
        """Walk the chain; report the first index where it breaks.

        ``expected_head`` is a head hash recorded earlier (e.g. printed by a
        previous ``audit verify``): if it is no longer in the chain, entries
        were cut off the end.
        """
        result, heads = self._walk()
        if result.ok and expected_head is not None and expected_head not in heads:
            return VerifyResult(
                False, result.entries, result.entries,
                "recorded head not found: entries were removed from the end", result.head,
            )
        return result

    def _walk(self) -> tuple[VerifyResult, set[bytes]]:
        heads = {GENESIS}
        prev = GENESIS
        count = 0
        for position, (idx, at, kind, detail, stored_prev, digest) in enumerate(self._rows()):
            count = position + 1
            problem = None
            if idx != position:
                problem = f"expected index {position}, found {idx}"
            elif stored_prev != prev:
                problem = "link to previous entry broken"
            else:
                try:
                    if chain_hash(prev, idx, at, kind, detail) != digest:
                        problem = "entry content altered"
                except ValueError:
                    problem = "entry is not valid JSON"
            if problem:
                return VerifyResult(False, count, position, problem, prev), heads
            prev = digest
            heads.add(digest)
        return VerifyResult(True, count, None, "", prev), heads

    def close(self) -> None:
        with self._lock:
            self._conn.close()
