"""Proof of progress for the systemd watchdog.

Each part of the main loop reports a beat when it finishes a tick.  The
watchdog is fed only while every registered part has beaten recently, so a
wedged publisher or pipeline stops the pings and systemd restarts the agent,
instead of a timer thread pinging on behalf of a dead loop.
"""

from __future__ import annotations


class Liveness:
    def __init__(self, max_silence: float) -> None:
        self.max_silence = max_silence
        self._beats: dict[str, float] = {}

    def expect(self, name: str, now: float) -> None:
        self._beats.setdefault(name, now)

    def beat(self, name: str, now: float) -> None:
        self._beats[name] = now

    def stale(self, now: float) -> list[str]:
        return sorted(n for n, t in self._beats.items() if now - t > self.max_silence)

    def healthy(self, now: float) -> bool:
        return not self.stale(now)


class WatchdogGate:
    """Decides when to send WATCHDOG=1: every ``interval`` and only if healthy."""

    def __init__(self, liveness: Liveness, interval: float | None) -> None:
        self.liveness = liveness
        self.interval = interval
        self._last_ping = float("-inf")

    def should_ping(self, now: float) -> bool:
        if self.interval is None or now - self._last_ping < self.interval:
            return False
        if not self.liveness.healthy(now):
            return False
        self._last_ping = now
        return True
