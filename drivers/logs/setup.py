"""``install_logging(config)``: JSON-lines logging, redaction and crash capture.

Crashes are caught three ways, all landing as structured, redacted crash
records in ``state_dir/logs/crash-*.jsonl`` (written atomically, sealed like
every stored line: :mod:`drivers.logs.store`):

* ``sys.excepthook`` -- an exception nothing caught on the main thread;
* ``threading.excepthook`` -- the same on any other thread;
* ``faulthandler`` -- a hard crash (segfault, abort, deadlock dump) cannot run
  Python, so it writes raw text to ``logs/faulthandler.txt``; the next start
  turns that text into a crash record and clears the file.

The console copy (stderr, which systemd hands to journald) goes through the
same redactor as the store: :func:`redact_console` wraps the formatter of every
console handler, and an unhandled exception's traceback reaches stderr only
redacted.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import logging.handlers
import os
import pathlib
import sys
import threading
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING

from agent.atomicfile import shred, write_atomic
from agent.config import AgentConfig
from agent.errors import DeviceIOError
from agent.logs import codes
from agent.logs.jsonlog import JsonLineFormatter, safe_message
from agent.logs.redact import Redactor
from agent.ports import Clock
from drivers.clock import SystemClock
from drivers.logs.store import CRASH_PREFIX, FAULT_FILE_NAME, LogStore, overwrite_and_truncate

if TYPE_CHECKING:
    from agent.keystore import DataKeys

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
    write_atomic(path, (store.seal(json.dumps(record, ensure_ascii=False)) + "\n").encode())
    records = sorted(store.directory.glob(f"{CRASH_PREFIX}*.jsonl"))
    for old in records[:-MAX_CRASH_RECORDS]:
        shred(old)
    return path


class RedactingFormatter(logging.Formatter):
    """A console handler's own layout, with the message and any traceback redacted.

    Only what may carry personal data is redacted -- the formatted message, the
    exception and stack text -- never the whole line, whose timestamp would look
    like a phone number to the redactor.
    """

    def __init__(self, inner: logging.Formatter | None, redact: Redactor) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        clean = logging.makeLogRecord(record.__dict__)
        clean.msg, clean.args = self.redact(safe_message(record)), None
        # Another handler may have cached the raw traceback text on the record.
        clean.exc_info, clean.exc_text = None, None
        if record.exc_info:
            clean.exc_text = self.redact(self.inner.formatException(record.exc_info))
        elif record.exc_text:
            clean.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            clean.stack_info = self.redact(record.stack_info)
        return self.inner.format(clean)


_CONSOLE_STREAMS = ("stderr", "stdout", "__stderr__", "__stdout__")


def _is_console(handler: logging.Handler) -> bool:
    # Console: a stream handler on the process's stdout/stderr (journald under systemd),
    # syslog, or a journald handler; never a file or a test's in-memory capture.
    if isinstance(handler, logging.handlers.SysLogHandler):
        return True
    if "journal" in type(handler).__name__.lower():
        return True
    stream = getattr(handler, "stream", None)
    return isinstance(handler, logging.StreamHandler) and any(
        stream is getattr(sys, name, None) for name in _CONSOLE_STREAMS
    )


def redact_console(redactor: Redactor) -> Callable[[], None]:
    """Make every console handler (and logging's last resort) redact; returns the undo."""
    handlers = [
        h
        for logger in [logging.getLogger(), *_loggers()]
        for h in logger.handlers
        if _is_console(h)
    ]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    wrapped: list[tuple[logging.Handler, logging.Formatter | None]] = []
    for handler in dict.fromkeys(handlers):
        if isinstance(handler.formatter, RedactingFormatter):
            continue
        wrapped.append((handler, handler.formatter))
        handler.setFormatter(RedactingFormatter(handler.formatter, redactor))

    def undo() -> None:
        for handler, formatter in wrapped:
            handler.setFormatter(formatter)

    return undo


def _loggers() -> list[logging.Logger]:
    return [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]


@dataclasses.dataclass
class LoggingHandle:
    store: LogStore
    redactor: Redactor
    handler: logging.Handler
    fault_file: IO[str]
    _previous_hooks: tuple[object, object]
    _previous_level: int
    _unredact_console: Callable[[], None] = lambda: None

    def close(self) -> None:
        self._unredact_console()
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
    keys: DataKeys,
) -> LoggingHandle:
    """Route the root logger into the redacted, sealed JSON-lines store; arm crash capture."""
    redactor = redactor or Redactor()
    clock = clock or SystemClock()
    store = LogStore(config.state_dir, config.logs, keys=keys)
    handler = store.open_handler()
    handler.setFormatter(JsonLineFormatter(redactor))
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(config.logs.level.value)
    root.addHandler(handler)
    unredact_console = redact_console(redactor)

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
        if previous[0] is sys.__excepthook__:
            # Python's own hook would print the raw traceback to stderr (journald).
            print(redactor(text), end="", file=sys.stderr, flush=True)
        else:
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
    return LoggingHandle(
        store, redactor, handler, fault_file, previous, previous_level, unredact_console
    )
