"""The WS-Discovery responder as a runtime Service: socket, waiting, Hello/Bye.

All protocol decisions live in :class:`agent.discovery.responder.Responder`;
this class only moves datagrams, holds replies until their random delay has
passed, and announces (Hello on start and when the addresses change, Bye on
stop).
"""

from __future__ import annotations

import heapq
import logging
import pathlib
import socket
from collections.abc import Callable, Sequence

from agent.discovery.ratelimit import ProbeRateLimiter, RateLimits
from agent.discovery.responder import Reply, Responder
from agent.discovery.wsd import TargetService
from agent.ports import Clock
from drivers.discovery.bootcount import next_instance_id
from drivers.discovery.udp import drain, open_listener

log = logging.getLogger(__name__)

# Per tick: datagrams read (a refused one costs ~10 us: recvfrom and a table look-up)
# and datagrams parsed (~160 us of XML each), so a flood of spoofed sources, each
# passing its own fresh bucket, costs the loop ~10 ms a tick at most.  What is read
# but not parsed is dropped as the kernel would drop it from a full socket buffer.
MAX_DATAGRAMS_PER_TICK = 512
MAX_PARSED_PER_TICK = 64
MAX_QUEUED_REPLIES = 256
# A flood is reported in one line, then at most once per this many seconds.
FLOOD_REPORT_SECONDS = 60.0


class WsdResponderService:
    name = "discovery.wsd"

    def __init__(
        self,
        *,
        target: TargetService,
        state_dir: pathlib.Path,
        clock: Clock,
        xaddrs_fn: Callable[[], Sequence[str]],
        bind_address: str,
        port: int,
        group: str | None,
        announce_to: tuple[str, int],
        interface_address: str = "",
        max_delay: float = 0.5,
        discoverable: bool = True,
        max_datagram_bytes: int = 16384,
        address_check_seconds: float = 10.0,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self._target = target
        self._rate_limits = rate_limits or RateLimits()
        self._reported_limited = 0
        self._next_flood_report = float("-inf")
        self._state_dir = state_dir
        self._clock = clock
        self._xaddrs_fn = xaddrs_fn
        self._bind = (bind_address, port)
        self._group = group
        self._interface_address = interface_address
        self.announce_to = announce_to
        self._max_delay = max_delay
        self._discoverable = discoverable
        self._max_datagram_bytes = max_datagram_bytes
        self._address_check_seconds = address_check_seconds
        self._next_address_check = 0.0
        self._queue: list[tuple[float, int, Reply]] = []
        self._queued = 0
        self._sock: socket.socket | None = None
        self.responder: Responder | None = None
        self.send_errors = 0
        self.shed = 0  # admitted datagrams dropped unparsed: the per-tick budget was spent
        self._parsed = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful when port 0 asked for an ephemeral one."""
        if self._sock is None:
            raise RuntimeError("responder is not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def start(self) -> None:
        now = self._clock.now()
        self._sock = open_listener(
            bind_address=self._bind[0],
            port=self._bind[1],
            group=self._group,
            interface_address=self._interface_address,
        )
        self.responder = Responder(
            self._target,
            instance_id=next_instance_id(self._state_dir, self._clock),
            max_delay=self._max_delay,
            discoverable=self._discoverable,
            max_datagram_bytes=self._max_datagram_bytes,
            limiter=ProbeRateLimiter(self._rate_limits),
        )
        self.responder.update_xaddrs(self._xaddrs_fn())
        self._next_address_check = now + self._address_check_seconds
        self._announce(self.responder.hello())

    def _announce(self, payload: bytes | None) -> None:
        if payload is not None:
            self._send(payload, self.announce_to)

    def _send(self, payload: bytes, destination: tuple[str, int]) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(payload, destination)
        except OSError:
            # A lost announcement or reply is what UDP discovery is built to survive.
            self.send_errors += 1

    def _enqueue(self, now: float, data: bytes, source: tuple[str, int]) -> None:
        if self.responder is None or not self.responder.accepts(source, now):
            return
        if self._parsed >= MAX_PARSED_PER_TICK or len(self._queue) >= MAX_QUEUED_REPLIES:
            self.shed += 1
            return
        self._parsed += 1
        reply = self.responder.answer(data, source, now)
        if reply is not None:
            self._queued += 1
            heapq.heappush(self._queue, (now + reply.delay, self._queued, reply))

    def tick(self, now: float) -> None:
        if self._sock is None or self.responder is None:
            return
        if now >= self._next_address_check:
            self._next_address_check = now + self._address_check_seconds
            if self.responder.update_xaddrs(self._xaddrs_fn()):
                self._announce(self.responder.hello())
        self._parsed = 0
        drain(
            self._sock,
            self._max_datagram_bytes,
            lambda data, source: self._enqueue(now, data, source),
            limit=MAX_DATAGRAMS_PER_TICK,
        )
        self._report_flood(now)
        # A reply due further ahead than the largest delay means the wall clock
        # stepped back since it was queued; send it rather than hold it for hours.
        while self._queue and (
            self._queue[0][0] <= now or self._queue[0][0] - now > self._max_delay
        ):
            _, _, reply = heapq.heappop(self._queue)
            self._send(reply.payload, reply.destination)

    def _report_flood(self, now: float) -> None:
        if self.responder is None:
            return
        limited = self.responder.stats.rate_limited + self.shed
        if limited > self._reported_limited and now >= self._next_flood_report:
            log.warning(
                "WS-Discovery: %d datagrams over the rate limits left unanswered "
                "(a flood or a scan); next report in %.0f s at the earliest",
                limited - self._reported_limited,
                FLOOD_REPORT_SECONDS,
            )
            self._reported_limited = limited
            self._next_flood_report = now + FLOOD_REPORT_SECONDS

    def next_due(self) -> float | None:
        """When the earliest held reply is due (for callers that sleep between ticks)."""
        return self._queue[0][0] if self._queue else None

    def stop(self) -> None:
        if self._sock is None:
            return
        if self.responder is not None:
            self._announce(self.responder.bye())
        self._sock.close()
        self._sock = None
        self._queue.clear()
