"""The discovery Service: ``build_service(config, clock)``; the feature is ``build_discovery``.

It runs the WS-Discovery responder (Hello on start, Bye on stop, answers to
Probes) and the mDNS announcement.  In non-discoverable mode neither speaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.config import AgentConfig
from agent.discovery.ratelimit import RateLimits
from agent.discovery.responder import device_target
from agent.events import Event
from agent.ports import Clock
from drivers.clock import SystemClock
from drivers.discovery.mdns_zc import MdnsAnnouncer
from drivers.discovery.udp import local_ipv4_addresses
from drivers.discovery.wsd_service import WsdResponderService


class DiscoveryService:
    name = "discovery"

    def __init__(
        self,
        responder: WsdResponderService | None,
        announcer: MdnsAnnouncer | None,
        *,
        mdns_refresh_seconds: float,
    ) -> None:
        self.responder = responder
        self.announcer = announcer
        self._mdns_refresh_seconds = mdns_refresh_seconds
        self._next_refresh = 0.0

    def start(self) -> None:
        if self.responder is not None:
            self.responder.start()
        if self.announcer is not None:
            try:
                self.announcer.start()
            except BaseException:
                self.stop()
                raise

    def fileno(self) -> int:
        """The responder's socket, for a main loop that waits with select(); -1 if none."""
        return self.responder.fileno() if self.responder is not None else -1

    def tick(self, now: float) -> Sequence[Event]:
        if self.responder is not None:
            self.responder.tick(now)
        if self.announcer is not None and now >= self._next_refresh:
            self._next_refresh = now + self._mdns_refresh_seconds
            self.announcer.refresh()
        return ()

    def stop(self) -> None:
        try:
            if self.responder is not None:
                self.responder.stop()
        finally:
            if self.announcer is not None:
                self.announcer.stop()


def build_service(
    config: AgentConfig,
    clock: Clock | None = None,
    *,
    claimed_fn: Callable[[], bool] = lambda: False,
    addresses_fn: Callable[[], Sequence[str]] | None = None,
    bind_address: str = "",
    announce_to: tuple[str, int] | None = None,
    join_group: bool = True,
) -> DiscoveryService:
    """The discovery Service for ``config``.

    ``claimed_fn`` reports whether the device is claimed (mDNS TXT ``claimed``);
    ``addresses_fn`` lists the IPv4 addresses to advertise (default: the
    configured interface address, else every private/link-local one).  The
    remaining keywords exist for tests that keep everything on loopback.
    """
    settings = config.discovery
    device = config.device

    def addresses() -> Sequence[str]:
        if addresses_fn is not None:
            return addresses_fn()
        if settings.interface_address:
            return [settings.interface_address]
        return local_ipv4_addresses()

    def xaddrs() -> list[str]:
        return [f"http://{a}:{settings.http_port}{settings.xaddrs_path}" for a in addresses()]

    responder = None
    if settings.wsd_enabled:
        responder = WsdResponderService(
            target=device_target(
                serial_number=device.serial_number,
                model=device.model,
                hardware=device.hardware_class,
                xaddrs=(),
                metadata_version=settings.metadata_version,
                extra_scopes=settings.extra_scopes,
            ),
            state_dir=config.state_dir,
            clock=clock or SystemClock(),
            xaddrs_fn=xaddrs,
            bind_address=bind_address,
            port=settings.wsd_port,
            group=settings.wsd_multicast_group if join_group else None,
            announce_to=announce_to or (settings.wsd_multicast_group, settings.wsd_port),
            interface_address=settings.interface_address,
            max_delay=settings.reply_delay_max_ms / 1000,
            discoverable=settings.discoverable,
            max_datagram_bytes=settings.max_datagram_bytes,
            address_check_seconds=settings.address_check_seconds,
            rate_limits=RateLimits(
                source_rate=settings.wsd_source_rate_per_second,
                source_burst=settings.wsd_source_burst,
                global_rate=settings.wsd_global_rate_per_second,
                global_burst=settings.wsd_global_burst,
                tracked_sources=settings.wsd_tracked_sources,
            ),
        )
    announcer = None
    if settings.mdns_enabled and settings.discoverable:
        announcer = MdnsAnnouncer(
            serial_number=device.serial_number,
            model=device.model,
            port=settings.http_port,
            interfaces=settings.mdns_interfaces,
            addresses_fn=addresses,
            claimed_fn=claimed_fn,
        )
    return DiscoveryService(
        responder, announcer, mdns_refresh_seconds=settings.address_check_seconds
    )
