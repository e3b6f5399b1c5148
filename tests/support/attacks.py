"""What a hostile LAN peer does to an HTTP endpoint, on loopback only.

Sources are addresses in 127.0.0.0/8 (Linux answers the whole block on
``lo``), so one test can play an attacker at 127.0.0.2 and a technician at
127.0.0.1, or an attacker spread over a hundred addresses.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import time
from collections.abc import Callable, Sequence

BATCH = 16


def idle_connections(
    port: int,
    count: int,
    sources: Sequence[str],
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    settle: Callable[[int], None] | None = None,
    pace: int | None = None,
) -> list[socket.socket]:
    """Up to ``count`` TCP connections that never send a byte, round-robin over ``sources``.

    Connects are issued ``BATCH`` at a time (the server's listen backlog), each
    batch waiting for its handshakes.  A handshake completes in the kernel
    before the server accepts, and once the accept queue overflows Linux drops
    SYNs (retried after 1, 3, 7 s) or answers with SYN cookies whose
    connections the server may never see.  So the attacker keeps pace with the
    server, the strongest flood that still reaches it: ``settle(opened)`` is
    called after each batch (for a test that can see the server), and with
    ``pace`` the next batch waits (up to 1 s) until the server has answered or
    closed all but ``pace`` of the connections opened so far.  What connected
    within ``timeout`` is returned.
    """
    opened: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    for start in range(0, count, BATCH):
        batch = []
        for index in range(start, min(count, start + BATCH)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((sources[index % len(sources)], 0))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # in progress: polled below
                sock.connect((host, port))
            batch.append(sock)
        if not _wait_all(batch, select.POLLOUT, deadline):
            close_all(batch)
            break  # out of time: the server (or its kernel queue) stopped taking more
        opened.extend(batch)
        if settle is not None:
            settle(len(opened))
        if pace is not None:
            _wait_answered(opened, pace, min(deadline, time.monotonic() + 1.0))
    return opened


def _wait_all(socks: Sequence[socket.socket], event: int, deadline: float) -> bool:
    poller = select.poll()
    for sock in socks:
        poller.register(sock, event)
    pending = {sock.fileno() for sock in socks}
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for fd, _ in poller.poll(remaining * 1000):
            pending.discard(fd)
            poller.unregister(fd)
    return True


def _wait_answered(socks: Sequence[socket.socket], allowance: int, until: float) -> None:
    """Until at most ``allowance`` of ``socks`` have nothing to read (no 503, no close)."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    while time.monotonic() < until:
        answered = len(poller.poll(0))
        if len(socks) - answered <= allowance:
            return
        time.sleep(0.005)


def close_all(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def get(
    port: int, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1",
    host: str = "127.0.0.1", timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP GET from ``source``; the status and body."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_until_ok(
    port: int, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1",
    timeout: float = 5.0,
) -> tuple[int, float]:
    """Retry a GET (as a technician's client would) until it is answered 200.

    Returns the status and how long it took; a 503 from a full server is retried.
    """
    started = time.monotonic()
    status = 0
    while time.monotonic() - started < timeout:
        try:
            status, _ = get(port, path, headers, source=source, timeout=timeout)
        except OSError:
            status = 0
        if status == 200:
            break
        time.sleep(0.05)
    return status, time.monotonic() - started


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Block until the server closes ``sock`` (EOF or reset); seconds waited."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started
