"""What ``--json`` prints: one document, JSON Lines for long-running commands, errors.

* A one-shot command prints one JSON document on stdout (:func:`print_json`).
* A long-running command (``logs serve``, ``provision lan``, ``provision improv``)
  prints one JSON object per line as things happen, each naming its ``event``, and
  ends with ``{"event": "result", "ok": true, ...}`` (:class:`JsonLines`).
* A command that fails under ``--json`` still writes its one line on stderr and exits
  with the documented code; stdout gets :func:`error_document` on one line (main()
  prints it), ``{"ok": false, "error": {"code": ..., "message": ..., "exit_code": N}}``:
  one document for a one-shot command, the last line of a long-running one.
  ``code`` is one of :data:`ERROR_CODES`' values, or ``usage`` for a command line
  argparse refused: a script can branch on it without parsing the message.

Files a command writes with ``-o`` go through :func:`write_output_file`.

Only the standard library, :mod:`agent.errors` and :mod:`agent.atomicfile`: every
sub-command module imports this, and ``--help`` must stay light.
"""

from __future__ import annotations

import base64
import json
import pathlib
import sys
from typing import TextIO

from agent.atomicfile import write_atomic
from agent.errors import (
    BadDataError,
    ConfigError,
    ConnectionLostError,
    ConsentRequiredError,
    DecodeError,
    DeviceIOError,
    DeviceTimeoutError,
    EdgeAgentError,
    NotFoundError,
    PolicyError,
    StateDirError,
    TooLargeError,
    TransportError,
    VerificationError,
)

JSON_HELP = "print JSON (one document) instead of text"
JSON_LINES_HELP = (
    "print JSON Lines: one object per event as it happens, then "
    '{"event": "result", "ok": true, ...}'
)

# The stable ``error.code`` of each documented error class (the most specific one of an
# exception's classes wins); the exit code is main()'s, by the same tree.
ERROR_CODES: dict[type[BaseException], str] = {
    ConsentRequiredError: "consent_required",
    ConfigError: "config",
    NotFoundError: "not_found",
    TooLargeError: "too_large",
    DecodeError: "decode",
    VerificationError: "verification",
    PolicyError: "policy",
    BadDataError: "bad_data",
    StateDirError: "state_dir",
    ConnectionLostError: "connection_lost",
    DeviceTimeoutError: "timeout",
    DeviceIOError: "io",
    TransportError: "transport",
    EdgeAgentError: "error",
    OSError: "io",
    KeyboardInterrupt: "interrupted",
}


def _default(value: object) -> object:
    # Byte strings as base64, as the JSON payload format and `remote` show them.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(document: object, *, indent: int | None = None) -> str:
    return json.dumps(
        document, indent=indent, sort_keys=True, ensure_ascii=False, default=_default
    )


def print_json(document: object, stream: TextIO | None = None) -> None:
    """One JSON document on stdout: the result of a one-shot command."""
    print(dumps(document, indent=2), file=stream or sys.stdout, flush=True)


class JsonLines:
    """One JSON object per line on stdout, flushed at once (a reader follows it live)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def event(self, event: str, **fields: object) -> None:
        print(dumps({"event": event, **fields}), file=self._stream or sys.stdout, flush=True)

    def result(self, **fields: object) -> None:
        self.event("result", ok=True, **fields)


class UsageError(Exception):
    """A command line argparse refused: exit code 2, an error document under ``--json``."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


def error_code(error: BaseException) -> str:
    if isinstance(error, UsageError):
        return "usage"
    for cls in type(error).__mro__:
        if cls in ERROR_CODES:
            return ERROR_CODES[cls]
    return "error"


def error_document(error: BaseException, message: str, exit_code: int) -> dict[str, object]:
    return {
        "ok": False,
        "error": {"code": error_code(error), "message": message, "exit_code": exit_code},
    }


def write_output_file(path: pathlib.Path, data: bytes) -> None:
    """What ``-o`` names: readable by its owner alone (0600, whatever the umask or an older
    file's mode), since exports and log bundles are personal data, and written whole or not
    at all (a crash never leaves half a file that reads as complete).  A pipe or a device
    (``-o /dev/stdout``) is written as is.
    """
    if path.exists() and not path.is_file():
        path.write_bytes(data)
    else:
        write_atomic(path, data, 0o600)
