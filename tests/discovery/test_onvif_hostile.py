"""Hostile SOAP for the ONVIF parser: named attacks and a property over arbitrary bytes.

Whatever a LAN peer sends, :func:`parse_request` raises nothing but
:class:`DecodeError` (a bad-data error), and the device answers it with a SOAP
fault rather than an exception.  The same attacks over HTTP against the real
agent are in ``test_onvif_agent.py``.
"""

from __future__ import annotations

import contextlib
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.discovery.onvif_device import HttpRequest
from agent.discovery.onvif_soap import (
    MAX_DEPTH,
    MAX_ELEMENTS,
    SOAP12_NS,
    TDS_NS,
    VersionMismatchError,
    parse_request,
)
from agent.errors import DecodeError, TooLargeError
from tests.discovery.onvif_support import envelope, fault_code, fault_subcodes, signed
from tests.discovery.test_onvif_core import NOW, PASSWORD, USER, World, at

LIMIT = 32768
VALID = envelope("GetSystemDateAndTime")

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>"
    + f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Body><t:GetSystemDateAndTime xmlns:t="{TDS_NS}">'
    f"&lol9;</t:GetSystemDateAndTime></s:Body></s:Envelope>".encode()
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    + f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Body><t:GetHostname xmlns:t="{TDS_NS}">&xxe;'
    f"</t:GetHostname></s:Body></s:Envelope>".encode()
)


def deep(levels: int) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Body>'.encode()
        + b"<a>" * levels
        + b"</a>" * levels
        + b"</s:Body></s:Envelope>"
    )


def test_valid_request_parses() -> None:
    request = parse_request(signed(VALID, USER, PASSWORD), LIMIT)
    assert request.operation == (TDS_NS, "GetSystemDateAndTime")
    assert request.token is not None and request.token.username == USER


def test_oversized_body_attack() -> None:
    body = VALID.replace(b"<s:Header/>", b"<s:Header>" + b" " * LIMIT + b"</s:Header>")
    with pytest.raises(TooLargeError):
        parse_request(body, LIMIT)


def test_deep_nesting_attack() -> None:
    with pytest.raises(TooLargeError, match="nested deeper"):
        parse_request(deep(MAX_DEPTH + 1), LIMIT)
    with pytest.raises(TooLargeError):
        parse_request(deep(5000), 10**6)


def test_element_flood_attack() -> None:
    flood = VALID.replace(b"<s:Header/>", b"<s:Header>" + b"<x/>" * MAX_ELEMENTS + b"</s:Header>")
    with pytest.raises(TooLargeError, match="more than"):
        parse_request(flood, LIMIT)


def test_billion_laughs_entity_expansion_attack() -> None:
    with pytest.raises(DecodeError, match="forbidden XML construct"):
        parse_request(BILLION_LAUGHS, LIMIT)


def test_external_entity_attack() -> None:
    with pytest.raises(DecodeError, match="forbidden XML construct"):
        parse_request(EXTERNAL_ENTITY, LIMIT)


@pytest.mark.parametrize(
    "body",
    [
        VALID.replace(b"GetSystemDateAndTime", b"Get\xff\xfeSystem"),
        b'<?xml version="1.0" encoding="ISO-8859-1"?>' + VALID.split(b"?>", 1)[1],
        VALID.decode().encode("utf-16"),
    ],
    ids=["invalid_utf8", "declared_latin1", "utf16"],
)
def test_non_utf8_attack(body: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_request(body, LIMIT)


def test_not_a_soap_envelope_is_a_version_mismatch() -> None:
    with pytest.raises(VersionMismatchError):
        parse_request(b"<Envelope><Body/></Envelope>", LIMIT)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<",
        f'<s:Envelope xmlns:s="{SOAP12_NS}"/>'.encode(),
        f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Body/></s:Envelope>'.encode(),
        f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Body><a/><b/></s:Body></s:Envelope>'.encode(),
    ],
)
def test_malformed_envelopes_are_bad_data(body: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_request(body, LIMIT)


def test_unknown_must_understand_header_is_a_fault(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    body = VALID.replace(
        b"<s:Header/>",
        b'<s:Header><x:Thing xmlns:x="urn:x" s:mustUnderstand="true"/></s:Header>',
    )
    reply = world.call(body)
    assert reply.status == 400 and fault_code(reply.body) == "env:MustUnderstand"
    # WS-Addressing headers marked mustUnderstand (WCF clients) are fine.
    wsa = VALID.replace(
        b"<s:Header/>",
        b'<s:Header><a:Action xmlns:a="http://www.w3.org/2005/08/addressing" '
        b's:mustUnderstand="1">x</a:Action></s:Header>',
    )
    assert world.call(wsa).status == 200


@pytest.mark.parametrize(
    "body", [BILLION_LAUGHS, EXTERNAL_ENTITY, deep(100), b"\xff\xfe<x/>", b"junk"]
)
def test_device_answers_hostile_bodies_with_a_well_formed_fault(
    tmp_path: pathlib.Path, body: bytes
) -> None:
    reply = World(tmp_path).call(body)
    assert reply.status == 400
    assert fault_subcodes(reply.body) == ["ter:WellFormed"]


# --- properties ------------------------------------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    base = signed(VALID, USER, PASSWORD, created=at(NOW))

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data)))
            action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
            if action == "flip" and position < len(data):
                data[position] ^= 1 << draw(st.integers(0, 7))
            elif action == "insert":
                data[position:position] = draw(st.binary(min_size=1, max_size=16))
            elif action == "delete":
                del data[position : position + draw(st.integers(1, 16))]
            else:
                del data[position:]
        return bytes(data)

    return mutate()


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=2048), _mutations()))
def test_parser_raises_only_its_bad_data_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_request(data, LIMIT)


@settings(max_examples=200, deadline=None)
@given(_mutations())
def test_device_answers_every_mutation_without_raising(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        world = World(pathlib.Path(tmp), credentials=None)
        reply = world.device.handle(
            HttpRequest("POST", "/onvif/device_service", data, "127.0.0.1", 8080), NOW
        )
    assert reply.status in (200, 400, 500)
    assert reply.body.startswith(b"<?xml")
