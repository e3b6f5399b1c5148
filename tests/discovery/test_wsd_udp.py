"""The WS-Discovery responder and client over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import pathlib
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.discovery import wsd
from agent.discovery.responder import endpoint_for_serial
from agent.errors import DeviceIOError
from drivers.clock import SystemClock
from drivers.discovery.bootcount import COUNTER_FILE, next_instance_id
from drivers.discovery.clients import probe_cameras
from drivers.discovery.service import build_service
from drivers.discovery.udp import open_client, open_listener
from tests.discovery.conftest import (
    loopback_config,
    real_probe_match,
    received_before_sentinel,
    running,
    tick_until_read,
)
from tests.support.clock import FixedClock


def loopback_service(tmp_path: pathlib.Path, listener: socket.socket, **discovery: object):  # type: ignore[no-untyped-def]
    config = loopback_config(tmp_path, **discovery)
    service = build_service(
        config,
        addresses_fn=lambda: ["127.0.0.1"],
        bind_address="127.0.0.1",
        announce_to=listener.getsockname(),
        join_group=False,
    )
    return config, service


def test_probe_over_udp_finds_the_responder_and_hello_bye_bracket_it(
    tmp_path: pathlib.Path, udp_listener: socket.socket
) -> None:
    config, service = loopback_service(tmp_path, udp_listener)
    with running(service):
        assert service.responder is not None
        cameras = probe_cameras(
            config.discovery, timeout=1.0, destination=service.responder.address
        )
        hello = wsd.decode(udp_listener.recvfrom(65535)[0])
        onvif_port = service.onvif.port if service.onvif is not None else None
    bye = wsd.decode(udp_listener.recvfrom(65535)[0])
    (camera,) = cameras
    assert camera.endpoint == endpoint_for_serial(config.device.serial_number)
    # The XAddrs name the port the ONVIF device service really listens on.
    assert onvif_port is not None
    assert camera.xaddrs == (f"http://127.0.0.1:{onvif_port}/onvif/device_service",)
    assert camera.name == config.device.model
    assert isinstance(hello, wsd.Hello)
    assert hello.target.xaddrs == camera.xaddrs
    assert isinstance(bye, wsd.Bye)
    assert bye.endpoint == camera.endpoint
    assert hello.app_sequence is not None and bye.app_sequence is not None
    assert hello.app_sequence.instance_id == bye.app_sequence.instance_id == 1
    assert bye.app_sequence.message_number > hello.app_sequence.message_number


def test_instance_id_rises_with_every_start(
    tmp_path: pathlib.Path, udp_listener: socket.socket
) -> None:
    seen = []
    for _ in range(3):
        _, service = loopback_service(tmp_path, udp_listener)
        service.start()
        service.stop()
        messages = [wsd.decode(d) for d in received_before_sentinel(udp_listener)]
        seen.append({m.app_sequence.instance_id for m in messages if m.app_sequence})
    assert seen == [{1}, {2}, {3}]


def test_non_discoverable_responder_sends_and_answers_nothing(
    tmp_path: pathlib.Path, udp_listener: socket.socket
) -> None:
    _, service = loopback_service(tmp_path, udp_listener, discoverable=False)
    service.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            probe = wsd.Probe(wsd.WsdVersion.V2005_04, "urn:uuid:unanswered")
            client.sendto(wsd.encode(probe), service.responder.address)
            tick_until_read(service)  # with no reply delay, an answer would be sent here
            assert received_before_sentinel(client) == []
    finally:
        service.stop()
    assert received_before_sentinel(udp_listener) == []  # no Hello, no Bye


def test_oversized_and_hostile_datagrams_are_dropped_and_service_keeps_answering(
    tmp_path: pathlib.Path, udp_listener: socket.socket
) -> None:
    config, service = loopback_service(tmp_path, udp_listener, max_datagram_bytes=2048)
    with running(service), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        assert service.responder is not None and service.responder.responder is not None
        address = service.responder.address
        attacker.sendto(b"<" * 60000, address)
        attacker.sendto(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', address)
        # Sentinel: a valid Probe on the same socket after them must be answered, and
        # its ProbeMatches must be the first datagram back: the hostile ones got nothing.
        sentinel = wsd.Probe(wsd.WsdVersion.V2005_04, "urn:uuid:after-the-hostile-ones")
        attacker.sendto(wsd.encode(sentinel), address)
        attacker.settimeout(5)
        first = wsd.decode(attacker.recvfrom(65535)[0])
        assert isinstance(first, wsd.ProbeMatches)
        assert first.relates_to == sentinel.message_id
        cameras = probe_cameras(config.discovery, timeout=0.5, destination=address)
        assert service.responder.responder.stats.rejected == 2
    assert len(cameras) == 1


def test_address_change_sends_a_new_hello(
    tmp_path: pathlib.Path, udp_listener: socket.socket
) -> None:
    addresses = ["127.0.0.1"]
    config = loopback_config(tmp_path, address_check_seconds=0.5)
    service = build_service(
        config,
        addresses_fn=lambda: list(addresses),
        bind_address="127.0.0.1",
        announce_to=udp_listener.getsockname(),
        join_group=False,
    )
    with running(service):
        first = wsd.decode(udp_listener.recvfrom(65535)[0])
        addresses[:] = ["127.0.0.2"]
        second = wsd.decode(udp_listener.recvfrom(65535)[0])
        assert service.onvif is not None
        port = service.onvif.port
    assert isinstance(first, wsd.Hello) and isinstance(second, wsd.Hello)
    assert second.target.xaddrs == (f"http://127.0.0.2:{port}/onvif/device_service",)


def test_client_lists_real_camera_reply_over_udp(tmp_path: pathlib.Path) -> None:
    """A fake camera on loopback answers each probe with the captured reply bytes."""
    captured = real_probe_match()
    original_id = b"urn:uuid:2de9f5ad-abd2-4c0e-9ba8-178098d67f01"
    camera_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    camera_sock.bind(("127.0.0.1", 0))
    camera_sock.settimeout(0.1)
    stop = threading.Event()

    def camera() -> None:
        while not stop.is_set():
            try:
                data, source = camera_sock.recvfrom(65535)
            except TimeoutError:
                continue
            probe = wsd.decode(data)
            # The camera echoes the MessageID in the bare "uuid:" spelling.
            relates = probe.message_id.replace("urn:uuid:", "uuid:").encode()
            camera_sock.sendto(captured.replace(original_id, relates), source)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        config = loopback_config(tmp_path, probe_repeats=2, probe_initial_interval_ms=50)
        cameras = probe_cameras(
            config.discovery, timeout=0.6, destination=camera_sock.getsockname()
        )
    finally:
        stop.set()
        thread.join()
        camera_sock.close()
    (found,) = cameras
    assert found.name == "IPCAM"
    assert found.xaddrs == ("http://192.168.1.104:80/onvif/device_service",)


def test_boot_counter_is_replaced_atomically(tmp_path: pathlib.Path) -> None:
    assert [next_instance_id(tmp_path, SystemClock()) for _ in range(3)] == [1, 2, 3]
    assert (tmp_path / COUNTER_FILE).read_text() == "3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [COUNTER_FILE]


def test_corrupt_boot_counter_still_rises(tmp_path: pathlib.Path) -> None:
    (tmp_path / COUNTER_FILE).write_text("garbage")
    assert next_instance_id(tmp_path, FixedClock(1_700_000_000.0)) == 1_700_000_001


def test_state_dir_that_is_a_file_is_a_device_io_error(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DeviceIOError, match="boot counter"):
        next_instance_id(blocker, SystemClock())


@pytest.fixture
def delayed_service(tmp_path: pathlib.Path, udp_listener: socket.socket) -> Iterator[Any]:
    """A started responder with the real 0-500 ms delay, one Probe already sent to it."""
    _, service = loopback_service(tmp_path, udp_listener, reply_delay_max_ms=500)
    service.start()
    try:
        probe = wsd.encode(wsd.Probe(wsd.WsdVersion.V2005_04, "urn:uuid:held"))
        (hello,) = received_before_sentinel(udp_listener)
        assert isinstance(wsd.decode(hello), wsd.Hello)
        udp_listener.sendto(probe, service.responder.address)
        # The probe is on the responder's socket before the test's first tick.
        assert select.select([service.fileno()], [], [], 5)[0]
        yield service
    finally:
        service.stop()


def test_driver_holds_each_reply_for_its_delay_using_the_tick_time(
    delayed_service: Any, udp_listener: socket.socket
) -> None:
    start = 1_000_000.0
    delayed_service.tick(start)  # reads the probe, queues the reply
    due = delayed_service.responder.next_due()
    assert due is not None and start <= due <= start + 0.5
    delayed_service.tick(start)
    assert received_before_sentinel(udp_listener) == []  # held: not due yet
    delayed_service.tick(start + 0.5)
    (reply,) = received_before_sentinel(udp_listener)
    assert isinstance(wsd.decode(reply), wsd.ProbeMatches)


def test_reply_is_not_stranded_when_the_clock_steps_back(
    delayed_service: Any, udp_listener: socket.socket
) -> None:
    delayed_service.tick(2_000_000.0)
    delayed_service.tick(2_000_000.0 - 3600)
    (reply,) = received_before_sentinel(udp_listener)
    assert isinstance(wsd.decode(reply), wsd.ProbeMatches)


def test_discovery_sockets_use_multicast_ttl_1() -> None:
    listener = open_listener(bind_address="127.0.0.1", port=0, group=None)
    client = open_client("127.0.0.1")
    try:
        for sock in (listener, client):
            assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
    finally:
        listener.close()
        client.close()
