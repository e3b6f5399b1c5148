"""Real-SQLite and real-file personal-data stores for the rights/retention tests."""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Mapping


class SqliteHolder:
    """A small WAL-mode SQLite store of labelled items, like a gallery or watch-list."""

    def __init__(self, name: str, path: pathlib.Path) -> None:
        self.name = name
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA secure_delete=ON")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, label TEXT, "
            "blob BLOB, created_at REAL)"
        )

    def add(self, label: str, blob: bytes, created_at: float) -> None:
        self.conn.execute(
            "INSERT INTO items (label, blob, created_at) VALUES (?, ?, ?)",
            (label, blob, created_at),
        )

    def labels(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT label FROM items ORDER BY id")]

    def export_personal_data(self) -> Mapping[str, object]:
        rows = self.conn.execute("SELECT label, blob, created_at FROM items ORDER BY id")
        return {"items": [{"label": r[0], "blob": r[1], "created_at": r[2]} for r in rows]}

    def _compact(self) -> None:
        # Checkpoint the WAL into the main file and rewrite it without free pages.
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def erase_personal_data(self) -> int:
        count = self.conn.execute("DELETE FROM items").rowcount
        self._compact()
        return int(count)

    def purge_older_than(self, cutoff: float) -> int:
        count = self.conn.execute("DELETE FROM items WHERE created_at < ?", (cutoff,)).rowcount
        self._compact()
        return int(count)

    def close(self) -> None:
        self.conn.close()


def files_containing(root: pathlib.Path, marker: bytes) -> list[pathlib.Path]:
    """Every file under ``root`` whose bytes contain ``marker`` (SQLite, WAL and all)."""
    return [p for p in root.rglob("*") if p.is_file() and marker in p.read_bytes()]
