"""Processes that open the state at the same moment all get in.

CI caught ``logs bundle`` failing with ``database is locked`` while ``consent
show`` and ``provision label`` created the same fresh state directory.  SQLite's
busy timeout does not cover the moments when another process is switching a new
file to WAL, running WAL recovery or cleaning up as the last connection closes;
the opener then gets BUSY at once.  Here real processes, released together by a
barrier, open the database and the audit log of the state directory and write
to both, round after round, each round on a fresh directory (creation is the
widest window).  Before the open
retried BUSY, about one opener in eleven failed.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import pathlib
from pathlib import Path

from agent.audit import AuditLog
from agent.database import Database
from agent.layout import StateLayout

ROUNDS = 25
OPENERS = 4


def _open_everything(state_dir: str, barrier: multiprocessing.synchronize.Barrier) -> str:
    layout = StateLayout(pathlib.Path(state_dir))
    barrier.wait(timeout=60)
    try:
        database = Database(layout.database)
        with database.transaction() as conn:
            conn.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (str(os.getpid()),))
        database.conn.close()
        audit = AuditLog.in_state_dir(layout.root)
        audit.record("test.opened", {"pid": os.getpid()}, now=1.0)
        audit.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def test_every_process_opening_a_fresh_state_at_once_gets_in(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    failures: list[str] = []
    with context.Manager() as manager, context.Pool(OPENERS) as pool:
        for round_number in range(ROUNDS):
            barrier = manager.Barrier(OPENERS)
            state_dir = str(tmp_path / f"state-{round_number}")
            results = pool.starmap(_open_everything, [(state_dir, barrier)] * OPENERS)
            failures += [result for result in results if result]
    assert failures == []
    # And each round made one sound database and one audit chain holding every opener.
    for round_number in range(ROUNDS):
        state = tmp_path / f"state-{round_number}"
        check = Database(StateLayout(state).database)
        assert check.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert check.conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert check.conn.execute("SELECT count(*) FROM counters").fetchone()[0] == OPENERS
        check.conn.close()
        audit = AuditLog.in_state_dir(state)
        assert len(audit.entries()) == OPENERS
        assert audit.verify().ok
        audit.close()
