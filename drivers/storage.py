"""Salvaging a damaged agent database with the sqlite3 shell.

The daemon hands this to :class:`agent.database.Database` as its ``salvage``
function.  The damaged file (and its WAL, which may hold the newest commits)
is moved into a folder of its own under ``damaged/`` and kept there for
forensics; its rows are read out by SQLite's own shell and loaded into a fresh
file that then takes the damaged one's place.  No page is parsed here: that
is SQLite's job, and its shell is the well-kept tool for it.

* ``.recover`` first: it walks every page, including ones no longer linked
  from the schema, and puts rows of unknown tables in ``lost_and_found``.  It
  needs the ``sqlite_dbpage`` table, which some builds (Debian 12's) leave out.
* ``.dump`` otherwise: it reads every table it can reach, steps over damaged
  pages, and ends in ``ROLLBACK`` when it met damage -- which is turned into
  ``COMMIT`` on the way through, since keeping what could be read is the point.
* Nothing readable (or no shell, or no room): the fresh file starts empty,
  and the report says so.  The agent keeps running either way.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import IO

from agent.database import SalvageReport, StorageIOError
from agent.layout import StateLayout

SHELL = "sqlite3"
DEADLINE_SECONDS = 600.0
_DUMP_ROLLBACK = b"ROLLBACK; -- due to errors\n"


def _shell() -> str | None:
    return shutil.which(SHELL) or next(
        (p for p in ("/usr/bin/sqlite3", "/usr/local/bin/sqlite3") if os.access(p, os.X_OK)),
        None,
    )


def _fsync_dir(folder: pathlib.Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_aside(layout: StateLayout) -> pathlib.Path:
    """Move the database and its WAL into a fresh ``damaged/<stamp>/``; drop its shm."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    copy = layout.damaged_copy(stamp)
    n = 1
    while copy.parent.exists():
        n += 1
        copy = layout.damaged_copy(f"{stamp}-{n}")
    copy.parent.mkdir(parents=True, mode=0o700)
    os.replace(layout.database, copy)
    if layout.database_wal.exists():
        # Same suffix as SQLite's, so the shell reads the WAL's commits too.
        os.replace(layout.database_wal, copy.with_name(copy.name + "-wal"))
    # The shared-memory index is rebuilt from the WAL; a stale one could mislead the shell.
    layout.database_shm.unlink(missing_ok=True)
    _fsync_dir(copy.parent)
    _fsync_dir(layout.root)
    return copy


def _pump(source: IO[bytes], sink: IO[bytes], *, fix_dump: bool) -> None:
    for line in source:
        sink.write(b"COMMIT;\n" if fix_dump and line == _DUMP_ROLLBACK else line)


def _run(shell: str, damaged: pathlib.Path, scratch: pathlib.Path, command: str) -> str | None:
    """Stream ``sqlite3 DAMAGED COMMAND`` into ``sqlite3 SCRATCH``; None, or why it failed."""
    scratch.unlink(missing_ok=True)
    with tempfile.TemporaryFile() as errors:
        reader = subprocess.Popen(
            [shell, "-batch", str(damaged), command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        writer = subprocess.Popen(
            [shell, "-batch", str(scratch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert reader.stdout is not None and writer.stdin is not None
        try:
            with contextlib.suppress(BrokenPipeError):
                _pump(reader.stdout, writer.stdin, fix_dump=command == ".dump")
                writer.stdin.close()
            read_rc = reader.wait(DEADLINE_SECONDS)
            writer.wait(DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            return f"{command} took longer than {DEADLINE_SECONDS:.0f} s"
        finally:
            for proc in (reader, writer):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        errors.seek(0)
        said = errors.read(4096).decode("utf-8", "replace").strip()
    if read_rc != 0:
        return f"{command} failed: {said.splitlines()[-1] if said else f'exit {read_rc}'}"
    return None


def _count_rows(path: pathlib.Path) -> Mapping[str, int]:
    """Rows per table of the fresh file; raises sqlite3.Error if it is no usable database."""
    conn = sqlite3.connect(str(path))
    try:
        if conn.execute("PRAGMA quick_check").fetchone() != ("ok",):
            raise sqlite3.DatabaseError("the salvaged file fails its own integrity check")
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        counts = {}
        for table in tables:
            quoted = table.replace('"', '""')
            counts[table] = int(conn.execute(f'SELECT COUNT(*) FROM "{quoted}"').fetchone()[0])  # noqa: S608
        return counts
    finally:
        conn.close()


def salvage_database(path: pathlib.Path, problem: str) -> SalvageReport:
    """Move the damaged database at ``path`` aside and leave a fresh one, salvaged, in its place."""
    layout = StateLayout(path.parent)
    if layout.database != path:
        raise StorageIOError(f"salvage knows only the agent database, not {path}")
    try:
        copy = _move_aside(layout)
    except OSError as exc:
        raise StorageIOError(
            f"EA-DB-001 database {path} is damaged ({problem}) and cannot be moved aside: "
            f"{exc.strerror or exc}"
        ) from exc
    scratch = layout.salvage_scratch
    shell = _shell()
    notes: list[str] = []
    if shell is None:
        notes.append(f"no {SHELL} shell installed (Debian package sqlite3): nothing salvaged")
    else:
        for command in (".recover", ".dump"):
            failure = _run(shell, copy, scratch, command)
            if failure is None:
                try:
                    counts = _count_rows(scratch)
                except sqlite3.Error as exc:
                    failure = f"{command}: {exc}"
                else:
                    os.replace(scratch, path)
                    _fsync_dir(layout.root)
                    return SalvageReport(problem, copy.parent, command, counts, "; ".join(notes))
            notes.append(failure)
    # Nothing usable: start afresh (the damaged copy stays for forensics).
    scratch.unlink(missing_ok=True)
    return SalvageReport(problem, copy.parent, "none", {}, "; ".join(notes)[:300])
