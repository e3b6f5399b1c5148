"""The on-device log store: size-capped rotating JSON-lines files in ``state_dir/logs``.

It is also a personal-data holder and retention target, so erasure and
retention reach the logs like any other store.  Lines are redacted when
written, but erasure still wipes every log and crash file: the list of
sensitive literals at write time may have missed a name enrolled later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import pathlib
from collections.abc import Iterator, Mapping

from agent.errors import DeviceIOError
from agent.layout import StateLayout
from agent.logs.settings import LogSettings

LOG_FILE_NAME = "agent.jsonl"
CRASH_PREFIX = "crash-"
FAULT_FILE_NAME = "faulthandler.txt"


def overwrite_and_truncate(path: pathlib.Path, keep: bytes = b"") -> None:
    """Overwrite ``path`` with zeros (so old bytes do not linger), then write ``keep``."""
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(0)
        fh.write(keep)
        fh.truncate(len(keep))
        fh.flush()
        os.fsync(fh.fileno())


class LogStore:
    name = "logs"

    def __init__(self, state_dir: pathlib.Path, settings: LogSettings) -> None:
        self.directory = StateLayout(state_dir).logs_dir
        self.settings = settings
        self.handler: logging.handlers.RotatingFileHandler | None = None

    @property
    def live_path(self) -> pathlib.Path:
        return self.directory / LOG_FILE_NAME

    def files_oldest_first(self) -> list[pathlib.Path]:
        backups = [
            self.directory / f"{LOG_FILE_NAME}.{i}"
            for i in range(self.settings.backup_files, 0, -1)
        ]
        return [p for p in [*backups, self.live_path] if p.exists()]

    def crash_files(self) -> list[pathlib.Path]:
        if not self.directory.exists():
            return []
        return sorted(
            p for p in self.directory.iterdir()
            if p.name.startswith(CRASH_PREFIX) or p.name == FAULT_FILE_NAME
        )

    def open_handler(self) -> logging.handlers.RotatingFileHandler:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            per_file = self.settings.max_store_bytes // (self.settings.backup_files + 1)
            self.handler = logging.handlers.RotatingFileHandler(
                self.live_path,
                maxBytes=per_file,
                backupCount=self.settings.backup_files,
                encoding="utf-8",
            )
        except OSError as exc:
            raise DeviceIOError(f"cannot open log store {self.directory}: {exc}") from exc
        return self.handler

    @contextlib.contextmanager
    def _writer_paused(self) -> Iterator[None]:
        if self.handler is None:
            yield
            return
        self.handler.acquire()
        try:
            self.handler.flush()
            yield
        finally:
            self.handler.release()

    def iter_lines(self) -> Iterator[str]:
        """Every stored line, oldest first, crash records merged in by time."""
        with self._writer_paused():
            crash_records = [p for p in self.crash_files() if p.name != FAULT_FILE_NAME]
            paths = [*crash_records, *self.files_oldest_first()]
            try:
                # Read under the pause so a rotation cannot shuffle files mid-read.
                texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
            except OSError as exc:
                raise DeviceIOError(f"cannot read the log store: {exc}") from exc
        lines = (line for text in texts for line in text.splitlines() if line.strip())
        if not crash_records:
            yield from lines  # rotated files are already in time order
            return
        yield from sorted(lines, key=_timestamp)

    # --- PersonalDataHolder -------------------------------------------------

    def export_personal_data(self) -> Mapping[str, object]:
        # Lines are redacted at write time: nothing personal is meant to be here.
        total = sum(p.stat().st_size for p in self.files_oldest_first())
        return {"stored_bytes": total, "redacted_at_write": True}

    def erase_personal_data(self) -> int:
        """Wipe every log and crash file; returns the number of files wiped."""
        count = 0
        with self._writer_paused():
            try:
                for path in self.files_oldest_first():
                    count += 1
                    overwrite_and_truncate(path)
                    if path != self.live_path:
                        path.unlink()
                for path in self.crash_files():
                    count += 1
                    overwrite_and_truncate(path)
                    if path.name != FAULT_FILE_NAME:
                        path.unlink()
            except OSError as exc:
                raise DeviceIOError(f"cannot erase logs: {exc}") from exc
        return count

    # --- RetentionTarget ----------------------------------------------------

    def purge_older_than(self, cutoff: float) -> int:
        purged = 0
        with self._writer_paused():
            try:
                crash_records = [p for p in self.crash_files() if p.name != FAULT_FILE_NAME]
                for path in [*crash_records, *self.files_oldest_first()]:
                    dropped, kept = _split_by_age(path, cutoff)
                    purged += dropped
                    if path in crash_records and not kept:
                        overwrite_and_truncate(path)
                        path.unlink()
                    elif dropped:
                        overwrite_and_truncate(path, "".join(f"{k}\n" for k in kept).encode())
            except OSError as exc:
                raise DeviceIOError(f"cannot purge logs: {exc}") from exc
        return purged


def _line_time(line: str) -> float | None:
    try:
        ts = json.loads(line).get("ts")
    except (ValueError, AttributeError):
        return None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


def _timestamp(line: str) -> float:
    return _line_time(line) or 0.0


def _split_by_age(path: pathlib.Path, cutoff: float) -> tuple[int, list[str]]:
    """(lines older than cutoff, lines to keep); lines without a time are kept."""
    dropped = 0
    kept: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        ts = _line_time(line)
        if ts is not None and ts < cutoff:
            dropped += 1
        else:
            kept.append(line)
    return dropped, kept
