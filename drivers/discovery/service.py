"""The discovery Service: ``build_service(config, clock)``; the feature is ``build_discovery``.

It runs the ONVIF device service (the address WS-Discovery hands out), the
WS-Discovery responder (Hello on start, Bye on stop, answers to Probes) and
the mDNS announcement.  In non-discoverable mode neither of the last two
speaks; the ONVIF service still answers whoever knows its address.

What is advertised always answers: the XAddrs name the port the ONVIF server
really listens on (none while it is not serving; the configured
``onvif_xaddrs`` when the firmware runs its own), and mDNS announces the ONVIF
service only while it serves and the LAN provisioning API only while that API
listens and its window is open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from agent.config import AgentConfig
from agent.discovery.mdns import Advert, adverts
from agent.discovery.ratelimit import RateLimits
from agent.discovery.responder import device_target
from agent.errors import EdgeAgentError
from agent.events import Event
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.ports import Clock
from agent.provisioning.limits import ProvisioningWindow
from drivers.clock import SystemClock
from drivers.discovery.mdns_zc import MdnsAnnouncer
from drivers.discovery.onvif_build import build_onvif_server
from drivers.discovery.onvif_server import OnvifHttpServer
from drivers.discovery.onvif_store import OnvifCredentialStore
from drivers.discovery.udp import local_ipv4_addresses
from drivers.discovery.wsd_service import WsdResponderService
from drivers.httpserve import listening_port

log = logging.getLogger(__name__)

PROVISIONING_SERVER = "provisioning-lan"
MAX_WINDOW_RECORD = 64 * 1024


class DiscoveryService:
    name = "discovery"

    def __init__(
        self,
        responder: WsdResponderService | None,
        announcer: MdnsAnnouncer | None,
        *,
        mdns_refresh_seconds: float,
        onvif: OnvifHttpServer | None = None,
    ) -> None:
        self.responder = responder
        self.announcer = announcer
        self.onvif = onvif
        self._mdns_refresh_seconds = mdns_refresh_seconds
        self._next_refresh = 0.0

    def start(self) -> None:
        if self.onvif is not None:
            try:
                self.onvif.start()
            except EdgeAgentError as exc:
                # Nothing is advertised for it then: no XAddrs, no mDNS instance.
                log.warning("ONVIF device service not started: %s", exc)
        try:
            if self.responder is not None:
                self.responder.start()
            if self.announcer is not None:
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
        if self.announcer is not None and (
            now >= self._next_refresh or now < self._next_refresh - self._mdns_refresh_seconds
        ):
            self._next_refresh = now + self._mdns_refresh_seconds
            self.announcer.refresh()
        return ()

    def stop(self) -> None:
        # Bye and the mDNS goodbyes first, while what they withdraw still answers.
        try:
            if self.responder is not None:
                self.responder.stop()
        finally:
            try:
                if self.announcer is not None:
                    self.announcer.stop()
            finally:
                if self.onvif is not None:
                    self.onvif.stop()


def provisioning_window_open(config: AgentConfig, now: float) -> bool:
    """Whether the provisioning window (as the provisioning service last saved it) is open."""
    path = StateLayout(config.state_dir).provisioning_window
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_WINDOW_RECORD + 1)
        data = json.loads(raw)
        if len(raw) > MAX_WINDOW_RECORD or not isinstance(data, dict):
            return False
        window = ProvisioningWindow(config.provisioning.window_seconds)
        window.restore(data, now)
        return window.is_open(now)
    except (OSError, ValueError, EdgeAgentError):
        return False  # no record, or one that cannot be read: not advertised


def build_service(
    config: AgentConfig,
    clock: Clock | None = None,
    *,
    claimed_fn: Callable[[], bool] = lambda: False,
    addresses_fn: Callable[[], Sequence[str]] | None = None,
    bind_address: str = "",
    announce_to: tuple[str, int] | None = None,
    join_group: bool = True,
    store: OnvifCredentialStore | None = None,
    lan_discovery: bool = True,
) -> DiscoveryService:
    """The discovery Service for ``config``.

    ``claimed_fn`` reports whether the device is claimed (mDNS TXT ``claimed``);
    ``addresses_fn`` lists the IPv4 addresses to advertise (default: the
    configured interface address, else every private/link-local one);
    ``store`` holds the ONVIF user (default: the one in the state directory).
    ``lan_discovery=False`` builds the ONVIF service alone (non-discoverable
    mode).  The remaining keywords exist for tests that keep everything on
    loopback.
    """
    settings = config.discovery
    device = config.device
    clock = clock or SystemClock()

    def addresses() -> Sequence[str]:
        if addresses_fn is not None:
            return addresses_fn()
        if settings.interface_address:
            return [settings.interface_address]
        return local_ipv4_addresses()

    onvif = None
    if settings.onvif_enabled and not settings.onvif_xaddrs:
        if store is None:
            layout = StateLayout(config.state_dir)
            store = OnvifCredentialStore(layout, DataKeys(layout))
        onvif = build_onvif_server(config, clock, store, started_at=clock.now())

    def xaddrs() -> list[str]:
        if settings.onvif_xaddrs:
            return list(settings.onvif_xaddrs)
        port = onvif.port if onvif is not None else None
        if port is None:
            return []  # never an address nothing serves
        return [f"http://{a}:{port}{settings.xaddrs_path}" for a in addresses()]

    responder = None
    if settings.wsd_enabled and lan_discovery:
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
            clock=clock,
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

    def current_adverts() -> Sequence[Advert]:
        provisioning = listening_port(PROVISIONING_SERVER)
        if provisioning is not None and not provisioning_window_open(config, clock.now()):
            provisioning = None  # the API outlives its window briefly, for a last status
        return adverts(
            serial_number=device.serial_number,
            model=device.model,
            claimed=claimed_fn(),
            onvif_port=onvif.port if onvif is not None else None,
            onvif_path=settings.xaddrs_path,
            provisioning_port=provisioning,
        )

    announcer = None
    if settings.mdns_enabled and settings.discoverable and lan_discovery:
        announcer = MdnsAnnouncer(
            interfaces=settings.mdns_interfaces,
            addresses_fn=addresses,
            adverts_fn=current_adverts,
        )
    return DiscoveryService(
        responder,
        announcer,
        mdns_refresh_seconds=settings.address_check_seconds,
        onvif=onvif,
    )
