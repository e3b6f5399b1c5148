"""mDNS through python-zeroconf: announce this agent, browse for peers.

Zeroconf owns its sockets and thread; this module only chooses the interfaces
(``["127.0.0.1"]`` in tests), announces the adverts :mod:`agent.discovery.mdns`
builds (only services that answer) and wraps zeroconf's errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

import zeroconf

from agent.discovery.mdns import (
    BROWSED_SERVICES,
    Advert,
    MdnsPeer,
    decode_txt,
)
from agent.errors import DeviceIOError

log = logging.getLogger(__name__)

MAX_BROWSED_NAMES = 256
RESOLVE_TIMEOUT_MS = 1500
# A fresh browser hears its first answers after about a second (query start-up
# delay plus the responders' aggregation delay for shared records), so listening
# for less than this finds nothing.
MIN_BROWSE_SECONDS = 1.5
# A failed announcement (a name another host holds, a socket error) is tried again
# this much later: one warning a minute, not one per loop pass.
RETRY_SECONDS = 60.0


def _open(interfaces: Sequence[str]) -> zeroconf.Zeroconf:
    try:
        return zeroconf.Zeroconf(
            interfaces=list(interfaces) if interfaces else zeroconf.InterfaceChoice.All,
            ip_version=zeroconf.IPVersion.V4Only,
        )
    except (OSError, zeroconf.Error) as exc:
        raise DeviceIOError(f"cannot start mDNS on {list(interfaces) or 'all'}: {exc}") from exc


class MdnsAnnouncer:
    """Publishes the :class:`~agent.discovery.mdns.Advert` list ``adverts_fn`` gives.

    :meth:`start` opens the sockets and hands the first list to zeroconf's own
    loop; :meth:`refresh` (from the main loop) compares a fresh list with what
    is announced and hands the changes (new, updated, withdrawn instances) over
    the same way. Neither waits: probing and announcing take about two seconds,
    which would otherwise hold up start-up (READY) and the main loop.
    """

    name = "discovery.mdns"

    def __init__(
        self,
        *,
        interfaces: Sequence[str],
        addresses_fn: Callable[[], Sequence[str]],
        adverts_fn: Callable[[], Sequence[Advert]],
    ) -> None:
        self._interfaces = list(interfaces)
        self._addresses_fn = addresses_fn
        self._adverts_fn = adverts_fn
        self._zc: zeroconf.Zeroconf | None = None
        self._announced: dict[str, zeroconf.ServiceInfo] = {}
        self._pending: concurrent.futures.Future[None] | None = None
        self._retry_at = 0.0  # after a failed announcement: not before this (monotonic)

    @property
    def announced(self) -> dict[str, int]:
        """Instance name -> port of what is announced (or being announced) now."""
        return {name: int(info.port or 0) for name, info in self._announced.items()}

    def _infos(self) -> dict[str, zeroconf.ServiceInfo]:
        addresses = list(self._addresses_fn())
        infos = {}
        for advert in self._adverts_fn():
            infos[advert.name] = zeroconf.ServiceInfo(
                advert.service_type,
                advert.name,
                parsed_addresses=addresses,
                port=advert.port,
                properties=dict(advert.properties),
                server=f"{advert.host}.local.",
            )
        return infos

    @property
    def settled(self) -> bool:
        """True when no handed-over change is still being probed or announced."""
        return self._pending is None or self._pending.done()

    def start(self) -> None:
        self._zc = _open(self._interfaces)
        self.refresh()  # a failure is logged there and retried RETRY_SECONDS later

    def refresh(self) -> None:
        """Announce what changed (ports, addresses, TXT, instances come and go)."""
        if self._zc is None:
            return
        if self._pending is not None:
            if not self._pending.done():
                return  # the previous change is still being announced
            failure = self._pending.exception()
            self._pending = None
            if failure is not None:
                log.warning(
                    "mDNS announcement failed: %s; retrying in %.0f s", failure, RETRY_SECONDS
                )
                self._announced.clear()  # unknown state: re-announce everything next time
                self._retry_at = time.monotonic() + RETRY_SECONDS
                return
        if time.monotonic() < self._retry_at:
            return
        wanted = self._infos()
        changes: list[tuple[str, zeroconf.ServiceInfo]] = []
        for name, info in wanted.items():
            current = self._announced.get(name)
            if current is None:
                changes.append(("register", info))
            elif (
                info.port != current.port
                or info.properties != current.properties
                or set(info.addresses) != set(current.addresses)
            ):
                changes.append(("update", info))
        changes += [("unregister", i) for n, i in self._announced.items() if n not in wanted]
        if not changes:
            return
        loop = self._zc.loop
        if loop is None:
            return
        self._announced = wanted
        self._pending = asyncio.run_coroutine_threadsafe(_apply(self._zc, changes), loop)

    def stop(self) -> None:
        if self._zc is None:
            return
        try:
            self._zc.unregister_all_services()
        finally:
            self._zc.close()
            self._zc = None
            self._announced.clear()


async def _apply(zc: zeroconf.Zeroconf, changes: list[tuple[str, zeroconf.ServiceInfo]]) -> None:
    for action, info in changes:
        if action == "register":
            await (await zc.async_register_service(info, allow_name_change=False))
        elif action == "update":
            await (await zc.async_update_service(info))
        else:
            await (await zc.async_unregister_service(info))


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
