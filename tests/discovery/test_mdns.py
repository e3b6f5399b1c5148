"""mDNS announce and browse with python-zeroconf bound to 127.0.0.1 only."""

from __future__ import annotations

import socket
import threading
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
    for advert in mdns.adverts(
        serial_number="EA-1",
        model="edge-cam-1",
        claimed=True,
        onvif_port=8080,
        onvif_path="/onvif/device_service",
        provisioning_port=8470,
    ):
        assert tuple(advert.properties) == mdns.ADVERT_TXT_KEYS


def test_only_services_with_a_port_are_advertised() -> None:
    def names(onvif: int | None, provisioning: int | None) -> list[tuple[str, int]]:
        found = mdns.adverts(
            serial_number="EA-1",
            model="m",
            claimed=False,
            onvif_port=onvif,
            onvif_path="/onvif/device_service",
            provisioning_port=provisioning,
        )
        return [(a.name, a.port) for a in found]

    assert names(None, None) == []
    assert names(8080, None) == [("edge-agent-EA-1._http._tcp.local.", 8080)]
    assert names(None, 8470) == [("edge-agent-EA-1-setup._http._tcp.local.", 8470)]


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


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that really accepts: what the announcer advertises must answer."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.mark.slow
def test_announced_agent_and_rtsp_camera_are_browsed_on_loopback(
    rtsp_camera: None, listener: socket.socket
) -> None:
    claimed = [False]
    port = listener.getsockname()[1]
    announcer = MdnsAnnouncer(
        interfaces=LOOPBACK,
        addresses_fn=lambda: ["127.0.0.1"],
        adverts_fn=lambda: mdns.adverts(
            serial_number=SERIAL,
            model="edge-cam-1",
            claimed=claimed[0],
            onvif_port=port,
            onvif_path="/onvif/device_service",
            provisioning_port=None,
        ),
    )
    announcer.start()
    try:
        peers = browse_until(lambda found: len(ours(found)) == 2)
        deadline = time.monotonic() + 30
        while not announcer.settled and time.monotonic() < deadline:
            time.sleep(0.05)  # start() does not wait for its announcement
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
    assert agent.port == port
    assert dict(agent.properties) == {
        "sn": SERIAL,
        "model": "edge-cam-1",
        "claimed": "0",
        "api": "onvif",
        "path": "/onvif/device_service",
    }
    (camera,) = [p for p in peers if p.service_type == mdns.RTSP_SERVICE and CAMERA in p.name]
    assert camera.port == 554 and camera.properties["path"] == "/stream1"
    (updated,) = [p for p in after if p.is_edge_agent and SERIAL in p.name]
    assert updated.properties["claimed"] == "1"


def _setup_advert(peers: list[mdns.MdnsPeer]) -> list[mdns.MdnsPeer]:
    return [p for p in peers if p.properties.get("api") == "provisioning" and SERIAL in p.name]


@pytest.mark.slow
def test_an_instance_comes_and_goes_with_its_service(listener: socket.socket) -> None:
    """refresh() announces a service that starts and withdraws one that stops."""
    port = listener.getsockname()[1]
    provisioning: list[int | None] = [None]
    announcer = MdnsAnnouncer(
        interfaces=LOOPBACK,
        addresses_fn=lambda: ["127.0.0.1"],
        adverts_fn=lambda: mdns.adverts(
            serial_number=SERIAL,
            model="edge-cam-1",
            claimed=False,
            onvif_port=None,
            onvif_path="/onvif/device_service",
            provisioning_port=provisioning[0],
        ),
    )
    announcer.start()
    try:
        assert announcer.announced == {}
        provisioning[0] = port
        announcer.refresh()
        present = browse_until(lambda found: bool(_setup_advert(found)))
        provisioning[0] = None
        deadline = time.monotonic() + 30
        while announcer.announced and time.monotonic() < deadline:
            announcer.refresh()  # the withdrawal waits until the announcement is done
            time.sleep(0.1)
        absent = browse_until(lambda found: not _setup_advert(found))
    finally:
        announcer.stop()
    (setup,) = _setup_advert(present)
    assert setup.name == f"edge-agent-{SERIAL}-setup.{mdns.HTTP_SERVICE}"
    assert setup.port == port and setup.properties["path"] == mdns.PROVISIONING_PATH
    assert _setup_advert(absent) == []


@pytest.mark.slow
def test_a_name_another_host_holds_is_warned_about_once_and_retried_later(
    listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    """start() no longer waits, so a refused announcement surfaces in refresh(), rate-limited."""
    port = listener.getsockname()[1]
    serial = f"SN-CONFLICT-{uuid.uuid4().hex[:6]}"

    def announcer(wanted: Callable[[], bool]) -> MdnsAnnouncer:
        return MdnsAnnouncer(
            interfaces=LOOPBACK,
            addresses_fn=lambda: ["127.0.0.1"],
            adverts_fn=lambda: mdns.adverts(
                serial_number=serial, model="edge-cam-1", claimed=False, onvif_port=port,
                onvif_path="/onvif/device_service", provisioning_port=None,
            ) if wanted() else [],
        )

    # The latecomer listens before the holder announces, as a device on the
    # LAN does, so the holder's announcement is in its cache when it probes.
    # (Relying on the holder answering the probe is a race: python-zeroconf
    # checks its cache only before each of its three probes, 500 ms apart,
    # never after the last, so an answer delayed on a busy machine is missed;
    # CI saw that once.)
    latecomer_wants = threading.Event()
    holder, latecomer = announcer(lambda: True), announcer(latecomer_wants.is_set)
    latecomer.start()
    try:
        holder.start()
        try:
            deadline = time.monotonic() + 30
            while not holder.settled and time.monotonic() < deadline:
                time.sleep(0.05)
            assert holder.settled
            latecomer_wants.set()
            latecomer.refresh()  # its probe finds the holder's name
            deadline = time.monotonic() + 30
            while not latecomer.settled and time.monotonic() < deadline:
                time.sleep(0.05)
            for _ in range(3):
                latecomer.refresh()
        finally:
            holder.stop()
    finally:
        latecomer.stop()
    warnings = [r for r in caplog.records if "mDNS announcement failed" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "retrying in 60 s" in warnings[0].getMessage()
    assert latecomer.announced == {}  # nothing handed over again within the retry window
