"""A hostile LAN against the hub's adoption, over real UDP on loopback.

A fake "camera farm" answers each of the hub's Probes with a flood: garbage
datagrams, an oversized one, hundreds of endpoints from one host, names of
thousands of characters full of ``/``, ``+``, ``#`` and NUL, services on a third
host, and one plausible camera from each of many loopback addresses
(127.0.0.x).  The real background search (:class:`DiscoveryWorker`) and the
real adoption service, with a real hub and sealed credential store, must
keep every cap: replies parsed per search, cameras per host and in total,
name length and alphabet -- and capture nothing without the owner's credentials.
"""

from __future__ import annotations

import dataclasses
import pathlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from agent.camera.adopt import MAX_PER_ADDRESS, AdoptionRegistry, valid_name
from agent.camera.hub import FairScheduler
from agent.camera.motion import MotionDetector, MotionSettings, MotionStateTopic
from agent.discovery import wsd
from agent.discovery.responder import ONVIF_SCOPE, endpoint_for_serial
from agent.discovery.settings import DiscoverySettings
from agent.framebus import FrameBus
from agent.keystore import DataKeys
from agent.layout import StateLayout
from drivers.camera.adopt import AdoptionService, AdoptionStore
from drivers.camera.credentials import CameraCredentialStore
from drivers.camera.hub import HubService
from drivers.camera.services import MotionService
from drivers.discovery.adoptsearch import MAX_REPLIES_PER_SEARCH, DiscoveryWorker

FARM_HOSTS = [f"127.0.0.{k}" for k in range(2, 22)]  # 20 hosts, one camera each
# One host claiming hundreds of cameras; answers are taken in address order, so this one
# comes first and meets the per-host cap before the farm fills the total.
FLOOD_HOST = "127.0.0.1"
MAX_CAMERAS = 8


def _match(endpoint: str, address: str, name: str, xaddr: str | None = None) -> bytes:
    target = wsd.TargetService(
        endpoint=endpoint,
        types=(wsd.NETWORK_VIDEO_TRANSMITTER,),
        scopes=(f"{ONVIF_SCOPE}/name/{urllib.parse.quote(name, safe='')}",),
        xaddrs=(xaddr or f"http://{address}:8080/onvif/device_service",),
    )
    return wsd.encode(wsd.ProbeMatches(wsd.WsdVersion.V2005_04, f"urn:uuid:m-{endpoint}", None,
                                       (target,)))  # fmt: skip


def _flood(reply_to: tuple[str, int], senders: dict[str, socket.socket]) -> int:
    """Everything a hostile LAN answers to one Probe; returns the datagrams sent."""
    hostile_name = "Cam/+#\x00" + "Ж" * 1000  # some long ones; most stay small (socket buffer)
    out: list[tuple[str, bytes]] = [
        (FLOOD_HOST, b"\x00\xff garbage"),
        (FLOOD_HOST, b"<" * 20000),  # over max_datagram_bytes
        (FLOOD_HOST, b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'a'>]><x>&a;</x>"),
        # The service on another host than the one answering: never adopted.
        (FLOOD_HOST, _match("urn:uuid:elsewhere", FLOOD_HOST, "x", "http://10.9.9.9/onvif/d")),
    ]
    for k in range(300):
        name = hostile_name if k % 10 == 0 else f"Cam/+#\x00{k}"
        out.append((FLOOD_HOST, _match(f"urn:uuid:flood-{k}", FLOOD_HOST, name)))
        if k % 10 == 0 and k // 10 < len(FARM_HOSTS):  # the farm's answers, mixed in
            host = FARM_HOSTS[k // 10]
            out.append((host, _match(f"urn:uuid:farm-{host}", host, hostile_name)))
    for k, (host, data) in enumerate(out):
        senders[host].sendto(data, reply_to)
        if k % 4 == 3:
            time.sleep(0.001)  # paced, so the kernel's socket buffer does not drop the flood
    return len(out)


@pytest.fixture
def farm() -> Iterator[tuple[tuple[str, int], list[int]]]:
    """The farm's Probe socket, and the number of datagrams sent per Probe."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.1)
    senders = {}
    for host in [*FARM_HOSTS, FLOOD_HOST]:
        senders[host] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders[host].bind((host, 0))
    sent: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, source = listener.recvfrom(65535)
            except TimeoutError:
                continue
            if isinstance(wsd.decode(data), wsd.Probe):
                sent.append(_flood(source, senders))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname(), sent
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for sock in senders.values():
            sock.close()


def test_a_flood_of_fake_cameras_and_garbage_keeps_every_cap(
    farm: tuple[tuple[str, int], list[int]], tmp_path: pathlib.Path
) -> None:
    destination, sent = farm
    settings = dataclasses.replace(
        DiscoverySettings(),
        interface_address="127.0.0.1",
        probe_repeats=1,
        default_timeout_seconds=1.0,
        mdns_enabled=False,
    )
    layout = StateLayout(tmp_path)
    worker = DiscoveryWorker(settings, interval=1.0, destination=destination, listen=False)
    registry = AdoptionRegistry(
        own_endpoint=endpoint_for_serial("EA-HUB-0001"),
        reserved_names=(),
        configured_hosts=(),
        max_cameras=MAX_CAMERAS,
        missing_probes=3,
    )
    hub = HubService([], FairScheduler([]), FrameBus(), 4)

    def motion_for(name: str) -> MotionService:
        return MotionService(
            MotionDetector(name, MotionSettings()), MotionStateTopic(name, lambda _: True)
        )

    service = AdoptionService(
        registry,
        AdoptionStore(layout),
        worker,
        hub,
        credentials=CameraCredentialStore(layout, DataKeys(layout)),
        motion_for=motion_for,
        fps=5,
        transport="tcp",
    )
    hub.start()
    service.start()
    try:
        deadline = time.monotonic() + 20
        while worker.searches < 2:
            assert time.monotonic() < deadline, "two searches never completed"
            service.tick(time.time())
            time.sleep(0.05)
        service.tick(time.time())
    finally:
        service.stop()
        hub.stop()
    # Each search sends two Probes (one per ONVIF type), each answered by the whole flood.
    assert sent and min(sent) > MAX_REPLIES_PER_SEARCH // 2
    # Past the parse budget the flood was read, not parsed.
    assert worker.shed > 0, (worker.shed, worker.searches, worker.failures, sent, registry.stats)
    cameras = list(registry.cameras.values())
    assert len(cameras) == MAX_CAMERAS
    assert sum(c.address == FLOOD_HOST for c in cameras) <= MAX_PER_ADDRESS
    stats = registry.stats
    assert stats.refused_full > 0 and stats.refused_address > 0 and stats.refused_xaddr > 0
    names = [c.name for c in cameras]
    assert len(set(names)) == len(names)
    assert all(valid_name(n) and len(n) <= 64 for n in names), names
    # No credentials: listed as pending, nothing captured, nothing on the frame bus.
    assert {c["status"] for c in service.cameras()} == {"pending credentials"}
    assert hub.captures == [] and hub.scheduler.slots == []
    record = AdoptionStore(layout).load()
    assert isinstance(record, dict) and len(record["cameras"]) == MAX_CAMERAS
    assert layout.adopted_cameras.stat().st_size < 8 * 1024
