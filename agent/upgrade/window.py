"""Maintenance windows: the ``"HH:MM-HH:MM"`` syntax of ``upgrade.maintenance_windows``.

A leaf module: :mod:`settings` validates the configured strings with
:func:`parse_window`, :mod:`policy` decides with them whether it is time to act.
"""

from __future__ import annotations

import dataclasses
import re

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
MINUTES_PER_DAY = 24 * 60


@dataclasses.dataclass(frozen=True)
class Window:
    start: int  # minutes since local midnight
    end: int

    def contains(self, minute: int) -> bool:
        if self.start == self.end:
            return True  # "00:00-00:00": the whole day
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # crosses midnight


def parse_window(text: str) -> Window:
    match = _WINDOW.match(text.strip())
    if not match:
        raise ValueError(f"maintenance window {text[:40]!r} is not 'HH:MM-HH:MM'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return Window(h1 * 60 + m1, h2 * 60 + m2)
