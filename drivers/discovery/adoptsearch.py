"""The hub's background WS-Discovery search (``[camera] adopt_discovered``).

A :class:`DiscoveryWorker` thread searches the LAN every ``interval`` seconds
(the client of ``edge-agent discover``) and, in between, listens on the
WS-Discovery group for Hello (brings the next search forward) and Bye (the
camera left).  It only reports what it heard (:class:`Searched`, :class:`Gone`);
:mod:`drivers.camera.adopt` decides on the main loop.  Bounded against a hostile
LAN: replies parsed per search, group messages parsed per second, reports
queued; a failing search is retried after a doubling delay.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import select
import socket
import threading
import time

from agent.discovery import wsd
from agent.discovery.cameras import Camera, ProbeSession
from agent.discovery.responder import is_local_source
from agent.discovery.settings import DiscoverySettings
from agent.errors import DecodeError, DeviceIOError, EdgeAgentError
from drivers.discovery.clients import probe_cameras
from drivers.discovery.udp import open_listener

log = logging.getLogger(__name__)

MAX_REPLIES_PER_SEARCH = 256  # datagrams parsed per search; a flood beyond is read, not parsed
MAX_GROUP_PARSES_PER_SECOND = 32  # Hello/Bye parsed per second (~160 us of XML each)
MAX_QUEUED_REPORTS = 64
MAX_BACKOFF_SECONDS = 600.0
MIN_SEARCH_GAP_SECONDS = 2.0
MAX_REPEATS = 2  # a Hello storm cannot turn into a search storm


@dataclasses.dataclass(frozen=True)
class Searched:
    cameras: tuple[Camera, ...]


@dataclasses.dataclass(frozen=True)
class Gone:
    endpoint: str


Report = Searched | Gone


class BoundedSession(ProbeSession):
    """A search that parses at most ``MAX_REPLIES_PER_SEARCH`` replies, none from afar."""

    def __init__(self, settings: DiscoverySettings) -> None:
        super().__init__(max_datagram_bytes=settings.max_datagram_bytes)
        self.parsed = 0
        self.shed = 0

    def feed(self, data: bytes, source: tuple[str, int]) -> list[Camera]:
        if self.parsed >= MAX_REPLIES_PER_SEARCH or not is_local_source(source[0]):
            self.shed += 1
            return []
        self.parsed += 1
        return super().feed(data, source)


class DiscoveryWorker:
    """The background search: reports what it heard; never touches the registry itself."""

    def __init__(
        self,
        settings: DiscoverySettings,
        *,
        interval: float,
        destination: tuple[str, int] | None = None,
        listen: bool = True,
    ) -> None:
        # At most two sends per ONVIF type: four Probes stay within a responder's
        # per-source burst (``wsd_source_burst``, 5), and the next search is the retry.
        self.settings = dataclasses.replace(
            settings, probe_repeats=min(settings.probe_repeats, MAX_REPEATS)
        )
        self.interval = interval
        self.timeout = settings.default_timeout_seconds
        self.destination = destination
        self.listen = listen
        self.searches = 0
        self.failures = 0
        self.shed = 0  # replies and group messages read but not parsed (over budget)
        self.dropped_reports = 0
        self._reports: collections.deque[Report] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported = ""
        self._last = 0.0  # monotonic start of the latest search

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="camera-adopt", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def take(self) -> list[Report]:
        with self._lock:
            reports = list(self._reports)
            self._reports.clear()
        return reports

    def _push(self, report: Report) -> None:
        with self._lock:
            if len(self._reports) >= MAX_QUEUED_REPORTS:
                self.dropped_reports += 1
                return
            self._reports.append(report)

    def _problem(self, problem: str) -> None:
        if problem != self._reported:
            self._reported = problem
            log.warning("camera adoption: %s", problem)

    def _run(self) -> None:
        listener: socket.socket | None = None
        next_search = time.monotonic()
        try:
            while not self._stop.is_set():
                if listener is None and self.listen:
                    listener = self._open_listener()
                now = time.monotonic()
                if now >= next_search:
                    next_search = now + self._search()
                    continue
                self._wait(listener, next_search)
                if self._wake.is_set():
                    self._wake.clear()
                    next_search = min(next_search, self._last + MIN_SEARCH_GAP_SECONDS)
        finally:
            if listener is not None:
                listener.close()

    def _search(self) -> float:
        """One search; returns the seconds until the next (doubling while it fails)."""
        self._last = time.monotonic()
        session = BoundedSession(self.settings)
        try:
            cameras = probe_cameras(
                self.settings, timeout=self.timeout, destination=self.destination, session=session
            )
        except EdgeAgentError as exc:
            self.failures += 1
            self._problem(f"search failed: {exc}")
            return float(min(self.interval * 2**self.failures, MAX_BACKOFF_SECONDS))
        finally:
            self.shed += session.shed
        if self.failures or self._reported:
            log.info("camera adoption: searching again")
        self.failures, self._reported = 0, ""
        self.searches += 1
        self._push(Searched(tuple(cameras)))
        return self.interval

    def _open_listener(self) -> socket.socket | None:
        # Bound to the group address: only multicast reaches it, so a unicast Probe to
        # 3702 still goes to the device's own responder (both sockets share the port).
        group = self.settings.wsd_multicast_group
        try:
            return open_listener(
                bind_address=group,
                port=self.settings.wsd_port,
                group=group,
                interface_address=self.settings.interface_address,
            )
        except DeviceIOError as exc:
            self._problem(f"not listening for Hello/Bye: {exc}")
            self.listen = False  # searches alone still find and lose cameras
            return None

    def _wait(self, listener: socket.socket | None, until: float) -> None:
        """Until ``until`` (or a wake-up): read Hello/Bye within the parse budget."""
        budget, window = MAX_GROUP_PARSES_PER_SECOND, time.monotonic()
        while not self._stop.is_set() and not self._wake.is_set():
            now = time.monotonic()
            if now >= until:
                return
            if now - window >= 1.0:
                budget, window = MAX_GROUP_PARSES_PER_SECOND, now
            wait = min(until - now, 0.5)
            if listener is None:
                self._wake.wait(wait)
                continue
            if not select.select([listener], [], [], wait)[0]:
                continue
            for _ in range(64):
                try:
                    data, source = listener.recvfrom(self.settings.max_datagram_bytes + 1)
                except OSError:
                    break
                if budget <= 0 or not is_local_source(str(source[0])):
                    self.shed += 1
                    continue
                budget -= 1
                self._group_message(data)

    def _group_message(self, data: bytes) -> None:
        try:
            message = wsd.decode(data, self.settings.max_datagram_bytes)
        except DecodeError:
            return
        if isinstance(message, wsd.Bye):
            self._push(Gone(message.endpoint))
        elif isinstance(message, wsd.Hello):
            self._wake.set()  # search soon: a Hello's XAddrs may be empty or stale
