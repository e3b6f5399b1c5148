"""The sans-I/O responder: matching rules, source filter, delay, sequence numbers."""

from __future__ import annotations

import uuid

import pytest

from agent.discovery import wsd
from agent.discovery.responder import (
    Responder,
    device_target,
    endpoint_for_serial,
    is_local_source,
    scopes_match,
    types_match,
)
from agent.discovery.wsd import DEVICE, NETWORK_VIDEO_TRANSMITTER, Probe, QName, WsdVersion

LAN = ("192.168.1.20", 3702)
RFC3986_05 = "http://schemas.xmlsoap.org/ws/2005/04/discovery/rfc3986"
STRCMP0_09 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01/strcmp0"


def make_responder(**kwargs: object) -> Responder:
    target = device_target(
        serial_number="EA-1",
        model="edge cam",
        hardware="edge-cam-1/rev-a",
        xaddrs=("http://192.168.1.9:8080/onvif/device_service",),
        metadata_version=2,
    )
    ids = iter(f"urn:uuid:00000000-0000-0000-0000-{n:012d}" for n in range(1, 1000))
    options: dict[str, object] = {
        "instance_id": 7,
        "max_delay": 0.5,
        "random_fraction": lambda: 0.5,
        "make_message_id": lambda: next(ids),
    }
    options.update(kwargs)
    return Responder(target, **options)  # type: ignore[arg-type]


def probe(
    message_id: str = "urn:uuid:aaaa",
    types: tuple[QName, ...] = (),
    scopes: tuple[str, ...] = (),
    match_by: str | None = None,
    version: WsdVersion = WsdVersion.V2005_04,
) -> bytes:
    return wsd.encode(Probe(version, message_id, types, scopes, match_by))


def test_endpoint_is_a_stable_uuid5_of_the_serial_number() -> None:
    endpoint = endpoint_for_serial("EA-1")
    assert endpoint == endpoint_for_serial("EA-1") != endpoint_for_serial("EA-2")
    assert uuid.UUID(endpoint.removeprefix("urn:uuid:")).version == 5


def test_device_scopes_are_onvif_and_quote_model_and_hardware() -> None:
    target = make_responder().target
    assert "onvif://www.onvif.org/name/edge%20cam" in target.scopes
    assert "onvif://www.onvif.org/hardware/edge-cam-1%2Frev-a" in target.scopes
    assert target.types == (NETWORK_VIDEO_TRANSMITTER, DEVICE)


@pytest.mark.parametrize("version", list(WsdVersion))
def test_probe_is_answered_in_its_own_version_with_relates_to(version: WsdVersion) -> None:
    responder = make_responder()
    reply = responder.handle(probe("uuid:AbC", version=version), LAN)
    assert reply is not None
    assert reply.destination == LAN
    assert reply.delay == pytest.approx(0.25)
    answer = wsd.decode(reply.payload)
    assert isinstance(answer, wsd.ProbeMatches)
    assert answer.version is version
    assert answer.relates_to == "uuid:AbC"
    assert answer.matches == (responder.target,)
    assert answer.app_sequence == wsd.AppSequence(7, 1)


def test_delay_is_bounded_by_config_and_zero_when_configured() -> None:
    assert make_responder(max_delay=0).handle(probe(), LAN).delay == 0  # type: ignore[union-attr]
    slow = make_responder(random_fraction=lambda: 0.999)
    assert 0.49 < slow.handle(probe(), LAN).delay <= 0.5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("types", "answered"),
    [
        ((), True),
        ((NETWORK_VIDEO_TRANSMITTER,), True),
        ((DEVICE,), True),
        ((NETWORK_VIDEO_TRANSMITTER, DEVICE), True),
        ((QName(wsd.DN_NS, "Printer"),), False),
        ((NETWORK_VIDEO_TRANSMITTER, QName("urn:x", "Y")), False),
    ],
)
def test_types_must_all_be_offered(types: tuple[QName, ...], answered: bool) -> None:
    assert (make_responder().handle(probe(types=types), LAN) is not None) is answered


@pytest.mark.parametrize(
    ("requested", "offered", "match_by", "expected"),
    [
        (["onvif://www.onvif.org/name"], ["onvif://www.onvif.org/name/cam"], None, True),
        (["ONVIF://WWW.ONVIF.ORG/name"], ["onvif://www.onvif.org/name/cam"], None, True),
        (["onvif://www.onvif.org/Name"], ["onvif://www.onvif.org/name/cam"], None, False),
        (["onvif://www.onvif.org/na"], ["onvif://www.onvif.org/name/cam"], None, False),
        (["onvif://www.onvif.org/name/"], ["onvif://www.onvif.org/name/cam"], None, True),
        (["onvif://www.onvif.org/a%20b"], ["onvif://www.onvif.org/a b/c"], None, True),
        (["onvif://other.org/name"], ["onvif://www.onvif.org/name/cam"], None, False),
        (["onvif://www.onvif.org/../name"], ["onvif://www.onvif.org/name"], None, False),
        (["a://h/x", "a://h/y"], ["a://h/x/1", "a://h/y/2"], RFC3986_05, True),
        (["a://h/x", "a://h/z"], ["a://h/x/1", "a://h/y/2"], RFC3986_05, False),
        (["a://h/x"], ["a://h/x/1"], STRCMP0_09, False),
        (["a://h/x"], ["a://h/x"], STRCMP0_09, True),
        (["a://h/x"], ["a://h/x"], "http://example.com/ldap", False),
        ([], ["a://h/x"], None, True),
        (
            ["urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8"],
            ["6BA7B810-9DAD-11D1-80B4-00C04FD430C8"],
            "http://schemas.xmlsoap.org/ws/2005/04/discovery/uuid",
            True,
        ),
    ],
)
def test_scope_matching_rules(
    requested: list[str], offered: list[str], match_by: str | None, expected: bool
) -> None:
    assert scopes_match(requested, offered, match_by) is expected


def test_types_match_empty_request_matches_everything() -> None:
    assert types_match((), (DEVICE,))
    assert not types_match((DEVICE,), ())


def test_scoped_probe_end_to_end() -> None:
    responder = make_responder()
    assert responder.handle(probe("uuid:1", scopes=("onvif://www.onvif.org/Profile",)), LAN)
    assert responder.handle(probe("uuid:2", scopes=("onvif://www.onvif.org/x",)), LAN) is None
    assert responder.stats.not_matching == 1


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("172.32.0.9", False),
        ("192.168.0.1", True),
        ("169.254.3.4", True),
        ("127.0.0.1", True),
        ("8.8.8.8", False),
        ("192.0.2.1", False),
        ("100.64.0.1", False),
        ("fe80::1%eth0", True),
        ("fd00::5", True),
        ("::1", True),
        ("2001:db8::1", False),
        ("::ffff:192.168.1.1", True),
        ("::ffff:8.8.8.8", False),
        ("not an address", False),
    ],
)
def test_only_private_link_local_and_loopback_sources_are_local(host: str, local: bool) -> None:
    assert is_local_source(host) is local


def test_probe_from_a_public_address_is_not_answered() -> None:
    responder = make_responder()
    assert responder.handle(probe(), ("8.8.8.8", 3702)) is None
    assert responder.stats.foreign_source == 1


def test_retransmitted_probe_is_answered_once() -> None:
    responder = make_responder()
    assert responder.handle(probe("urn:uuid:X"), LAN) is not None
    assert responder.handle(probe("uuid:x"), LAN) is None
    assert responder.stats.duplicates == 1


def test_non_discoverable_mode_stays_silent() -> None:
    responder = make_responder(discoverable=False)
    assert responder.handle(probe(), LAN) is None
    assert responder.hello() is None
    assert responder.bye() is None


def test_hello_and_bye_carry_rising_message_numbers_and_the_instance_id() -> None:
    responder = make_responder()
    hello = wsd.decode(responder.hello() or b"")
    responder.handle(probe(), LAN)
    bye = wsd.decode(responder.bye() or b"")
    assert isinstance(hello, wsd.Hello)
    assert isinstance(bye, wsd.Bye)
    assert hello.target == responder.target
    assert bye.endpoint == responder.target.endpoint
    assert hello.app_sequence == wsd.AppSequence(7, 1)
    assert bye.app_sequence == wsd.AppSequence(7, 3)


def test_address_change_is_reported_once() -> None:
    responder = make_responder()
    assert responder.update_xaddrs(["http://10.0.0.2/onvif"])
    assert not responder.update_xaddrs(["http://10.0.0.2/onvif"])
    assert responder.target.xaddrs == ("http://10.0.0.2/onvif",)
