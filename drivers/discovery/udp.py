"""UDP sockets for discovery: the only place WS-Discovery/SSDP touch the network.

Multicast is sent with TTL 1 so nothing we send leaves the local link.  OS
errors are wrapped into the agent's TransportError tree here.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Sequence

import ifaddr

from agent.discovery.responder import is_local_source
from agent.errors import ConnectionLostError, DeviceIOError
from agent.ports import Clock
from drivers.clock import SystemClock

MULTICAST_TTL = 1


def _membership(group: str, interface_address: str) -> bytes:
    any_interface = bytes(4)  # INADDR_ANY: let the kernel pick by route
    local = socket.inet_aton(interface_address) if interface_address else any_interface
    return socket.inet_aton(group) + local


def _udp_socket(setup: Callable[[socket.socket], None], what: str) -> socket.socket:
    """A non-blocking IPv4 UDP socket prepared by ``setup``; OSError becomes DeviceIOError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        setup(sock)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise DeviceIOError(f"cannot open {what}: {exc}") from exc
    return sock


def open_listener(
    *, bind_address: str, port: int, group: str | None, interface_address: str = ""
) -> socket.socket:
    """A UDP socket on ``port``, joined to ``group`` when given."""

    def setup(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_address, port))
        if group is not None:
            sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _membership(group, interface_address)
            )
        _multicast_options(sock, interface_address)

    return _udp_socket(setup, f"udp listener on {bind_address or '*'}:{port}")


def _multicast_options(sock: socket.socket, interface_address: str) -> None:
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
    if interface_address:
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface_address)
        )


def open_client(interface_address: str = "") -> socket.socket:
    """An ephemeral-port UDP socket for sending probes and reading replies."""

    def setup(sock: socket.socket) -> None:
        sock.bind((interface_address, 0))
        _multicast_options(sock, interface_address)

    return _udp_socket(setup, "udp client socket")


Send = tuple[float, bytes, tuple[str, int]]


def exchange(
    sock: socket.socket,
    sends: Sequence[Send],
    *,
    timeout: float,
    max_datagram_bytes: int,
    on_datagram: Callable[[bytes, tuple[str, int]], object],
    clock: Clock | None = None,
) -> None:
    """Send each datagram at its offset and feed every reply until ``timeout``.

    Raises ConnectionLostError only if not a single datagram could be sent.
    """
    clock = clock or SystemClock()
    start = clock.monotonic()
    pending = sorted(sends, key=lambda s: s[0])
    sent, last_error = 0, ""
    while True:
        elapsed = clock.monotonic() - start
        while pending and pending[0][0] <= elapsed:
            _, payload, destination = pending.pop(0)
            try:
                sock.sendto(payload, destination)
                sent += 1
            except OSError as exc:
                last_error = str(exc)
        if elapsed >= timeout:
            break
        wait = timeout - elapsed
        if pending:
            wait = min(wait, pending[0][0] - elapsed)
        readable, _, _ = select.select([sock], [], [], max(wait, 0.0))
        if readable:
            drain(sock, max_datagram_bytes, on_datagram)
    if not sent and sends:
        raise ConnectionLostError(f"could not send any discovery datagram: {last_error}")


def drain(
    sock: socket.socket,
    max_datagram_bytes: int,
    on_datagram: Callable[[bytes, tuple[str, int]], object],
    limit: int = 64,
) -> None:
    for _ in range(limit):
        try:
            # One byte over the cap so oversized datagrams are seen as such, not truncated.
            data, source = sock.recvfrom(max_datagram_bytes + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        on_datagram(data, (str(source[0]), int(source[1])))


def local_ipv4_addresses() -> list[str]:
    """Private/link-local IPv4 addresses of this host's interfaces (not loopback)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and is_local_source(ip.ip) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return sorted(set(found))
