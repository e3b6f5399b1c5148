"""``install_logging(config)``: JSON-lines logging, redaction and crash capture.

Crashes are caught three ways, all landing as structured, redacted crash
records in ``state_dir/logs/crash-*.jsonl`` (written atomically):

* ``sys.excepthook`` -- an exception nothing caught on the main thread;
* ``threading.excepthook`` -- the same on any other thread;
* ``faulthandler`` -- a hard crash (segfault, abort, deadlock dump) cannot run
  Python, so it writes raw text to ``logs/faulthandler.txt``; the next start
  turns that text into a crash record and clears the file.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import os
import pathlib
import sys
import threading
import traceback
from types import TracebackType
from typing import IO

from agent.atomicfile import shred, write_atomic
from agent.config import AgentConfig
from agent.errors import DeviceIOError
from agent.logs import codes
from agent.logs.jsonlog import JsonLineFormatter
from agent.logs.redact import Redactor
from agent.ports import Clock
from drivers.clock import SystemClock
from drivers.logs.store import CRASH_PREFIX, FAULT_FILE_NAME, LogStore, overwrite_and_truncate

MAX_FAULT_TEXT = 64 * 1024
# A crash loop must not fill the disk: only the newest records are kept.
MAX_CRASH_RECORDS = 20


def write_crash_record(
    store: LogStore, redactor: Redactor, kind: str, message: str, detail: str, *, now: float
) -> pathlib.Path:
    record = {
        "ts": round(now, 6),
        "level": "CRITICAL",
        "logger": "crash",
        "kind": kind,
        "code": codes.CRASH.code,
        "message_id": codes.CRASH.message_id,
        "msg": redactor(message),
        "exc": redactor(detail[-MAX_FAULT_TEXT:]),
        "pid": os.getpid(),
    }
    store.directory.mkdir(parents=True, exist_ok=True)
    # Zero-padded microseconds: name order is time order.
    path = store.directory / f"{CRASH_PREFIX}{int(now * 1e6):020d}-{os.getpid()}.jsonl"
    write_atomic(path, (json.dumps(record, ensure_ascii=False) + "\n").encode())
    records = sorted(store.directory.glob(f"{CRASH_PREFIX}*.jsonl"))
    for old in records[:-MAX_CRASH_RECORDS]:
        shred(old)
    return path


@dataclasses.dataclass
class LoggingHandle:
    store: LogStore
    redactor: Redactor
    handler: logging.Handler
    fault_file: IO[str]
    _previous_hooks: tuple[object, object]
    _previous_level: int

    def close(self) -> None:
        faulthandler.disable()
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self._previous_level)
        self.handler.close()
        self.fault_file.close()
        sys.excepthook, threading.excepthook = self._previous_hooks  # type: ignore[assignment]


def _harvest_fault_file(
    store: LogStore, redactor: Redactor, path: pathlib.Path, now: float
) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    except OSError:
        return
    if text.strip():
        write_crash_record(store, redactor, "fault", "previous run died hard", text, now=now)
        overwrite_and_truncate(path)


def install_logging(
    config: AgentConfig,
    redactor: Redactor | None = None,
    *,
    clock: Clock | None = None,
) -> LoggingHandle:
    """Route the root logger into the redacted JSON-lines store; arm crash capture."""
    redactor = redactor or Redactor()
    clock = clock or SystemClock()
    store = LogStore(config.state_dir, config.logs)
    handler = store.open_handler()
    handler.setFormatter(JsonLineFormatter(redactor))
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(config.logs.level.value)
    root.addHandler(handler)

    fault_path = store.directory / FAULT_FILE_NAME
    _harvest_fault_file(store, redactor, fault_path, clock.now())
    try:
        fault_file = open(fault_path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open for faulthandler
    except OSError as exc:
        raise DeviceIOError(f"cannot open {fault_path}: {exc}") from exc
    faulthandler.enable(file=fault_file, all_threads=True)

    previous = (sys.excepthook, threading.excepthook)

    def excepthook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        write_crash_record(
            store, redactor, "exception", f"unhandled {exc_type.__name__}: {exc}", text,
            now=clock.now(),
        )
        previous[0](exc_type, exc, tb)

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        name = args.thread.name if args.thread is not None else "?"
        write_crash_record(
            store, redactor, "thread",
            f"unhandled {args.exc_type.__name__} in thread {name}: {args.exc_value}",
            text, now=clock.now(),
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    return LoggingHandle(store, redactor, handler, fault_file, previous, previous_level)
