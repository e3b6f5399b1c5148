"""Hostile datagrams: each is rejected with DecodeError/TooLargeError, never a crash."""

from __future__ import annotations

import pytest

from agent.discovery import wsd
from agent.discovery.responder import Responder, device_target
from agent.errors import DecodeError, TooLargeError
from tests.discovery.test_wsd_codec import V05, envelope

PROBE_OK = envelope("<d:Probe/>")


def test_baseline_probe_is_accepted() -> None:
    assert isinstance(wsd.decode(PROBE_OK), wsd.Probe)


def test_huge_datagram_is_rejected_before_parsing() -> None:
    huge = PROBE_OK.replace(b"<d:Probe/>", b"<d:Probe/>" + b" " * 70000)
    with pytest.raises(TooLargeError):
        wsd.decode(huge)


def test_datagram_cap_is_configurable() -> None:
    with pytest.raises(TooLargeError):
        wsd.decode(PROBE_OK, max_bytes=len(PROBE_OK) - 1)
    assert isinstance(wsd.decode(PROBE_OK, max_bytes=len(PROBE_OK)), wsd.Probe)


def test_entity_bomb_is_rejected() -> None:
    levels = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    bomb = f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(levels)}]>'.encode() + envelope(
        "<d:Probe><d:Scopes>&lol9;</d:Scopes></d:Probe>"
    )
    with pytest.raises(DecodeError, match="forbidden"):
        wsd.decode(bomb)


def test_doctype_is_rejected() -> None:
    data = b'<?xml version="1.0"?><!DOCTYPE Envelope>' + PROBE_OK
    with pytest.raises(DecodeError, match="forbidden"):
        wsd.decode(data)


def test_external_entity_is_rejected() -> None:
    data = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        + envelope("<d:Probe><d:Scopes>&xxe;</d:Scopes></d:Probe>")
    )
    with pytest.raises(DecodeError, match="forbidden"):
        wsd.decode(data)


def test_deep_nesting_is_rejected() -> None:
    deep = "<d:X>" * 200 + "</d:X>" * 200
    with pytest.raises(TooLargeError, match="deeper"):
        wsd.decode(envelope(f"<d:Probe>{deep}</d:Probe>"))


def test_element_flood_is_rejected() -> None:
    flood = "<d:X/>" * 2000
    with pytest.raises(TooLargeError, match="elements"):
        wsd.decode(envelope(f"<d:Probe>{flood}</d:Probe>"), max_bytes=65507)


@pytest.mark.parametrize("cut", [1, 40, len(PROBE_OK) // 2, len(PROBE_OK) - 1])
def test_truncated_xml_is_rejected(cut: int) -> None:
    with pytest.raises(DecodeError):
        wsd.decode(PROBE_OK[:cut])


def test_non_utf8_bytes_are_rejected() -> None:
    data = PROBE_OK.replace(b"uuid:1111", b"uuid:\xff\xfe11")
    with pytest.raises(DecodeError, match="malformed"):
        wsd.decode(data)


def test_unknown_declared_encoding_is_rejected() -> None:
    data = b'<?xml version="1.0" encoding="x-no-such-codec"?>' + PROBE_OK
    with pytest.raises(DecodeError):
        wsd.decode(data)


def test_wrong_discovery_namespace_is_rejected() -> None:
    data = PROBE_OK.replace(V05.wsd.encode(), b"http://example.invalid/discovery")
    with pytest.raises(DecodeError, match="not a WS-Discovery message"):
        wsd.decode(data)


def test_wrong_envelope_namespace_is_rejected() -> None:
    data = PROBE_OK.replace(wsd.SOAP12_NS.encode(), b"urn:not-soap")
    with pytest.raises(DecodeError, match="not a SOAP envelope"):
        wsd.decode(data)


def test_missing_message_id_is_rejected() -> None:
    headers = f"<a:Action>{V05.wsd}/Probe</a:Action><a:To>{V05.multicast_to}</a:To>"
    with pytest.raises(DecodeError, match="MessageID"):
        wsd.decode(envelope("<d:Probe/>", headers=headers))


def test_empty_body_is_rejected() -> None:
    with pytest.raises(DecodeError, match="Body"):
        wsd.decode(PROBE_OK.replace(b"<d:Probe/>", b""))


def test_empty_datagram_is_rejected() -> None:
    with pytest.raises(DecodeError):
        wsd.decode(b"")


@pytest.mark.parametrize("value", ["-1", "abc", "99999999999", "4294967296", "١٢"])
def test_bad_metadata_version_is_rejected(value: str) -> None:
    body = (
        "<d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>urn:uuid:1"
        f"</a:Address></a:EndpointReference><d:MetadataVersion>{value}</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches>"
    )
    with pytest.raises(DecodeError, match="MetadataVersion"):
        wsd.decode(envelope(body, headers="<a:MessageID>uuid:2</a:MessageID>"))


def test_probe_match_without_endpoint_is_rejected() -> None:
    body = "<d:ProbeMatches><d:ProbeMatch/></d:ProbeMatches>"
    with pytest.raises(DecodeError, match="EndpointReference"):
        wsd.decode(envelope(body, headers="<a:MessageID>uuid:2</a:MessageID>"))


def test_responder_survives_every_hostile_input_and_counts_it() -> None:
    target = device_target(
        serial_number="S", model="m", hardware="h", xaddrs=(), metadata_version=1
    )
    responder = Responder(target, instance_id=1, max_delay=0)
    hostile = [
        b"\x00" * 100,
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>',
        b"<a>" * 5000,
        PROBE_OK[:30],
        b"x" * 20000,
    ]
    for data in hostile:
        assert responder.handle(data, ("127.0.0.1", 5000)) is None
    assert responder.stats.rejected == len(hostile)
