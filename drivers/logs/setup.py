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

Under systemd (:func:`install_console_logging`): when stderr is the journal
(``$JOURNAL_STREAM`` names stderr's device and inode) every console line goes
over journald's native protocol to ``/run/systemd/journal/socket`` with its
``PRIORITY`` and, for a coded event (:mod:`agent.logs.codes`), its fixed
``MESSAGE_ID``; where that socket is missing or refuses a datagram, the line
goes to stderr with the ``<N>`` priority prefix of sd-daemon(3) on each of its
lines.  Anywhere else the console gets plain lines.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import logging.handlers
import os
import pathlib
import socket
import struct
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
            shown = redactor(text)
            if stderr_is_journal():
                shown = "".join(f"<2>{line}\n" for line in shown.splitlines())
            print(shown, end="", file=sys.stderr, flush=True)
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


# --- the console under systemd ---------------------------------------------------------------

JOURNAL_SOCKET = pathlib.Path("/run/systemd/journal/socket")
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What journald shows without timestamps of ours (it stamps every entry itself).
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
SYSLOG_IDENTIFIER = "edge-agent"


def syslog_priority(levelno: int) -> int:
    """sd-daemon(3) / syslog(3) priority of a logging level."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stderr_is_journal(
    environ: dict[str, str] | os._Environ[str] | None = None, fd: int = 2
) -> bool:
    """True when ``$JOURNAL_STREAM`` is this fd (systemd.exec(5)), not an inherited value."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(fd)
    except OSError:
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class PriorityPrefixFormatter(logging.Formatter):
    """Every line of a record prefixed with ``<N>`` (sd-daemon(3)): journald reads it."""

    def __init__(self, fmt: str = JOURNAL_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def journal_fields(fields: dict[str, str]) -> bytes:
    """journald's native datagram: ``KEY=value``, or KEY, length (LE 64) and value if multi-line."""
    out = bytearray()
    for key, value in fields.items():
        raw = value.encode("utf-8", "replace")
        if b"\n" in raw:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """One native-protocol datagram per record, with PRIORITY and MESSAGE_ID.

    A datagram journald refuses (too large, socket gone) goes to stderr as
    ``<N>``-prefixed lines instead: never lost, never a traceback.
    """

    def __init__(self, path: pathlib.Path = JOURNAL_SOCKET, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.fallback = PriorityPrefixFormatter()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            fields = {
                "MESSAGE": message,
                "PRIORITY": str(syslog_priority(record.levelno)),
                "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
                "LOGGER": record.name,
                "CODE_FILE": record.pathname,
                "CODE_LINE": str(record.lineno),
                "CODE_FUNC": record.funcName,
            }
            code = getattr(record, "error_code", None)
            message_id = getattr(record, "message_id", None) or codes.message_id_of(
                code if isinstance(code, str) else None, record.getMessage()
            )
            if isinstance(message_id, str) and message_id:
                fields["MESSAGE_ID"] = message_id
            if isinstance(code, str):
                fields["ERROR_CODE"] = code
            try:
                self.sock.sendto(journal_fields(fields), self.path)
            except OSError:
                prefix = f"<{fields['PRIORITY']}>"
                text = "\n".join(prefix + line for line in message.split("\n"))
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def console_handler(
    environ: dict[str, str] | os._Environ[str] | None = None,
    journal_socket: pathlib.Path = JOURNAL_SOCKET,
) -> logging.Handler:
    """The console handler for this process: journal protocol, ``<N>`` lines, or plain."""
    if stderr_is_journal(environ):
        if journal_socket.is_socket():
            return JournalHandler(journal_socket)
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PriorityPrefixFormatter())
        return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    return handler


def install_console_logging(
    level: int,
    environ: dict[str, str] | os._Environ[str] | None = None,
    journal_socket: pathlib.Path = JOURNAL_SOCKET,
) -> logging.Handler:
    """The root logger's console handler (``edge-agent run``); replaces an earlier one."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_edge_console", False)]:
        root.removeHandler(old)
        old.close()
    handler = console_handler(environ, journal_socket)
    handler._edge_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler
