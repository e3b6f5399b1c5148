"""The WS-Discovery codec on well-formed messages of both namespace versions."""

from __future__ import annotations

import pytest

from agent.discovery import wsd
from agent.discovery.wsd import (
    DEVICE,
    NETWORK_VIDEO_TRANSMITTER,
    AppSequence,
    Bye,
    Hello,
    Probe,
    ProbeMatches,
    QName,
    TargetService,
    WsdVersion,
)
from agent.errors import DecodeError
from tests.discovery.conftest import real_probe_match

V05 = WsdVersion.V2005_04.ns
V09 = WsdVersion.V2009_01.ns
SOAP = wsd.SOAP12_NS


def envelope(
    body: str,
    *,
    version: wsd._Namespaces = V05,
    headers: str | None = None,
    extra_ns: str = "",
) -> bytes:
    if headers is None:
        headers = (
            f'<a:Action s:mustUnderstand="1">{version.wsd}/Probe</a:Action>'
            "<a:MessageID>uuid:11111111-2222-3333-4444-555555555555</a:MessageID>"
            f"<a:To>{version.multicast_to}</a:To>"
        )
    return (
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:a="{version.wsa}" xmlns:d="{version.wsd}"{extra_ns}>'
        f"<s:Header>{headers}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


TARGET = TargetService(
    endpoint="urn:uuid:0b7c9a3e-0000-5000-8000-000000000001",
    types=(NETWORK_VIDEO_TRANSMITTER, DEVICE),
    scopes=("onvif://www.onvif.org/name/cam", "onvif://www.onvif.org/Profile/Streaming"),
    xaddrs=("http://192.168.1.5:8080/onvif/device_service",),
    metadata_version=3,
)


@pytest.mark.parametrize("version", list(WsdVersion))
@pytest.mark.parametrize(
    "message_factory",
    [
        lambda v: Probe(v, "urn:uuid:a", (NETWORK_VIDEO_TRANSMITTER,), ("onvif://x/y",), None),
        lambda v: Probe(v, "urn:uuid:a"),
        lambda v: ProbeMatches(v, "urn:uuid:b", "urn:uuid:a", (TARGET,), AppSequence(4, 9)),
        lambda v: Hello(v, "urn:uuid:c", TARGET, AppSequence(1, 1, "urn:uuid:seq")),
        lambda v: Bye(v, "urn:uuid:d", TARGET.endpoint, AppSequence(2, 7)),
    ],
    ids=["probe", "empty-probe", "probe-matches", "hello", "bye"],
)
def test_encode_then_decode_gives_the_same_message(version, message_factory) -> None:
    message = message_factory(version)
    assert wsd.decode(wsd.encode(message)) == message


def test_real_camera_probe_match_decodes() -> None:
    message = wsd.decode(real_probe_match())
    assert isinstance(message, ProbeMatches)
    assert message.version is WsdVersion.V2005_04
    assert message.message_id == "uuid:2419d68a-2dd2-21b2-a205-78A5DD0F9593"
    (match,) = message.matches
    assert match.types == ()
    assert match.xaddrs == ("http://192.168.1.104:80/onvif/device_service",)
    assert "onvif://www.onvif.org/Name/IPCAM" in match.scopes
    assert match.metadata_version == 1


def test_probe_types_resolve_prefixes_declared_anywhere_in_scope() -> None:
    body = (
        '<d:Probe xmlns:x="http://www.onvif.org/ver10/device/wsdl">'
        '<d:Types xmlns:n="http://www.onvif.org/ver10/network/wsdl">'
        "n:NetworkVideoTransmitter x:Device</d:Types></d:Probe>"
    )
    probe = wsd.decode(envelope(body))
    assert isinstance(probe, Probe)
    assert probe.types == (NETWORK_VIDEO_TRANSMITTER, DEVICE)


def test_undeclared_onvif_prefixes_fall_back_to_the_onvif_namespaces() -> None:
    body = "<d:Probe><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types></d:Probe>"
    probe = wsd.decode(envelope(body))
    assert isinstance(probe, Probe)
    assert probe.types == (NETWORK_VIDEO_TRANSMITTER, DEVICE)


def test_unknown_undeclared_prefix_is_kept_as_an_unmatchable_name() -> None:
    body = "<d:Probe><d:Types>zz:Thing</d:Types></d:Probe>"
    probe = wsd.decode(envelope(body))
    assert isinstance(probe, Probe)
    assert probe.types == (QName("", "zz:Thing"),)


@pytest.mark.parametrize("flag", ["true", "1", " TRUE "])
def test_must_understand_true_and_1_on_known_headers_are_accepted(flag: str) -> None:
    headers = (
        f'<a:Action s:mustUnderstand="{flag}">{V09.wsd}/Probe</a:Action>'
        f'<a:MessageID s:mustUnderstand="{flag}">urn:uuid:1</a:MessageID>'
        f'<a:To s:mustUnderstand="{flag}">{V09.multicast_to}</a:To>'
    )
    probe = wsd.decode(envelope("<d:Probe/>", version=V09, headers=headers))
    assert isinstance(probe, Probe)
    assert probe.version is WsdVersion.V2009_01


@pytest.mark.parametrize("flag", ["true", "1"])
def test_unknown_header_that_must_be_understood_is_rejected(flag: str) -> None:
    headers = (
        "<a:MessageID>urn:uuid:1</a:MessageID>"
        f'<x:Secret xmlns:x="urn:other" s:mustUnderstand="{flag}">1</x:Secret>'
    )
    with pytest.raises(DecodeError, match="must be understood"):
        wsd.decode(envelope("<d:Probe/>", headers=headers))


def test_unknown_header_that_may_be_ignored_is_ignored() -> None:
    headers = (
        '<a:MessageID>urn:uuid:1</a:MessageID><x:Note xmlns:x="urn:other" '
        's:mustUnderstand="false">1</x:Note>'
    )
    assert isinstance(wsd.decode(envelope("<d:Probe/>", headers=headers)), Probe)


def test_action_that_contradicts_the_body_is_rejected() -> None:
    headers = f"<a:Action>{V05.wsd}/Bye</a:Action><a:MessageID>urn:uuid:1</a:MessageID>"
    with pytest.raises(DecodeError, match="does not match"):
        wsd.decode(envelope("<d:Probe/>", headers=headers))


def test_soap_1_1_envelope_is_accepted() -> None:
    data = (
        f'<s:Envelope xmlns:s="{wsd.SOAP11_NS}" xmlns:a="{V05.wsa}" xmlns:d="{V05.wsd}">'
        "<s:Header><a:MessageID>uuid:1</a:MessageID></s:Header>"
        "<s:Body><d:Probe/></s:Body></s:Envelope>"
    ).encode()
    assert isinstance(wsd.decode(data), Probe)


def test_resolve_is_not_supported() -> None:
    with pytest.raises(DecodeError, match="unsupported"):
        wsd.decode(envelope("<d:Resolve/>", headers="<a:MessageID>uuid:1</a:MessageID>"))


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("uuid:ABC", "urn:uuid:abc"),
        ("urn:uuid:ABC", "urn:uuid:abc"),
        (" URN:UUID:abc ", "urn:uuid:abc"),
        ("http://x/Y", "http://x/Y"),
    ],
)
def test_uuid_uris_normalise_to_one_spelling(raw: str, normal: str) -> None:
    assert wsd.normalize_uuid_uri(raw) == normal


def test_encoder_refuses_values_xml_cannot_carry() -> None:
    with pytest.raises(ValueError, match="XML"):
        wsd.encode(Probe(WsdVersion.V2005_04, "urn:uuid:\x00"))
    with pytest.raises(ValueError, match="whitespace"):
        wsd.encode(Probe(WsdVersion.V2005_04, "urn:uuid:1", scopes=("a b",)))
