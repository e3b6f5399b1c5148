"""Time-based guards for the provisioning channels, all driven by ``now``.

* :class:`ProvisioningWindow` -- open from first boot (or an explicit reopen)
  for ``window_seconds``; closes on timeout or after a successful provisioning.
* :class:`AttemptLimiter` -- at most ``max_failures`` failed proofs per
  sliding ``window``; reaching it locks out for ``lockout * 2**(n-1)`` seconds
  (n = lockouts so far), capped at ``lockout_max``.
* :class:`ScanScheduler` -- lets a QR decode attempt through about once per
  ``interval`` so the camera pipeline is not slowed while unprovisioned.
"""

from __future__ import annotations

import collections
import enum

from agent.errors import PolicyError


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

    def open(self, now: float) -> None:
        self._opened_at = now
        self._state = WindowState.OPEN
        self.closed_at = None

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

    def remaining(self, now: float) -> float:
        if not self.is_open(now) or self._opened_at is None:
            return 0.0
        return self._opened_at + self._length - now


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

    def check(self, now: float) -> None:
        if now < self._locked_until:
            raise LockedOutError(self._locked_until - now)

    def record_failure(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self._window:
            self._failures.popleft()
        self._failures.append(now)
        if len(self._failures) >= self._max_failures:
            self._lockouts += 1
            duration = min(self._lockout * 2 ** (self._lockouts - 1), self._lockout_max)
            self._locked_until = now + duration
            self._failures.clear()

    def record_success(self) -> None:
        self._failures.clear()
        self._lockouts = 0

    @property
    def lockouts(self) -> int:
        return self._lockouts


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
