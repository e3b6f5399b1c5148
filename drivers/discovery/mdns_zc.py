"""mDNS through python-zeroconf: announce this agent, browse for peers.

Zeroconf owns its sockets and thread; this module only chooses the interfaces
(``["127.0.0.1"]`` in tests), fills the records from the allow-listed TXT
builder in :mod:`agent.discovery.mdns` and wraps zeroconf's errors.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence

import zeroconf

from agent.discovery.mdns import (
    BROWSED_SERVICES,
    HTTP_SERVICE,
    MdnsPeer,
    announcement_txt,
    decode_txt,
    instance_name,
)
from agent.errors import DeviceIOError

MAX_BROWSED_NAMES = 256
RESOLVE_TIMEOUT_MS = 1500
# A fresh browser hears its first answers after about a second (query start-up
# delay plus the responders' aggregation delay for shared records), so listening
# for less than this finds nothing.
MIN_BROWSE_SECONDS = 1.5


def _open(interfaces: Sequence[str]) -> zeroconf.Zeroconf:
    try:
        return zeroconf.Zeroconf(
            interfaces=list(interfaces) if interfaces else zeroconf.InterfaceChoice.All,
            ip_version=zeroconf.IPVersion.V4Only,
        )
    except (OSError, zeroconf.Error) as exc:
        raise DeviceIOError(f"cannot start mDNS on {list(interfaces) or 'all'}: {exc}") from exc


class MdnsAnnouncer:
    """Publishes ``edge-agent-<serial>._http._tcp`` with TXT sn/model/claimed."""

    name = "discovery.mdns"

    def __init__(
        self,
        *,
        serial_number: str,
        model: str,
        port: int,
        interfaces: Sequence[str],
        addresses_fn: Callable[[], Sequence[str]],
        claimed_fn: Callable[[], bool],
    ) -> None:
        self._serial_number = serial_number
        self._model = model
        self._port = port
        self._interfaces = list(interfaces)
        self._addresses_fn = addresses_fn
        self._claimed_fn = claimed_fn
        self._zc: zeroconf.Zeroconf | None = None
        self._info: zeroconf.ServiceInfo | None = None

    def _build_info(self) -> zeroconf.ServiceInfo:
        instance = instance_name(self._serial_number)
        return zeroconf.ServiceInfo(
            HTTP_SERVICE,
            f"{instance}.{HTTP_SERVICE}",
            parsed_addresses=list(self._addresses_fn()),
            port=self._port,
            properties=announcement_txt(
                serial_number=self._serial_number, model=self._model, claimed=self._claimed_fn()
            ),
            server=f"{instance}.local.",
        )

    def start(self) -> None:
        self._zc = _open(self._interfaces)
        self._info = self._build_info()
        try:
            self._zc.register_service(self._info, allow_name_change=True)
        except (OSError, zeroconf.Error) as exc:
            self.stop()
            raise DeviceIOError(f"cannot announce over mDNS: {exc}") from exc

    def refresh(self) -> None:
        """Re-announce if the claimed flag or the addresses changed."""
        if self._zc is None or self._info is None:
            return
        fresh = self._build_info()
        if fresh.properties != self._info.properties or set(fresh.addresses) != set(
            self._info.addresses
        ):
            fresh.name = self._info.name
            try:
                self._zc.update_service(fresh)
            except (OSError, zeroconf.Error) as exc:
                raise DeviceIOError(f"cannot update mDNS announcement: {exc}") from exc
            self._info = fresh

    def stop(self) -> None:
        if self._zc is None:
            return
        try:
            self._zc.unregister_all_services()
        finally:
            self._zc.close()
            self._zc = None


class _Collector(zeroconf.ServiceListener):
    def __init__(self) -> None:
        self.found: dict[tuple[str, str], None] = {}
        self._lock = threading.Lock()

    def add_service(self, zc: zeroconf.Zeroconf, type_: str, name: str) -> None:
        with self._lock:
            if len(self.found) < MAX_BROWSED_NAMES:
                self.found[(type_, name)] = None

    def update_service(self, zc: zeroconf.Zeroconf, type_: str, name: str) -> None:
        self.add_service(zc, type_, name)

    def remove_service(self, zc: zeroconf.Zeroconf, type_: str, name: str) -> None:
        with self._lock:
            self.found.pop((type_, name), None)


def browse(
    *,
    timeout: float,
    interfaces: Sequence[str] = (),
    service_types: Sequence[str] = BROWSED_SERVICES,
) -> list[MdnsPeer]:
    """Peers announcing ``service_types`` heard within ``timeout`` (at least 1.5) seconds."""
    zc = _open(interfaces)
    collector = _Collector()
    peers: list[MdnsPeer] = []
    try:
        browser = zeroconf.ServiceBrowser(zc, list(service_types), listener=collector)
        time.sleep(max(timeout, MIN_BROWSE_SECONDS))
        browser.cancel()
        for type_, name in list(collector.found):
            info = zc.get_service_info(type_, name, timeout=RESOLVE_TIMEOUT_MS)
            if info is None:
                continue
            peers.append(
                MdnsPeer(
                    service_type=type_,
                    name=name,
                    addresses=tuple(socket.inet_ntoa(a) for a in info.addresses if len(a) == 4),
                    port=int(info.port or 0),
                    properties=decode_txt(info.properties),
                )
            )
    except (OSError, zeroconf.Error) as exc:
        raise DeviceIOError(f"mDNS browse failed: {exc}") from exc
    finally:
        zc.close()
    return sorted(peers, key=lambda p: (p.service_type, p.name))
