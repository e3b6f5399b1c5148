"""One-shot LAN searches for ``edge-agent discover``: cameras and the router.

Probes go to the multicast groups by default; every function takes the
destination so tests (and troubleshooting) can aim at one unicast address.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence

from agent.discovery.cameras import Camera, ProbeSession, probe_offsets
from agent.discovery.settings import DiscoverySettings
from agent.discovery.ssdp import (
    MAX_RESPONSE_BYTES,
    SEARCH_TARGETS,
    SSDP_GROUP,
    SsdpResponse,
    UpnpDevice,
    build_msearch,
    group_devices,
    parse_default_gateway,
    parse_response,
)
from agent.errors import DecodeError
from agent.ports import Clock
from drivers.discovery.udp import Send, exchange, open_client

PROC_NET_ROUTE = pathlib.Path("/proc/net/route")


MAX_SSDP_RESPONSES = 512


def _search(
    settings: DiscoverySettings,
    payloads: Sequence[bytes],
    destination: tuple[str, int],
    *,
    timeout: float,
    max_datagram_bytes: int,
    on_datagram: Callable[[bytes, tuple[str, int]], object],
    clock: Clock | None,
) -> None:
    """Send every payload at each backoff offset within ``timeout``; feed the replies."""
    offsets = probe_offsets(
        settings.probe_repeats,
        settings.probe_initial_interval_ms / 1000,
        settings.probe_max_interval_ms / 1000,
    )
    sends: list[Send] = [
        (offset, payload, destination)
        for offset in offsets
        if offset < timeout
        for payload in payloads
    ]
    sock = open_client(settings.interface_address)
    try:
        exchange(
            sock,
            sends,
            timeout=timeout,
            max_datagram_bytes=max_datagram_bytes,
            on_datagram=on_datagram,
            clock=clock,
        )
    finally:
        sock.close()


def probe_cameras(
    settings: DiscoverySettings,
    *,
    timeout: float,
    destination: tuple[str, int] | None = None,
    session: ProbeSession | None = None,
    clock: Clock | None = None,
) -> list[Camera]:
    """Probe for NetworkVideoTransmitter and Device separately, with backoff."""
    run = session or ProbeSession(max_datagram_bytes=settings.max_datagram_bytes)
    _search(
        settings,
        run.probes(),
        destination or (settings.wsd_multicast_group, settings.wsd_port),
        timeout=timeout,
        max_datagram_bytes=settings.max_datagram_bytes,
        on_datagram=run.feed,
        clock=clock,
    )
    return run.cameras()


def default_gateway(route_file: pathlib.Path = PROC_NET_ROUTE) -> str | None:
    try:
        return parse_default_gateway(route_file.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return None


def search_upnp(
    settings: DiscoverySettings,
    *,
    timeout: float,
    destination: tuple[str, int] | None = None,
    gateway: str | None = None,
    search_targets: Sequence[str] = SEARCH_TARGETS,
    clock: Clock | None = None,
) -> list[UpnpDevice]:
    """M-SEARCH for gateway devices and root devices; mark the default gateway's one."""
    target = destination or (SSDP_GROUP, settings.ssdp_port)
    responses: list[SsdpResponse] = []

    def collect(data: bytes, _source: tuple[str, int]) -> None:
        if len(responses) >= MAX_SSDP_RESPONSES:
            return
        try:
            responses.append(parse_response(data))
        except DecodeError:
            return

    host = f"{target[0]}:{target[1]}"
    _search(
        settings,
        [build_msearch(st, settings.ssdp_mx_seconds, host=host) for st in search_targets],
        target,
        timeout=timeout,
        max_datagram_bytes=MAX_RESPONSE_BYTES,
        on_datagram=collect,
        clock=clock,
    )
    return group_devices(responses, gateway)
