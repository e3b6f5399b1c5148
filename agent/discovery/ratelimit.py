"""Token buckets for answering unauthenticated LAN peers, sans I/O and clock.

WS-Discovery answers a ~0.5 KB Probe with a ~1.2 KB ProbeMatches to the
Probe's source address, which anyone on the LAN can forge.  Without a limit a
flood of unique Probes is answered one for one: a reflector at 2-3x.  Two
limits keep it bounded:

* per source address, a bucket spent by every datagram before it is parsed,
  so one peer (or one spoofed victim) gets at most ``burst`` answers at once
  and ``rate`` per second after that, and costs no XML parsing beyond it;
* one global bucket spent by every reply, which caps what the device sends
  in all, however many source addresses a flood claims.

The per-source table is bounded (least recently seen evicted first), so a
flood from many addresses cannot grow it.  Every method takes ``now``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict


@dataclasses.dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; ``take`` spends one if it can."""

    rate: float
    burst: float
    tokens: float = -1.0
    last: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a bucket needs a positive rate and a burst of at least 1")
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        # A clock that steps back refills nothing; it never mints tokens either.
        self.last = now if self.last is None else max(self.last, now)

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens


@dataclasses.dataclass(frozen=True)
class RateLimits:
    source_rate: float = 1.0
    source_burst: int = 5
    global_rate: float = 20.0
    global_burst: int = 40
    tracked_sources: int = 256


class ProbeRateLimiter:
    """Per-source and global admission for one responder."""

    def __init__(self, limits: RateLimits) -> None:
        if limits.tracked_sources < 1:
            raise ValueError("track at least one source")
        self.limits = limits
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._global = TokenBucket(limits.global_rate, limits.global_burst)

    def admit(self, source: str, now: float) -> bool:
        """May a datagram from ``source`` be looked at now?  Spends that source's token."""
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = TokenBucket(self.limits.source_rate, self.limits.source_burst)
            self._sources[source] = bucket
            if len(self._sources) > self.limits.tracked_sources:
                # The least recently seen source goes; a returning one starts with a full
                # burst, which the global bucket still caps.
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        return bucket.take(now)

    def may_reply(self, now: float) -> bool:
        """May one more reply go out now?  Spends a global token."""
        return self._global.take(now)

    @property
    def tracked(self) -> int:
        return len(self._sources)
