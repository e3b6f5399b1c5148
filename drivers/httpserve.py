"""One bounded HTTP server for every LAN API (the log endpoint, the provisioning API).

``http.server.ThreadingHTTPServer`` gives each connection a thread and waits
on it forever.  A LAN peer that opens connections and never sends a byte
(1,032 of them, measured) took all 1,024 file descriptors of the agent: the
upgrade service could no longer read its state file, its tick failed, the
liveness gate withheld WATCHDOG=1, and the tracebacks of every failed tick
flooded the log.  This server keeps a hostile peer's cost bounded instead:

* a hard cap on open connections (far below ``RLIMIT_NOFILE``, see
  :func:`connection_budget`) and a smaller cap per source address; an excess
  connection is answered ``503`` without waiting and closed at once;
* when the cap is full, the oldest connection that has not yet delivered its
  request head is evicted for the newcomer, so idle or trickling peers
  (slowloris) cannot starve a technician who sends a request straight away;
* one deadline for the whole request (line, headers, body: ``timeout_seconds``
  from the moment it starts), not per ``recv``, so a byte every few seconds
  does not keep a connection alive; each write is bounded by the same timeout;
* the request head is capped in bytes, the listen backlog is small, and
  threads are daemon threads, one per admitted connection (so bounded too);
* hostile-peer trouble is one throttled log line, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import http.server
import io
import logging
import resource
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.ports import Clock
from drivers.clock import SystemClock

log = logging.getLogger(__name__)

# Each server may use at most this share of the soft RLIMIT_NOFILE: two LAN
# servers together stay under a quarter, leaving the rest to the agent's own
# files, SQLite, the broker socket and the camera (and keeping descriptors
# below select()'s FD_SETSIZE, which serial and discovery code still uses).
FD_SHARE = 8
# Request line and headers, plus what the buffered reader may read ahead.
MAX_HEAD_BYTES = 32 * 1024
LOG_EVERY_SECONDS = 10.0
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 16
    max_connections_per_source: int = 4
    # The whole request must arrive within this; each response write gets as long.
    timeout_seconds: float = 10.0
    # Handshaken connections the kernel holds until accepted: kernel memory, no fds
    # of ours.  Far below somaxconn, but not so short that a burst of SYNs is dropped
    # (at 16, bursts of 4 already cost legitimate clients 1 s SYN retries).
    backlog: int = 64

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_source < 1:
            raise ValueError("connection caps must be at least 1")
        if self.timeout_seconds <= 0 or self.backlog < 1:
            raise ValueError("timeout and backlog must be positive")


def connection_budget(requested: int, soft_limit: int | None = None) -> int:
    """``requested``, lowered to 1/FD_SHARE of the soft RLIMIT_NOFILE if that is smaller."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return requested
    return max(1, min(requested, soft_limit // FD_SHARE))


class HeadTooLargeError(OSError):
    """The peer sent more than MAX_HEAD_BYTES before its request head was complete."""


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline and a byte budget for the request head."""

    def __init__(self, handler: BoundedRequestHandler) -> None:
        self._handler = handler
        self.head_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self._handler
        remaining = handler.deadline - handler.server.clock.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        sock = handler.connection
        sock.settimeout(remaining)
        try:
            count: int = sock.recv_into(buffer)
        finally:
            sock.settimeout(handler.server.limits.timeout_seconds)
        if not handler.head_done:
            if count == 0 and self.head_bytes:
                # http.server would take a head cut short (an evicted or vanished peer)
                # for a complete one and act on the fragment: refuse it instead.
                raise ConnectionAbortedError("connection closed inside the request head")
            self.head_bytes += count
            if self.head_bytes > MAX_HEAD_BYTES:
                raise HeadTooLargeError(f"request head larger than {MAX_HEAD_BYTES} bytes")
        return count


class BoundedRequestHandler(http.server.BaseHTTPRequestHandler):
    """Base for handlers served by :class:`BoundedHTTPServer` (do_GET etc. as usual)."""

    server: BoundedHTTPServer
    deadline = 0.0
    head_done = False

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.timeout_seconds)
        # The plain reader holds a reference on the socket: close it or the fd outlives us.
        self.rfile.close()
        self._reader = _DeadlineReader(self)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self.deadline = self.server.clock.monotonic() + self.server.limits.timeout_seconds
        self.head_done = False
        self._reader.head_bytes = 0
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.head_done = True
        self.server.head_received(self.connection)
        return ok

    def log_error(self, format: str, *args: Any) -> None:
        # Timeouts and malformed requests come from peers: one throttled line.  Not the
        # arguments: send_error's message quotes the request line, query and all.
        what = f"answered {args[0]}" if args and isinstance(args[0], int) else format
        self.server.note_peer_trouble(self.client_address[0], what.partition(":")[0])


@dataclasses.dataclass
class _Connection:
    source: str
    accepted: float
    head_pending: bool = True


@dataclasses.dataclass
class ServerStats:
    admitted: int = 0
    refused: int = 0
    evicted: int = 0
    peer_errors: int = 0


# The servers accepting connections now, by name: what mDNS may advertise
# (drivers/discovery announces only a service that is really listening).
_listening: dict[str, BoundedHTTPServer] = {}
_listening_lock = threading.Lock()


def listening_port(name: str) -> int | None:
    """The port the server called ``name`` is serving on now, or None."""
    with _listening_lock:
        server = _listening.get(name)
        return server.port if server is not None else None


class BoundedHTTPServer(http.server.HTTPServer):
    """An HTTP server with the limits above; run it with :meth:`start` / :meth:`close`."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedRequestHandler],
        limits: ServerLimits,
        *,
        name: str,
        clock: Clock | None = None,
    ) -> None:
        if not issubclass(handler, BoundedRequestHandler):
            raise TypeError("handler must derive from BoundedRequestHandler")
        self.limits = limits
        self.name = name
        self.clock = clock or SystemClock()
        self.request_queue_size = limits.backlog
        self.max_connections = connection_budget(limits.max_connections)
        self.stats = ServerStats()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        self._trouble = _Throttle(f"{name}: ", self.clock.monotonic)
        self._thread: threading.Thread | None = None
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (a DNS lookup at start-up) only
        # to fill server_name, which no handler here uses.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    # --- accepting ----------------------------------------------------------

    def get_request(self) -> tuple[Any, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The listening socket stays readable: pause instead of spinning on accept.
                self._trouble.note(f"cannot accept: {exc.strerror}")
                time.sleep(0.05)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        source = str(client_address[0])
        evicted: socket.socket | None = None
        with self._lock:
            refusal = self._refusal(source)
            if refusal == "full":
                evicted = self._oldest_pending()
                refusal = "" if evicted is not None else refusal
            if not refusal:
                if evicted is not None:
                    del self._connections[evicted]
                    self.stats.evicted += 1
                self._connections[request] = _Connection(source, self.clock.monotonic())
                self.stats.admitted += 1
            else:
                self.stats.refused += 1
        if evicted is not None:
            _abort(evicted)
            self._trouble.note("connection cap reached: evicted the oldest idle connection")
        if refusal:
            self._trouble.note(f"refused a connection from {source} ({_REFUSALS[refusal]})")
            _refuse(request)
            return
        thread = threading.Thread(
            target=self._serve, args=(request, client_address), name=f"{self.name}-conn",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the same answer as a full server
            self._forget(request)
            _refuse(request)

    def _refusal(self, source: str) -> str:
        per_source = sum(1 for c in self._connections.values() if c.source == source)
        if per_source >= self.limits.max_connections_per_source:
            return "source"
        if len(self._connections) >= self.max_connections:
            return "full"
        return ""

    def _oldest_pending(self) -> socket.socket | None:
        pending = [(c.accepted, id(s), s) for s, c in self._connections.items() if c.head_pending]
        return min(pending)[2] if pending else None

    def head_received(self, request: socket.socket) -> None:
        """The request head is in: from now on this connection is never evicted."""
        with self._lock:
            connection = self._connections.get(request)
            if connection is not None:
                connection.head_pending = False

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            self._connections.pop(request, None)

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._forget(request)
            self.shutdown_request(request)

    # --- errors -------------------------------------------------------------

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            # Resets, timeouts, oversized heads: what hostile or flaky peers do.
            self.note_peer_trouble(str(client_address[0]), f"{type(exc).__name__}: {exc}")
            return
        log.error("%s: request from %s failed", self.name, client_address[0], exc_info=exc)

    def note_peer_trouble(self, source: str, what: str) -> None:
        with self._lock:
            self.stats.peer_errors += 1
        self._trouble.note(f"peer {source}: {what[:200]}")

    # --- running ------------------------------------------------------------

    def start(self, poll_interval: float = 0.2) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": poll_interval},
            name=self.name, daemon=True,
        )
        self._thread.start()
        with _listening_lock:
            _listening[self.name] = self

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every open connection and release the socket."""
        with _listening_lock:
            if _listening.get(self.name) is self:
                del _listening[self.name]
        if self._thread is not None and self._thread.is_alive():
            self.shutdown()
            self._thread.join(timeout)
        self.server_close()
        with self._lock:
            open_now = list(self._connections)
            self._connections.clear()
        for request in open_now:
            _abort(request)


_REFUSALS = {"source": "too many from this source", "full": "server full"}


def _abort(sock: socket.socket) -> None:
    """Wake the thread blocked on ``sock``; it closes the socket as it leaves."""
    with contextlib.suppress(OSError):  # already closed by its own thread
        sock.shutdown(socket.SHUT_RDWR)


def _refuse(sock: socket.socket) -> None:
    """Answer 503 if the send buffer takes it now, then close; never wait for the peer."""
    with contextlib.suppress(OSError):  # a peer that is gone or not reading gets nothing
        sock.send(_BUSY, socket.MSG_DONTWAIT)
    with contextlib.suppress(OSError):
        sock.close()


class _Throttle:
    """One log line now, then at most one per LOG_EVERY_SECONDS with a count of the rest."""

    def __init__(self, prefix: str, monotonic: Callable[[], float]) -> None:
        self._prefix = prefix
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._suppressed = 0

    def note(self, message: str) -> None:
        with self._lock:
            now = self._monotonic()
            if now < self._next:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next = now + LOG_EVERY_SECONDS
        more = f" (and {suppressed} similar since the last report)" if suppressed else ""
        log.warning("%s%s%s", self._prefix, message, more)
