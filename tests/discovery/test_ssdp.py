"""SSDP: M-SEARCH/response parsing, the router pick, and a fake HTTPU responder."""

from __future__ import annotations

import pathlib
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.discovery import ssdp
from agent.errors import DecodeError, TooLargeError
from drivers.discovery.clients import default_gateway, search_upnp
from tests.discovery.conftest import loopback_config

ROUTE_TABLE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
    "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
)


def response(
    location: str, st_: str, usn: str, *, server: str = "Linux UPnP/1.0 miniupnpd"
) -> bytes:
    return (
        "HTTP/1.1 200 OK\r\n"
        "cache-control: max-age=120\r\n"
        f"St: {st_}\r\n"
        f"location: {location}\r\n"
        f"SERVER: {server}\r\n"
        "EXT:\r\n"
        f"usn: {usn}\r\n"
        "\r\n"
    ).encode()


def test_msearch_is_well_formed() -> None:
    start, headers = ssdp.parse_headers(ssdp.build_msearch(ssdp.IGD_V2, 2))
    assert start == "M-SEARCH * HTTP/1.1"
    assert headers["host"] == "239.255.255.250:1900"
    assert headers["man"] == '"ssdp:discover"'
    assert headers["mx"] == "2"
    assert headers["st"] == ssdp.IGD_V2


def test_msearch_refuses_header_injection() -> None:
    with pytest.raises(ValueError, match="search target"):
        ssdp.build_msearch("upnp:rootdevice\r\nX-Evil: 1")


def test_response_headers_are_case_insensitive() -> None:
    parsed = ssdp.parse_response(
        response("http://192.168.1.1:5000/rootDesc.xml", ssdp.IGD_V1, "uuid:R::" + ssdp.IGD_V1)
    )
    assert parsed.location == "http://192.168.1.1:5000/rootDesc.xml"
    assert parsed.location_host == "192.168.1.1"
    assert parsed.search_target == ssdp.IGD_V1
    assert parsed.device_id == "uuid:r"
    assert parsed.server.startswith("Linux")


@pytest.mark.parametrize(
    "data",
    [
        b"NOTIFY * HTTP/1.1\r\nLOCATION: http://x/\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nLOCATION: http://x/\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"",
    ],
    ids=["notify", "not-200", "no-location", "non-http-location", "bad-header", "empty"],
)
def test_malformed_responses_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        ssdp.parse_response(data)


def test_oversized_response_is_rejected() -> None:
    with pytest.raises(TooLargeError):
        ssdp.parse_response(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 3000)


def test_header_flood_is_rejected() -> None:
    with pytest.raises(TooLargeError, match="headers"):
        ssdp.parse_response(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100, max_bytes=65536)


def test_overlong_header_line_is_rejected() -> None:
    with pytest.raises(TooLargeError, match="header line"):
        ssdp.parse_response(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 3000 + b"\r\n\r\n")


@settings(max_examples=300)
@given(st.binary(max_size=4096))
def test_parse_of_arbitrary_bytes_raises_only_decode_errors(data: bytes) -> None:
    try:
        parsed = ssdp.parse_response(data)
    except DecodeError:  # TooLargeError is a DecodeError
        return
    assert parsed.location.lower().startswith(("http://", "https://"))


def test_router_is_the_device_on_the_gateway_address() -> None:
    responses = [
        ssdp.parse_response(r)
        for r in (
            response(
                "http://192.168.1.50:49152/desc.xml", ssdp.ROOT_DEVICE, "uuid:tv::upnp:rootdevice"
            ),
            response("http://192.168.1.1:5000/desc.xml", ssdp.IGD_V1, f"uuid:gw::{ssdp.IGD_V1}"),
            response(
                "http://192.168.1.1:5000/desc.xml", ssdp.ROOT_DEVICE, "uuid:gw::upnp:rootdevice"
            ),
        )
    ]
    router, tv = ssdp.group_devices(responses, "192.168.1.1")
    assert router.is_router and router.is_gateway_device
    assert router.search_targets == (ssdp.IGD_V1, ssdp.ROOT_DEVICE)
    assert not tv.is_router and not tv.is_gateway_device
    assert not any(d.is_router for d in ssdp.group_devices(responses, None))


def test_default_gateway_is_read_from_the_route_table() -> None:
    assert ssdp.parse_default_gateway(ROUTE_TABLE) == "10.0.0.1"
    assert ssdp.parse_default_gateway(ROUTE_TABLE.splitlines()[0]) is None
    assert ssdp.parse_default_gateway("header\ngarbage line\n" + "x " * 20) is None


def test_default_gateway_driver_reads_a_route_file(tmp_path: pathlib.Path) -> None:
    route = tmp_path / "route"
    route.write_text(ROUTE_TABLE)
    assert default_gateway(route) == "10.0.0.1"
    assert default_gateway(tmp_path / "missing") is None


class FakeUpnpDevice:
    """Answers M-SEARCH over real HTTPU on 127.0.0.1 like a router and a TV would."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.searches: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            start, headers = ssdp.parse_headers(data)
            if start != "M-SEARCH * HTTP/1.1" or headers.get("man") != '"ssdp:discover"':
                continue
            self.searches.append(headers)
            st_ = headers["st"]
            if st_ in (ssdp.IGD_V1, ssdp.ROOT_DEVICE):
                self.sock.sendto(
                    response("http://127.0.0.1:5000/rootDesc.xml", st_, f"uuid:router::{st_}"),
                    source,
                )
            if st_ == ssdp.ROOT_DEVICE:
                self.sock.sendto(b"garbage\r\n\r\n", source)
                self.sock.sendto(
                    response("http://127.0.0.2:8008/dd.xml", st_, "uuid:tv::upnp:rootdevice"),
                    source,
                )

    def __enter__(self) -> FakeUpnpDevice:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def fake_upnp() -> Iterator[FakeUpnpDevice]:
    with FakeUpnpDevice() as device:
        yield device


def test_search_over_httpu_marks_the_router(
    fake_upnp: FakeUpnpDevice, tmp_path: pathlib.Path
) -> None:
    config = loopback_config(tmp_path)
    devices = search_upnp(
        config.discovery, timeout=0.5, destination=fake_upnp.sock.getsockname(), gateway="127.0.0.1"
    )
    assert {h["st"] for h in fake_upnp.searches} == set(ssdp.SEARCH_TARGETS)
    router, tv = devices
    assert router.is_router and router.location == "http://127.0.0.1:5000/rootDesc.xml"
    assert router.is_gateway_device
    assert not tv.is_router and tv.device_id == "uuid:tv"


def test_route_table_negative_gateway_is_rejected() -> None:
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
    line = "eth0\t00000000\t-0100000A\t0003\t0\t0\t100\t00000000\n"
    assert ssdp.parse_default_gateway(header + line) is None
