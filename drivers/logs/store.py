"""The on-device log store: size-capped rotating files of sealed lines in ``state_dir/logs``.

Each record is one line: the redacted JSON text sealed (AES-256-GCM,
:mod:`agent.sealing`) under the ``troubleshooting_logs`` data key, in base64,
so the rotating handler still counts, rolls and drops whole lines.  Crash
records are sealed the same way.  Destroying that key (withdrawal, erasure)
leaves every copy unreadable -- a rotated-away file, a block the file system
freed, a file replaced by rename -- and readers skip such lines silently.
The store keeps logging afterwards: the next line makes a new key.

It is also a personal-data holder and retention target, so erasure and
retention reach the logs like any other store.  Lines are redacted when
written, but erasure still wipes every log and crash file: the list of
sensitive literals at write time may have missed a name enrolled later.
Lines written before sealing (JSON in the clear) are still read, and sealed
by the next purge or key rotation that rewrites their file.

``faulthandler.txt`` is the one file written in the clear: a hard crash
cannot run Python, so the interpreter's C code writes the stack (file names
and line numbers, no data) there; the next start seals it into a crash
record and wipes the file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import json
import logging
import logging.handlers
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from agent.atomicfile import write_atomic
from agent.errors import DeviceIOError
from agent.layout import StateLayout
from agent.logs.settings import LogSettings
from agent.purposes import Purpose
from agent.sealing import DataKey, KeyDestroyed, SealedDataError, open_sealed, read_header
from drivers.logs.files import replace_shredding_old

if TYPE_CHECKING:
    from agent.keystore import DataKeys

LOG_FILE_NAME = "agent.jsonl"
CRASH_PREFIX = "crash-"
FAULT_FILE_NAME = "faulthandler.txt"
DOMAIN = Purpose.TROUBLESHOOTING_LOGS.value
LINE_CONTEXT = b"logs:line"


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


def seal_line(keys: DataKeys, text: str) -> str:
    """One stored line: ``text`` sealed under the current logs key, in base64 (no newline)."""
    blob = keys.seal(DOMAIN, text.encode("utf-8"), LINE_CONTEXT)
    return base64.b64encode(blob).decode("ascii")


class LineState(enum.Enum):
    CLEAR = "clear"  # written before sealing: readable, sealed on the next rewrite
    CURRENT = "current"  # sealed under the current key
    OLD = "old"  # sealed under an older key still alive (a rotation under way)
    GONE = "gone"  # its key was destroyed: erased
    DAMAGED = "damaged"  # not base64, not a sealed blob, or fails authentication


class LineReader:
    """Opens stored lines, fetching each key once per pass (no key outlives the pass)."""

    def __init__(self, keys: DataKeys, current: int | None = None) -> None:
        self._keys = keys
        self._current = current
        self._found: dict[int, DataKey | None] = {}

    def _key(self, number: int) -> DataKey | None:
        if number not in self._found:
            try:
                self._found[number] = self._keys.key(DOMAIN, number)
            except KeyDestroyed:
                self._found[number] = None
        return self._found[number]

    def read(self, stored: str) -> tuple[LineState, str | None]:
        """The state of one stored line and its text (None when it cannot be read)."""
        if stored.startswith("{"):
            return LineState.CLEAR, stored
        try:
            blob = base64.b64decode(stored, validate=True)
            header = read_header(blob)
        except (binascii.Error, ValueError, SealedDataError):
            return LineState.DAMAGED, None
        if header.domain != DOMAIN:
            return LineState.DAMAGED, None
        key = self._key(header.number)
        if key is None:
            return LineState.GONE, None
        try:
            text = open_sealed(key, blob, LINE_CONTEXT).decode("utf-8", errors="replace")
        except SealedDataError:
            return LineState.DAMAGED, None
        state = LineState.CURRENT if header.number == self._current else LineState.OLD
        return state, text


class SealedLogHandler(logging.handlers.RotatingFileHandler):
    """A rotating handler that writes each formatted record as one sealed line.

    It reopens its file when the path no longer names the file it holds open
    (a reseal replaced it), so no line is written into an unlinked file.
    """

    def __init__(self, path: pathlib.Path, keys: DataKeys, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="ascii")
        self.keys = keys

    def _replaced(self) -> bool:
        if self.stream is None:
            return True
        try:
            on_disk = os.stat(self.baseFilename)
        except FileNotFoundError:
            return True
        held = os.fstat(self.stream.fileno())
        return (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino)

    def reopen(self) -> None:
        """Drop the open file and open the path afresh (call with the handler lock held)."""
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
        self.stream = self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = seal_line(self.keys, self.format(record)) + self.terminator
            if self._replaced():
                self.reopen()
            stream = self.stream
            assert stream is not None
            if self.maxBytes > 0:
                stream.seek(0, os.SEEK_END)
                if stream.tell() + len(line) >= self.maxBytes:
                    self.doRollover()
                    stream = self.stream
                    assert stream is not None
            stream.write(line)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class LogStore:
    """Implements ``PersonalDataHolder``, ``RetentionTarget`` and ``Resealable``."""

    name = "logs"

    def __init__(self, state_dir: pathlib.Path, settings: LogSettings, *, keys: DataKeys) -> None:
        self.directory = StateLayout(state_dir).logs_dir
        self.settings = settings
        self.keys = keys
        self.handler: SealedLogHandler | None = None

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

    def _crash_records(self) -> list[pathlib.Path]:
        return [p for p in self.crash_files() if p.name != FAULT_FILE_NAME]

    def open_handler(self) -> SealedLogHandler:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            per_file = self.settings.max_store_bytes // (self.settings.backup_files + 1)
            self.handler = SealedLogHandler(
                self.live_path, self.keys, per_file, self.settings.backup_files
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

    def seal(self, text: str) -> str:
        """``text`` as a stored line (crash records use it)."""
        return seal_line(self.keys, text)

    def lines_in(self, path: pathlib.Path) -> list[str]:
        """The readable lines of one store file; erased (key destroyed) lines are skipped."""
        reader = LineReader(self.keys)
        found = (reader.read(line)[1] for line in _stored_lines(path.read_bytes()))
        return [text for text in found if text is not None]

    def iter_lines(self) -> Iterator[str]:
        """Every readable line, oldest first, crash records merged in by time."""
        with self._writer_paused():
            crash_records = self._crash_records()
            paths = [*crash_records, *self.files_oldest_first()]
            try:
                # Read under the pause so a rotation cannot shuffle files mid-read.
                raw = [p.read_bytes() for p in paths]
            except OSError as exc:
                raise DeviceIOError(f"cannot read the log store: {exc}") from exc
        reader = LineReader(self.keys)
        found = (reader.read(line)[1] for data in raw for line in _stored_lines(data))
        lines = (text for text in found if text is not None and text.strip())
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

    # --- Resealable ---------------------------------------------------------

    def reseal_personal_data(self) -> int:
        """Move every line to the current key; returns the lines resealed.

        Each file is replaced whole (``write_atomic``): a kill leaves the old or
        the new file.  A file that held lines in the clear is then overwritten
        through the old inode, so the clear text does not linger in freed blocks.
        """
        resealed = 0
        with self._writer_paused():
            paths = [*self._crash_records(), *self.files_oldest_first()]
            if not paths:
                return 0
            reader = LineReader(self.keys, self.keys.current(DOMAIN).number)
            try:
                for path in paths:
                    resealed += self._reseal_file(path, reader)
            except OSError as exc:
                raise DeviceIOError(f"cannot reseal logs: {exc}") from exc
        return resealed

    def _reseal_file(self, path: pathlib.Path, reader: LineReader) -> int:
        stored_lines = _stored_lines(path.read_bytes())
        kept: list[str] = []
        resealed = 0
        clear = False
        for stored in stored_lines:
            state, text = reader.read(stored)
            if state is LineState.CURRENT:
                kept.append(stored)
            elif text is not None:  # in the clear, or under an older key
                kept.append(self.seal(text))
                resealed += 1
                clear = clear or state is LineState.CLEAR
            # else its key is destroyed or it is damaged: nobody can read it, it goes
        if resealed == 0 and len(kept) == len(stored_lines):
            return 0
        is_live = path == self.live_path
        data = "".join(f"{k}\n" for k in kept).encode("ascii") if kept or is_live else None
        if clear:
            replace_shredding_old(path, data)
        elif data is not None:
            write_atomic(path, data)
        else:
            path.unlink()
        if is_live and self.handler is not None:
            self.handler.reopen()
        return resealed

    # --- RetentionTarget ----------------------------------------------------

    def purge_older_than(self, cutoff: float) -> int:
        """Drop lines older than ``cutoff`` and every line whose key is gone, in place."""
        purged = 0
        with self._writer_paused():
            reader = LineReader(self.keys)
            try:
                crash_records = self._crash_records()
                for path in [*crash_records, *self.files_oldest_first()]:
                    dropped, kept, rewrite = self._split_by_age(path, cutoff, reader)
                    purged += dropped
                    if path in crash_records and not kept:
                        overwrite_and_truncate(path)
                        path.unlink()
                    elif rewrite:
                        overwrite_and_truncate(path, "".join(f"{k}\n" for k in kept).encode())
            except OSError as exc:
                raise DeviceIOError(f"cannot purge logs: {exc}") from exc
        return purged

    def _split_by_age(
        self, path: pathlib.Path, cutoff: float, reader: LineReader
    ) -> tuple[int, list[str], bool]:
        """(lines dropped, stored lines to keep, whether to rewrite); undated lines stay.

        Lines nobody can read (key destroyed, damaged) are dropped too; lines in
        the clear are sealed when the file is rewritten.
        """
        dropped = 0
        kept: list[str] = []
        clear = False
        for stored in _stored_lines(path.read_bytes()):
            state, text = reader.read(stored)
            if text is None:
                dropped += 1
                continue
            ts = _line_time(text)
            if ts is not None and ts < cutoff:
                dropped += 1
            elif state is LineState.CLEAR:
                kept.append(self.seal(text))
                clear = True
            else:
                kept.append(stored)
        return dropped, kept, bool(dropped) or clear


def _stored_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()]


def _line_time(line: str) -> float | None:
    try:
        ts = json.loads(line).get("ts")
    except (ValueError, AttributeError):
        return None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


def _timestamp(line: str) -> float:
    return _line_time(line) or 0.0
