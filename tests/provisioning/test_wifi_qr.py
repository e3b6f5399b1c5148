"""WIFI: QR payloads: parsing, escapes, hostile forms, round trip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError, TooLargeError
from agent.provisioning.wifi import Security, WifiCredentials
from agent.provisioning.wifi_qr import WepRefusedError, format_wifi_qr, parse_wifi_qr


def test_parses_the_issue_example() -> None:
    qr = parse_wifi_qr("WIFI:T:WPA;S:Home Net;P:correct horse;H:true;;")
    assert qr.credentials == WifiCredentials("Home Net", "correct horse", hidden=True)
    assert qr.security is Security.WPA2_PSK


def test_fields_in_any_order_and_open_network() -> None:
    qr = parse_wifi_qr("WIFI:S:Cafe;T:nopass;;")
    assert qr.credentials == WifiCredentials("Cafe", None)
    assert qr.security is Security.OPEN


def test_all_escapes_are_decoded() -> None:
    qr = parse_wifi_qr(r"WIFI:T:WPA;S:a\;b\,c\:d\\e\"f;P:p\;ss\\word;;")
    assert qr.credentials.ssid == 'a;b,c:d\\e"f'
    assert qr.credentials.passphrase == "p;ss\\word"


@pytest.mark.parametrize(
    "text",
    [r"WIFI:T:WPA;S:bad\escape;P:password1;;", r"WIFI:T:WPA;S:x;P:pass\nword1;;"],
)
def test_bad_escapes_are_rejected(text: str) -> None:
    with pytest.raises(DecodeError, match="escape"):
        parse_wifi_qr(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("WIFI:T:WPA;P:password1;;", "no SSID"),
        ("WIFI:T:WPA;S:Home;;", "no passphrase"),
        ("WIFI:T:WPA;S:;P:password1;;", "no SSID"),
        ("WIFI:T:WPA;S:Home;P:short;;", "8..63"),
        ("WIFI:T:WPA;S:Home;S:Other;P:password1;;", "repeats"),
        ("WIFI:T:ROT13;S:Home;P:password1;;", "security type"),
        ("WIFI:T:WPA;S:Home;P:password1", "terminated"),
        ("WIFI:T:WPA;S:Home;P:password1;H:maybe;;", "hidden"),
        ("WIFI:T:WPA;S:Home;P:pass\x00word1;;", "control"),
        ("WIFI:T:WPA;Sx;P:password1;;", "K:value"),
        ("MECARD:N:x;;", "not a WIFI"),
    ],
)
def test_missing_or_malformed_fields_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        parse_wifi_qr(text)


def test_huge_payload_is_rejected() -> None:
    with pytest.raises(TooLargeError):
        parse_wifi_qr("WIFI:T:WPA;S:" + "x" * 5000 + ";P:password1;;")


def test_ssid_longer_than_32_bytes_is_rejected() -> None:
    with pytest.raises(TooLargeError):
        parse_wifi_qr("WIFI:T:WPA;S:" + "é" * 17 + ";P:password1;;")


def test_too_many_fields_are_rejected() -> None:
    with pytest.raises(TooLargeError):
        parse_wifi_qr("WIFI:" + "".join(f"{c}:1;" for c in "ABCDEFGHIJ") + ";")


ssids = st.text(min_size=1, max_size=32).filter(
    lambda s: 1 <= len(s.encode()) <= 32 and all(ord(c) >= 0x20 for c in s)
)
passphrases = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=63
)


@given(ssids, passphrases, st.booleans())
def test_escape_round_trip(ssid: str, passphrase: str, hidden: bool) -> None:
    credentials = WifiCredentials(ssid, passphrase, hidden)
    assert parse_wifi_qr(format_wifi_qr(credentials)).credentials == credentials


@given(st.text(max_size=600))
def test_parser_raises_only_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        parse_wifi_qr("WIFI:" + text)


@pytest.mark.parametrize(
    "text",
    ["WIFI:T:WPA;S:Ho\udcaert;P:password1;;", "WIFI:T:WPA;S:net;P:pass\ud800word;;"],
)
def test_wifi_qr_lone_surrogate_is_rejected(text: str) -> None:
    # A QR decoder may hand over undecodable bytes as surrogate escapes.
    with pytest.raises(DecodeError):
        parse_wifi_qr(text)


# --- WEP, quoting and hex (the ZXing convention) ---------------------------------------


@pytest.mark.parametrize(
    "text", ["WIFI:T:WEP;S:Old-Router;P:0123456789;;", "WIFI:S:Old;T:wep;P:abcde;H:true;;"]
)
def test_wep_is_refused_with_a_clear_message(text: str) -> None:
    with pytest.raises(WepRefusedError, match="WEP is broken") as refused:
        parse_wifi_qr(text)
    assert "WPA2 or WPA3" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "ssid", "passphrase"),
    [
        ('WIFI:T:WPA;S:"Home Net";P:"correct horse";;', "Home Net", "correct horse"),
        # Quoted so that they are not read as hex: the text itself.
        ('WIFI:T:WPA;S:"414243";P:"12345678";;', "414243", "12345678"),
        ('WIFI:T:WPA;S:"CAFE";P:password1;;', "CAFE", "password1"),
        # Escaped quotes are part of the name; unescaped ones around it are not.
        ('WIFI:T:WPA;S:\\"Quoted\\";P:password1;;', '"Quoted"', "password1"),
        ('WIFI:T:WPA;S:"\\"in\\"";P:password1;;', '"in"', "password1"),
        # One quote is no quoting.
        ('WIFI:T:WPA;S:";P:password1;;', '"', "password1"),
    ],
)
def test_double_quotes_delimit_literal_text(text: str, ssid: str, passphrase: str) -> None:
    credentials = parse_wifi_qr(text).credentials
    assert (credentials.ssid, credentials.passphrase) == (ssid, passphrase)


@pytest.mark.parametrize(
    ("field", "ssid"),
    [
        ("414243", "ABC"),
        ("486f6d65204e6574", "Home Net"),
        ("436166c3a9", "Café"),  # UTF-8 bytes
        # Hex digits whose bytes are no printable UTF-8 name the text they show.
        ("cafe", "cafe"),
        ("1234", "1234"),
        ("DEADBEEF", "DEADBEEF"),
        ("abc", "abc"),  # odd length
    ],
)
def test_unquoted_hex_ssids(field: str, ssid: str) -> None:
    assert parse_wifi_qr(f"WIFI:T:WPA;S:{field};P:password1;;").credentials.ssid == ssid


def test_raw_psk_unquoted_is_kept_and_quoted_is_refused() -> None:
    psk = "0123456789abcdef" * 4
    assert parse_wifi_qr(f"WIFI:T:WPA;S:Home;P:{psk};;").credentials.passphrase == psk
    with pytest.raises(DecodeError, match=r"8\.\.63"):
        parse_wifi_qr(f'WIFI:T:WPA;S:Home;P:"{psk}";;')


def test_formatter_quotes_names_that_would_read_as_hex() -> None:
    text = format_wifi_qr(WifiCredentials("414243", "password1"))
    assert 'S:"414243"' in text
    assert parse_wifi_qr(text).credentials.ssid == "414243"


@given(st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=32), passphrases)
def test_hex_looking_names_round_trip(ssid: str, passphrase: str) -> None:
    credentials = WifiCredentials(ssid, passphrase)
    assert parse_wifi_qr(format_wifi_qr(credentials)).credentials == credentials
