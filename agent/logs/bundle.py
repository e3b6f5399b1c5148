"""Selecting, redacting and size-capping stored log lines into a bundle.

A bundle is JSON lines: a header object first, then the selected log lines
oldest to newest.  When the selection exceeds the size cap the *oldest* lines
are dropped (the newest are what a technician needs) and the header says so
with ``"truncated": true``, followed by an explicit truncation marker line.
Every free-text value is redacted again on the way out: the list of enrolled
names may have grown since the line was written.  The header describes the
query without its grep text.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping

from agent.errors import DecodeError
from agent.logs.jsonlog import LEVELS, redact_line

BUNDLE_FORMAT = "edge-agent-log-bundle"
BUNDLE_VERSION = 1
MAX_GREP_CHARS = 200
MAX_TAIL = 1_000_000
GREP_GIVEN = "(given, not shown)"
TRUNCATION_MARKER = "*** TRUNCATED: older lines dropped to respect the size cap ***"


@dataclasses.dataclass(frozen=True)
class BundleQuery:
    since: float | None = None
    until: float | None = None
    tail: int | None = None
    level: str = "DEBUG"
    grep: str | None = None

    def __post_init__(self) -> None:
        if self.level.upper() not in LEVELS:
            raise DecodeError(f"unknown level {self.level[:20]!r}; use one of {sorted(LEVELS)}")
        if self.tail is not None and not 0 < self.tail <= MAX_TAIL:
            raise DecodeError(f"tail must be between 1 and {MAX_TAIL}")
        if self.grep is not None and len(self.grep) > MAX_GREP_CHARS:
            raise DecodeError(f"grep pattern longer than {MAX_GREP_CHARS} characters")

    @classmethod
    def from_args(cls, args: Mapping[str, object]) -> BundleQuery:
        """Build a query from untrusted command/HTTP arguments."""

        def number(key: str) -> float | None:
            value = args.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise DecodeError(f"{key} must be a number")
            try:
                number = float(value)
            except (ValueError, OverflowError):
                raise DecodeError(f"{key} must be a number") from None
            if not math.isfinite(number):
                raise DecodeError(f"{key} must be a finite number")
            return number

        tail = number("tail")
        level = args.get("level", "DEBUG")
        grep = args.get("grep")
        if not isinstance(level, str) or (grep is not None and not isinstance(grep, str)):
            raise DecodeError("level and grep must be strings")
        return cls(
            since=number("since"),
            until=number("until"),
            tail=int(tail) if tail is not None else None,
            level=level,
            grep=grep,
        )

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def matches(self, line: Mapping[str, object]) -> bool:
        ts = line.get("ts")
        if not isinstance(ts, int | float):
            return False
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts > self.until:
            return False
        level = line.get("level")
        if LEVELS.get(str(level), 0) < LEVELS[self.level.upper()]:
            return False
        if self.grep:
            text = json.dumps(line, ensure_ascii=False).lower()
            return self.grep.lower() in text
        return True


@dataclasses.dataclass(frozen=True)
class Bundle:
    data: bytes
    lines: int
    truncated: bool
    dropped_lines: int
    unparseable_lines: int


def _described(query: BundleQuery, redact: Callable[[str], str]) -> dict[str, object]:
    # A grep is the requester's own words, often a name the redactor cannot know is
    # one: the header says that a filter was applied, never what it was.
    shown = query.describe()
    if "grep" in shown:
        shown["grep"] = GREP_GIVEN
    return redact_line(shown, redact)


def _dump(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def build_bundle(
    raw_lines: Iterable[str],
    query: BundleQuery,
    redact: Callable[[str], str],
    *,
    max_bytes: int,
    now: float,
) -> Bundle:
    """Select ``raw_lines`` (oldest first) matching ``query`` into a capped bundle."""
    selected: collections.deque[bytes] = collections.deque(maxlen=query.tail)
    unparseable = 0
    for raw in raw_lines:
        try:
            line = json.loads(raw)
        except ValueError:
            unparseable += 1
            continue
        if not isinstance(line, dict):
            unparseable += 1
            continue
        # Redact before grep so a search cannot probe for a redacted value.
        cleaned = redact_line(line, redact)
        if query.matches(cleaned):
            selected.append(_dump(cleaned))
    # Room for the header and marker; keep the newest lines that fit.
    budget = max(0, max_bytes - 1024)
    kept: list[bytes] = []
    used = 0
    for encoded in reversed(selected):
        if used + len(encoded) > budget:
            break
        kept.append(encoded)
        used += len(encoded)
    kept.reverse()
    dropped = len(selected) - len(kept)
    header = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created_at": now,
        "query": _described(query, redact),
        "lines": len(kept),
        "truncated": dropped > 0,
        "dropped_lines": dropped,
        "unparseable_lines": unparseable,
    }
    parts = [_dump(header)]
    if dropped:
        parts.append(_dump({"marker": TRUNCATION_MARKER, "dropped_lines": dropped}))
    parts.extend(kept)
    return Bundle(b"".join(parts), len(kept), dropped > 0, dropped, unparseable)
