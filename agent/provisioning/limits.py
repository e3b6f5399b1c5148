"""Time-based guards for the provisioning channels, all driven by ``now``.

* :class:`ProvisioningWindow` -- open from first boot (or an explicit reopen)
  for ``window_seconds``; closes on timeout or after a successful provisioning.
* :class:`AttemptLimiter` -- at most ``max_failures`` failed proofs per
  sliding ``window``; reaching it locks out for ``lockout * 2**(n-1)`` seconds
  (n = lockouts so far), capped at ``lockout_max``.
* :class:`ScanScheduler` -- lets a QR decode attempt through about once per
  ``interval`` so the camera pipeline is not slowed while unprovisioned.

The window and the limiter survive restarts (:mod:`agent.limitstate`): a
reboot neither clears a lockout nor reopens a window that closed.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Mapping

from agent import limitstate
from agent.errors import DecodeError, PolicyError

MAX_LOCKOUTS = 64


class WindowClosedError(PolicyError):
    """The provisioning window is closed; nothing is accepted."""


class LockedOutError(PolicyError):
    """Too many failed attempts; ``retry_after`` seconds until the next try."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(0.0, retry_after)
        super().__init__(f"too many failed attempts; retry in {self.retry_after:.0f} s")


class WindowState(enum.Enum):
    NOT_OPENED = "not_opened"
    OPEN = "open"
    SUCCEEDED = "succeeded"
    TIMED_OUT = "timed_out"


class ProvisioningWindow:
    def __init__(self, window_seconds: float) -> None:
        self._length = window_seconds
        self._opened_at: float | None = None
        self._state = WindowState.NOT_OPENED
        self.closed_at: float | None = None
        self.on_change: Callable[[], None] | None = None

    def open(self, now: float) -> None:
        self._opened_at = now
        self._state = WindowState.OPEN
        self.closed_at = None
        if self.on_change is not None:
            self.on_change()

    def state(self, now: float) -> WindowState:
        if (
            self._state is WindowState.OPEN
            and self._opened_at is not None
            and now >= self._opened_at + self._length
        ):
            self._state = WindowState.TIMED_OUT
            self.closed_at = self._opened_at + self._length
        return self._state

    def is_open(self, now: float) -> bool:
        return self.state(now) is WindowState.OPEN

    def require_open(self, now: float) -> None:
        if not self.is_open(now):
            raise WindowClosedError(f"provisioning window is {self.state(now).value}")

    def succeed(self, now: float) -> None:
        self._state = WindowState.SUCCEEDED
        self.closed_at = now
        if self.on_change is not None:
            self.on_change()

    def remaining(self, now: float) -> float:
        if not self.is_open(now) or self._opened_at is None:
            return 0.0
        return self._opened_at + self._length - now

    # --- across restarts (agent.limitstate) --------------------------------------

    def snapshot(self, now: float) -> dict[str, object]:
        state = self.state(now)  # settle a timeout first, so the record says "timed_out"
        return {
            **limitstate.header(now),
            "state": state.value,
            "opened_at": self._opened_at,
            "length": self._length,
            "closed_at": self.closed_at,
        }

    def restore(self, data: Mapping[str, object], now: float) -> None:
        shift = limitstate.clock_shift(data, now)
        try:
            state = WindowState(data.get("state"))
        except ValueError:
            raise DecodeError("state is not a window state") from None
        opened_at = limitstate.optional_number(data, "opened_at")
        closed_at = limitstate.optional_number(data, "closed_at")
        if opened_at is not None:
            # It keeps only what it had left: never more than a full window from now,
            # and a longer window configured meanwhile does not stretch this one.
            length = min(self._length, limitstate.number(data, "length"))
            opened_at = min(opened_at + shift, now) + length - self._length
        elif state is WindowState.OPEN:
            raise DecodeError("an open window needs opened_at")
        self._opened_at = opened_at
        self.closed_at = None if closed_at is None else closed_at + shift
        self._state = state

    def fail_safe(self, now: float) -> None:
        """An unreadable record: closed (as if it timed out now) until explicitly reopened."""
        self._state = WindowState.TIMED_OUT
        self._opened_at = None
        self.closed_at = now


class AttemptLimiter:
    def __init__(
        self,
        max_failures: int,
        window: float,
        lockout: float,
        lockout_max: float,
    ) -> None:
        self._max_failures = max_failures
        self._window = window
        self._lockout = lockout
        self._lockout_max = lockout_max
        self._failures: collections.deque[float] = collections.deque()
        self._lockouts = 0
        self._locked_until = float("-inf")
        self.on_change: Callable[[], None] | None = None

    def check(self, now: float) -> None:
        if now < self._locked_until:
            raise LockedOutError(self._locked_until - now)

    def record_failure(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self._window:
            self._failures.popleft()
        self._failures.append(now)
        if len(self._failures) >= self._max_failures:
            # Capped: past lockout_max more doubling changes nothing, and 2**n overflows a float.
            self._lockouts = min(self._lockouts + 1, MAX_LOCKOUTS)
            duration = min(self._lockout * 2 ** (self._lockouts - 1), self._lockout_max)
            self._locked_until = now + duration
            self._failures.clear()
        if self.on_change is not None:
            self.on_change()

    def record_success(self) -> None:
        self._failures.clear()
        self._lockouts = 0
        if self.on_change is not None:
            self.on_change()

    @property
    def lockouts(self) -> int:
        return self._lockouts

    # --- across restarts (agent.limitstate) --------------------------------------

    def snapshot(self, now: float) -> dict[str, object]:
        locked = self._locked_until if self._locked_until > float("-inf") else None
        return {
            **limitstate.header(now),
            "failures": list(self._failures),
            "lockouts": self._lockouts,
            "locked_until": locked,
        }

    def restore(self, data: Mapping[str, object], now: float) -> None:
        shift = limitstate.clock_shift(data, now)
        raw = data.get("failures")
        if not isinstance(raw, list) or len(raw) >= self._max_failures:
            raise DecodeError(f"failures must be a list of fewer than {self._max_failures}")
        failures = [limitstate.number({"t": t}, "t") + shift for t in raw]
        lockouts = limitstate.count(data, "lockouts", MAX_LOCKOUTS)
        locked_until = limitstate.optional_number(data, "locked_until")
        self._failures = collections.deque(sorted(failures))
        self._lockouts = lockouts
        self._locked_until = (
            float("-inf")
            if locked_until is None
            # However the record came to say more, no lockout outlasts lockout_max.
            else min(locked_until + shift, now + self._lockout_max)
        )

    def fail_safe(self, now: float) -> None:
        """An unreadable record: locked out for the base lockout, as after a first lockout."""
        self._failures.clear()
        self._lockouts = max(self._lockouts, 1)
        self._locked_until = max(self._locked_until, now + self._lockout)


class ScanScheduler:
    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: float | None = None

    def due(self, now: float) -> bool:
        """True (and the attempt is counted) when a scan may run at ``now``."""
        # A clock that steps backwards must not stall scanning forever.
        if self._last is None or now >= self._last + self._interval or now < self._last:
            self._last = now
            return True
        return False
