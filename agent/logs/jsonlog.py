"""One JSON object per log line, redacted at formatting time.

The formatter is the single place a :class:`logging.LogRecord` turns into
text, so it is where redaction happens: on ``record.getMessage()`` (the
template with its ``args`` already applied) and on the exception and stack
text.  Nothing else from the record is copied, so ``record.args`` or stray
``extra`` values never reach the store unredacted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

from agent.logs import codes

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
MAX_MESSAGE_CHARS = 16 * 1024
MAX_EXCEPTION_CHARS = 32 * 1024
# Fields whose values are produced by the agent itself and never carry personal data.
UNREDACTED_FIELDS = frozenset({"ts", "level", "code", "message_id", "logger", "kind"})


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"...[{len(text) - limit} chars cut]"


def safe_message(record: logging.LogRecord) -> str:
    """The record's message with its args applied; a bad template never leaks the args."""
    try:
        return record.getMessage()
    except (TypeError, ValueError) as exc:
        return f"{record.msg!s} [unformattable args: {type(exc).__name__}]"


class JsonLineFormatter(logging.Formatter):
    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._redact = redact

    def to_mapping(self, record: logging.LogRecord) -> dict[str, object]:
        message = safe_message(record)
        line: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": self._redact(_clip(message, MAX_MESSAGE_CHARS)),
        }
        code = getattr(record, "error_code", None)
        if isinstance(code, str) and code in codes.REGISTRY:
            line["code"] = code
            line["message_id"] = codes.REGISTRY[code].message_id
        elif record.levelno >= logging.ERROR:
            line["code"] = codes.UNCLASSIFIED.code
            line["message_id"] = codes.UNCLASSIFIED.message_id
        if record.exc_info:
            text = self.formatException(record.exc_info)
            line["exc"] = self._redact(_clip(text, MAX_EXCEPTION_CHARS))
        if record.stack_info:
            line["stack"] = self._redact(_clip(record.stack_info, MAX_EXCEPTION_CHARS))
        return line

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.to_mapping(record), ensure_ascii=False, separators=(",", ":"))


def redact_line(line: Mapping[str, object], redact: Callable[[str], str]) -> dict[str, object]:
    """Apply ``redact`` again to every free-text value of a stored line."""
    out: dict[str, object] = {}
    for key, value in line.items():
        if key in UNREDACTED_FIELDS and isinstance(value, str | int | float):
            out[key] = value
        elif isinstance(value, str):
            out[key] = redact(value)
        elif isinstance(value, bool | int | float) or value is None:
            out[key] = value
        else:
            out[key] = redact(json.dumps(value, ensure_ascii=False, default=str))
    return out
