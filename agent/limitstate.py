"""Attempt limiters and windows that outlive a restart: the pure half.

A lockout that a reboot clears is no lockout: an attacker who can cut the power
(or crash the agent) would get a fresh set of guesses each time.  So the
limiters (:class:`agent.provisioning.limits.AttemptLimiter`,
:class:`~agent.provisioning.limits.ProvisioningWindow`,
:class:`agent.logs.pull.AuthLimiter`) can say what they hold as a plain dict
(``snapshot(now)``), take it back (``restore(data, now)``) and, when a saved
record cannot be read, fall back to the cautious state (``fail_safe(now)``).
They call ``on_change()`` after every change; ``drivers/limitstore.py`` writes
the file.

Times are wall-clock seconds (the only clock that survives a restart).  A
record also carries when it was saved: if the clock is earlier than that at
restore (a board without an RTC, or NTP stepping back), every saved time moves
back by the difference, so a lockout or a window keeps exactly what it had
left when saved instead of growing by however far the clock jumped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Protocol

from agent.errors import DecodeError

FORMAT_VERSION = 1


class Persistent(Protocol):
    on_change: Callable[[], None] | None

    def snapshot(self, now: float) -> dict[str, object]: ...

    def restore(self, data: Mapping[str, object], now: float) -> None: ...

    def fail_safe(self, now: float) -> None: ...


def header(now: float) -> dict[str, object]:
    return {"v": FORMAT_VERSION, "saved_at": now}


def number(data: Mapping[str, object], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodeError(f"{key} must be a finite number")
    return float(value)


def optional_number(data: Mapping[str, object], key: str) -> float | None:
    return None if data.get(key) is None else number(data, key)


def count(data: Mapping[str, object], key: str, maximum: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise DecodeError(f"{key} must be an integer in [0, {maximum}]")
    return value


def clock_shift(data: Mapping[str, object], now: float) -> float:
    """What to add to every saved time: 0, or how far the clock went back since saving."""
    if data.get("v") != FORMAT_VERSION:
        raise DecodeError(f"unknown format version {data.get('v')!r}")
    return min(0.0, now - number(data, "saved_at"))
