"""Accepting image bytes against a manifest: size-bounded, hashed as they stream."""

from __future__ import annotations

import hashlib
import hmac

from agent.errors import DeviceTimeoutError
from agent.upgrade.errors import DeadlineExceededError, ExtraDataError, ImageMismatchError


class ImageHasher:
    """Hashes what is written to the slot; refuses a byte beyond the signed size."""

    def __init__(self, expected_size: int, expected_digest: bytes) -> None:
        self.expected_size = expected_size
        self.expected_digest = expected_digest
        self.received = 0
        self._hash = hashlib.sha256()

    @property
    def remaining(self) -> int:
        return self.expected_size - self.received

    def accept(self, chunk: bytes | memoryview) -> None:
        if len(chunk) > self.remaining:
            raise ExtraDataError(f"image is longer than the signed {self.expected_size} bytes")
        self._hash.update(chunk)
        self.received += len(chunk)

    def finish(self) -> bytes:
        if self.received != self.expected_size:
            raise ImageMismatchError(
                f"image ended after {self.received} of {self.expected_size} bytes"
            )
        digest = self._hash.digest()
        if not hmac.compare_digest(digest, self.expected_digest):
            raise ImageMismatchError("image digest does not match the manifest")
        return digest


class ThroughputGuard:
    """Slow-retrieval defence: an overall deadline and a minimum average rate.

    ``now`` is a monotonic reading passed in by the driver.
    """

    def __init__(
        self,
        start: float,
        *,
        min_bytes_per_second: float,
        grace_seconds: float,
        deadline_seconds: float,
    ) -> None:
        self.start = start
        self.min_rate = min_bytes_per_second
        self.grace = grace_seconds
        self.deadline = deadline_seconds
        self.window_start = start
        self.window_bytes = 0

    def restart_window(self, now: float) -> None:
        """A new connection starts a new rate window (the deadline keeps running)."""
        self.window_start = now
        self.window_bytes = 0

    def remaining(self, now: float) -> float:
        """Seconds left before the overall deadline."""
        return self.deadline - (now - self.start)

    def check(self, now: float, new_bytes: int) -> None:
        self.window_bytes += new_bytes
        if now - self.start > self.deadline:
            raise DeadlineExceededError(f"download exceeded its {self.deadline:.0f} s deadline")
        elapsed = now - self.window_start
        if elapsed > self.grace and self.window_bytes / elapsed < self.min_rate:
            raise DeviceTimeoutError(
                f"download slower than {self.min_rate:.0f} B/s "
                f"({self.window_bytes} bytes in {elapsed:.1f} s)"
            )
