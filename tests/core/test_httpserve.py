"""drivers/httpserve.py against real loopback sockets: caps, eviction, deadlines, logs."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from drivers import httpserve
from drivers.httpserve import BoundedHTTPServer, BoundedRequestHandler, ServerLimits
from tests.support.attacks import close_all, get, idle_connections, wait_closed

ATTACKER = "127.0.0.2"


class Hello(BoundedRequestHandler):
    release: threading.Event | None = None
    # Handlers of /slow that have their request (the test's sentinel, not a time).
    slow_started: threading.Semaphore = threading.Semaphore(0)

    def do_GET(self) -> None:
        if self.path == "/slow" and self.release is not None:
            Hello.slow_started.release()
            self.release.wait(10)
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[BoundedHTTPServer] = []

    def start(
        limits: ServerLimits, handler: type[BoundedRequestHandler] = Hello
    ) -> BoundedHTTPServer:
        server = BoundedHTTPServer(("127.0.0.1", 0), handler, limits, name="test-http")
        server.start(poll_interval=0.05)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def _seen(server: BoundedHTTPServer) -> object:
    """A settle hook: wait until the server has taken every connection opened so far."""

    def settle(opened: int) -> None:
        _wait_for(lambda: server.stats.admitted + server.stats.refused >= opened)

    return settle


def test_idle_connections_from_one_source_are_capped_and_a_technician_still_gets_in(
    serve: object,
) -> None:
    server = serve(ServerLimits(max_connections=8, max_connections_per_source=3))  # type: ignore[operator]
    attack = idle_connections(server.port, 300, [ATTACKER], settle=_seen(server))  # type: ignore[arg-type]
    try:
        _wait_for(lambda: server.stats.admitted + server.stats.refused >= 300)
        assert server.open_connections == 3
        assert server.stats.refused == 297
        assert get(server.port, "/")[0] == 200
    finally:
        close_all(attack)


def test_a_refused_connection_is_told_503_and_closed_at_once(serve: object) -> None:
    server = serve(ServerLimits(max_connections=8, max_connections_per_source=1))  # type: ignore[operator]
    holder = idle_connections(server.port, 1, [ATTACKER])
    try:
        _wait_for(lambda: server.open_connections == 1)
        extra = socket.create_connection(("127.0.0.1", server.port), source_address=(ATTACKER, 0))
        extra.settimeout(5)
        reply = extra.recv(4096)
        assert reply.startswith(b"HTTP/1.0 503 ")
        assert wait_closed(extra, 5) < 1.0
        extra.close()
    finally:
        close_all(holder)


def test_full_server_evicts_the_oldest_idle_connection_for_a_newcomer(serve: object) -> None:
    server = serve(ServerLimits(max_connections=8, max_connections_per_source=8))  # type: ignore[operator]
    sources = [f"127.0.1.{n}" for n in range(1, 101)]
    attack = idle_connections(server.port, 400, sources, settle=_seen(server))  # type: ignore[arg-type]
    try:
        _wait_for(lambda: server.stats.admitted >= 400)
        assert server.open_connections == 8
        # The spread-out idle flood filled the server; a real request evicts one of them.
        assert get(server.port, "/")[0] == 200
        assert server.stats.evicted >= 393
    finally:
        close_all(attack)


def test_connections_mid_request_are_never_evicted(serve: object) -> None:
    Hello.release = threading.Event()
    Hello.slow_started = threading.Semaphore(0)
    server = serve(ServerLimits(max_connections=2, max_connections_per_source=2))  # type: ignore[operator]
    results: list[int] = []

    def slow() -> None:
        results.append(get(server.port, "/slow", timeout=10)[0])

    workers = [threading.Thread(target=slow) for _ in range(2)]
    try:
        for worker in workers:
            worker.start()
        _wait_for(lambda: server.open_connections == 2)
        _wait_for(lambda: server.stats.admitted == 2)
        # Until a request is read its connection is idle, and evictable: wait for both.
        assert all(Hello.slow_started.acquire(timeout=10) for _ in workers)
        # Both connections delivered their request: a newcomer waits its turn (503).
        assert get(server.port, "/", source=ATTACKER)[0] == 503
    finally:
        Hello.release.set()
        for worker in workers:
            worker.join(10)
        Hello.release = None
    assert results == [200, 200]


def test_trickled_headers_are_cut_at_the_request_deadline(serve: object) -> None:
    server = serve(ServerLimits(timeout_seconds=1.0))  # type: ignore[operator]
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    try:
        # One byte every 0.2 s: never idle for a whole timeout, never a complete head.
        for _ in range(40):
            sock.sendall(b"X")
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        wait_closed(sock, 5)
    elapsed = time.monotonic() - started
    sock.close()
    assert elapsed < 2.5, f"a slowloris connection lived {elapsed:.1f} s past a 1 s deadline"
    _wait_for(lambda: server.open_connections == 0)


def test_an_oversized_request_head_is_cut(serve: object) -> None:
    server = serve(ServerLimits())  # type: ignore[operator]
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(5)
    sent = 0
    try:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        while sent < 4 * httpserve.MAX_HEAD_BYTES:
            sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            sent += 1009
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert wait_closed(sock, 5) < 5
    sock.close()
    assert sent < 4 * httpserve.MAX_HEAD_BYTES or server.stats.peer_errors >= 1
    _wait_for(lambda: server.stats.peer_errors >= 1)


def test_hostile_peers_cost_one_throttled_line_and_no_traceback(
    serve: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.httpserve")
    limits = ServerLimits(max_connections=4, max_connections_per_source=2, timeout_seconds=0.5)
    server = serve(limits)  # type: ignore[operator]
    attack = idle_connections(server.port, 200, [ATTACKER], settle=_seen(server))  # type: ignore[arg-type]
    try:
        _wait_for(lambda: server.stats.refused >= 198)
        _wait_for(lambda: server.stats.peer_errors >= 2)  # the two admitted ones timed out
    finally:
        close_all(attack)
    records = [r for r in caplog.records if r.name == "drivers.httpserve"]
    assert 1 <= len(records) <= 2
    assert all(r.exc_info is None for r in records)
    assert "test-http" in records[0].getMessage()


def test_connection_budget_stays_far_below_the_descriptor_limit() -> None:
    assert httpserve.connection_budget(16, soft_limit=1024) == 16
    assert httpserve.connection_budget(256, soft_limit=1024) == 1024 // httpserve.FD_SHARE
    assert httpserve.connection_budget(16, soft_limit=64) == 8
    assert httpserve.connection_budget(16, soft_limit=4) == 1


def test_handler_must_be_bounded() -> None:
    import http.server

    with pytest.raises(TypeError):
        BoundedHTTPServer(
            ("127.0.0.1", 0), http.server.BaseHTTPRequestHandler, ServerLimits(), name="x"  # type: ignore[arg-type]
        )


def test_a_server_closed_with_open_connections_releases_them(serve: object) -> None:
    server = serve(ServerLimits(max_connections=4, max_connections_per_source=4))  # type: ignore[operator]
    attack = idle_connections(server.port, 4, [ATTACKER])
    try:
        _wait_for(lambda: server.open_connections == 4)
        server.close()
        for sock in attack:
            assert wait_closed(sock, 5) < 5
        with pytest.raises(OSError):
            http.client.HTTPConnection("127.0.0.1", server.port, timeout=1).request("GET", "/")
    finally:
        close_all(attack)


class Counting(Hello):
    served: list[str] = []

    def do_GET(self) -> None:
        Counting.served.append(self.path)
        super().do_GET()


def test_an_evicted_half_request_is_never_acted_on(serve: object) -> None:
    Counting.served = []
    server = serve(  # type: ignore[operator]
        ServerLimits(max_connections=2, max_connections_per_source=2), Counting
    )
    halves = []
    for n in (2, 3):
        sock = socket.create_connection(
            ("127.0.0.1", server.port), source_address=(f"127.0.0.{n}", 0)
        )
        sock.sendall(b"GET /half HTTP/1.0\r\nHost: x\r\n")  # no blank line: the head is not done
        halves.append(sock)
    _wait_for(lambda: server.open_connections == 2)
    # A newcomer evicts the older half request; its fragment must not become a request.
    assert get(server.port, "/whole")[0] == 200
    assert wait_closed(halves[0], 5) < 5
    assert Counting.served == ["/whole"]
    close_all(halves)
