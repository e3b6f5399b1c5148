"""mDNS announce and browse with python-zeroconf bound to 127.0.0.1 only."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zeroconf

from agent.discovery import mdns
from drivers.discovery.mdns_zc import MdnsAnnouncer, browse

LOOPBACK = ["127.0.0.1"]


def test_txt_record_is_the_allow_list_only() -> None:
    txt = mdns.announcement_txt(serial_number="EA-1", model="edge-cam-1", claimed=True)
    assert txt == {"sn": "EA-1", "model": "edge-cam-1", "claimed": "1"}
    assert tuple(txt) == mdns.TXT_KEYS


def test_instance_name_is_one_safe_dns_label() -> None:
    assert mdns.instance_name("EA-0001") == "edge-agent-EA-0001"
    assert mdns.instance_name("a.b/c d") == "edge-agent-a-b-c-d"
    assert len(mdns.instance_name("x" * 300)) == 63


def test_hostile_txt_from_peers_is_capped_and_printable() -> None:
    properties = {f"k{i}".encode(): b"\xff\x00ok" for i in range(100)}
    properties[b"k0"] = None  # type: ignore[assignment]
    decoded = mdns.decode_txt(properties)
    assert len(decoded) == 32
    assert decoded["k0"] == ""
    assert decoded["k1"] == "\ufffd?ok"


# Names unique to this run: loopback mDNS is shared with anything else on the machine
# (another test run, a `make run` agent), and equal names would conflict.
RUN = uuid.uuid4().hex[:8]
CAMERA = f"cam-{RUN}"
SERIAL = f"EA-TEST-{RUN}"


@pytest.fixture
def rtsp_camera() -> Iterator[None]:
    zc = zeroconf.Zeroconf(interfaces=LOOPBACK, ip_version=zeroconf.IPVersion.V4Only)
    info = zeroconf.ServiceInfo(
        mdns.RTSP_SERVICE,
        f"{CAMERA}.{mdns.RTSP_SERVICE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=554,
        properties={"path": "/stream1"},
        server=f"{CAMERA}.local.",
    )
    zc.register_service(info)
    try:
        yield
    finally:
        zc.unregister_all_services()
        zc.close()


def ours(peers: list[mdns.MdnsPeer]) -> list[mdns.MdnsPeer]:
    return [p for p in peers if SERIAL in p.name or CAMERA in p.name]


def browse_until(
    done: Callable[[list[mdns.MdnsPeer]], bool], **kwargs: Any
) -> list[mdns.MdnsPeer]:
    """Browse again until ``done``: on a loaded machine one 1.5 s browse can miss a
    multicast answer (port 5353 is shared with every other run on the host)."""
    deadline = time.monotonic() + 60
    while True:
        peers = browse(timeout=1.5, interfaces=LOOPBACK, **kwargs)
        if done(peers) or time.monotonic() > deadline:
            return peers


@pytest.mark.slow
def test_announced_agent_and_rtsp_camera_are_browsed_on_loopback(rtsp_camera: None) -> None:
    claimed = [False]
    announcer = MdnsAnnouncer(
        serial_number=SERIAL,
        model="edge-cam-1",
        port=8080,
        interfaces=LOOPBACK,
        addresses_fn=lambda: ["127.0.0.1"],
        claimed_fn=lambda: claimed[0],
    )
    announcer.start()
    try:
        peers = browse_until(lambda found: len(ours(found)) == 2)
        claimed[0] = True
        announcer.refresh()
        after = browse_until(
            lambda found: any(p.properties.get("claimed") == "1" for p in ours(found)),
            service_types=[mdns.HTTP_SERVICE],
        )
    finally:
        announcer.stop()
    (agent,) = [p for p in peers if p.is_edge_agent and SERIAL in p.name]
    assert agent.name == f"edge-agent-{SERIAL}.{mdns.HTTP_SERVICE}"
    assert agent.addresses == ("127.0.0.1",)
    assert agent.port == 8080
    assert dict(agent.properties) == {"sn": SERIAL, "model": "edge-cam-1", "claimed": "0"}
    (camera,) = [p for p in peers if p.service_type == mdns.RTSP_SERVICE and CAMERA in p.name]
    assert camera.port == 554 and camera.properties["path"] == "/stream1"
    (updated,) = [p for p in after if p.is_edge_agent and SERIAL in p.name]
    assert updated.properties["claimed"] == "1"
