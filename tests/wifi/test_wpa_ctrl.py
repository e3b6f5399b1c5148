"""The pure wpa_supplicant protocol layer: escapes, quoting, parsers, tracker."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError, PolicyError
from agent.provisioning import wpa_ctrl
from agent.provisioning.wifi import ConnectOutcome, Security, WifiCredentials

HEADER = b"bssid / frequency / signal level / flags / ssid\n"


def test_printf_decode_handles_every_escape_wpa_supplicant_emits() -> None:
    assert wpa_ctrl.printf_decode(r"a\"b\\c\x00\xff\n\t\e\r") == b'a"b\\c\x00\xff\n\t\x1b\r'


def test_printf_decode_octal() -> None:
    assert wpa_ctrl.printf_decode(r"\101\0") == b"A\x00"


@pytest.mark.parametrize("text", ["abc\\", r"\x4", r"\xzz", r"\q", r"\777"])
def test_printf_decode_rejects_broken_escapes(text: str) -> None:
    with pytest.raises(DecodeError):
        wpa_ctrl.printf_decode(text)


@given(st.binary(max_size=64))
def test_printf_encode_decode_round_trip(raw: bytes) -> None:
    assert wpa_ctrl.printf_decode(wpa_ctrl.printf_encode(raw)) == raw


@pytest.mark.parametrize(
    ("ssid", "expected"),
    [
        ("HomeNet", '"HomeNet"'),
        ("with space", '"with space"'),
        ('quote"inside', "71756f746522696e73696465"),
        ("caf\u00e9", "636166c3a9"),
        ("tab\there", "7461620968657265"),
        ("back\\slash", '"back\\slash"'),
    ],
)
def test_ssid_is_quoted_only_when_plain_printable(ssid: str, expected: str) -> None:
    assert wpa_ctrl.encode_ssid(ssid) == expected


@given(st.text(min_size=1, max_size=8))
def test_ssid_encoding_round_trips_through_config_string(ssid: str) -> None:
    encoded = wpa_ctrl.encode_ssid(ssid)
    assert "\n" not in encoded
    assert wpa_ctrl.decode_config_string(encoded) == ssid.encode("utf-8")


@pytest.mark.parametrize("ssid", ["", "x" * 33, "\u00e9" * 17])
def test_ssid_length_is_enforced(ssid: str) -> None:
    with pytest.raises(PolicyError):
        wpa_ctrl.encode_ssid(ssid)


def test_psk_quoting_rules() -> None:
    assert wpa_ctrl.encode_psk("password", "x") == '"password"'
    assert wpa_ctrl.encode_psk('pa"ss word', "x") == '"pa"ss word"'
    hex_key = "AB" * 32
    assert wpa_ctrl.encode_psk(hex_key, "x") == hex_key.lower()


def test_non_ascii_passphrase_becomes_the_ieee_psk() -> None:
    # IEEE 802.11i-2004 H.4.1 test vector, then a UTF-8 passphrase via the same KDF.
    vector = wpa_ctrl.derive_psk(b"password", b"IEEE").hex()
    assert vector == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    encoded = wpa_ctrl.encode_psk("pässwörd", "IEEE")
    assert encoded == wpa_ctrl.derive_psk("pässwörd".encode(), b"IEEE").hex()


@pytest.mark.parametrize("bad", ["short", "x" * 64, "y" * 70, "AB" * 31 + "G1"])
def test_bad_passphrase_error_never_contains_it(bad: str) -> None:
    with pytest.raises(PolicyError) as caught:
        wpa_ctrl.encode_psk(bad, "net")
    assert bad not in str(caught.value)


def test_network_settings_mark_only_the_psk_secret() -> None:
    settings = wpa_ctrl.network_settings(WifiCredentials("net", "password1", hidden=True))
    assert [s.name for s in settings] == ["ssid", "scan_ssid", "key_mgmt", "ieee80211w", "psk"]
    assert [s.name for s in settings if s.secret] == ["psk"]
    open_settings = wpa_ctrl.network_settings(WifiCredentials("net"))
    assert [(s.name, s.value) for s in open_settings] == [("ssid", '"net"'), ("key_mgmt", "NONE")]


@pytest.mark.parametrize(
    ("flags", "security"),
    [
        ("[WPA2-PSK-CCMP][ESS]", Security.WPA2_PSK),
        ("[WPA-PSK-TKIP][ESS]", Security.WPA_PSK),
        ("[WPA-PSK-CCMP+TKIP][WPA2-PSK-CCMP+TKIP][WPS][ESS]", Security.WPA2_PSK),
        ("[RSN-SAE-CCMP][ESS]", Security.WPA3_SAE),
        ("[WPA2-SAE-CCMP][ESS]", Security.WPA3_SAE),
        ("[WPA2-PSK+SAE-CCMP][ESS]", Security.WPA2_PSK),
        ("[WPA2-EAP-CCMP][ESS]", Security.ENTERPRISE),
        ("[WEP][ESS]", Security.WEP),
        ("[ESS]", Security.OPEN),
        ("", Security.OPEN),
        ("[OWE-TRANS-OPEN]", Security.UNKNOWN),
    ],
)
def test_flags_map_to_security(flags: str, security: Security) -> None:
    assert wpa_ctrl.security_from_flags(flags) is security


def test_scan_results_parse_escaped_ssids_and_sort_strongest_first() -> None:
    data = HEADER + (
        b'02:00:00:00:01:00\t2412\t-70\t[WPA2-PSK-CCMP][ESS]\tq\\"uo,te\\\\\n'
        b"02:00:00:00:02:00\t5180\t-40\t[ESS]\tcaf\\xc3\\xa9\n"
        b"02:00:00:00:03:00\t2437\t-55\t[ESS]\tcaf\\xc3\\xa9\n"
        b"02:00:00:00:04:00\t2437\t-30\t[ESS]\t\n"
    )
    results = wpa_ctrl.parse_scan_results(data)
    assert [(ap.ssid, ap.signal_dbm) for ap in results.access_points] == [
        ("caf\u00e9", -40),
        ('q"uo,te\\', -70),
    ]
    assert results.access_points[0].frequency_mhz == 5180
    assert results.rejected_rows == 0


def test_scan_results_with_malformed_rows_keep_the_good_ones() -> None:
    data = (
        HEADER
        + (
            "02:00:00:00:01:00\t2412\t-70\t[ESS]\tgood\n"
            "02:00:00:00:01:01\t2412\t-70\t[ESS]\n"
            "not-a-bssid\t2412\t-70\t[ESS]\tbad\n"
            "02:00:00:00:01:02\tfast\t-70\t[ESS]\tbad\n"
            "02:00:00:00:01:03\t2412\t-70\t[ESS]\tbad\\q\n"
            "02:00:00:00:01:04\t2412\t-70\t[ESS]\t" + "x" * 40 + "\n"
            "02:00:00:00:01:05\t2412\t-99999\t[ESS]\tbad\n"
            "02:00:00:00:01:06\t2412\t-70\t[ESS]\tgood\textra\n"
        ).encode()
    )
    results = wpa_ctrl.parse_scan_results(data)
    assert [ap.ssid for ap in results.access_points] == ["good"]
    assert results.rejected_rows == 7


def test_scan_results_without_header_are_rejected() -> None:
    with pytest.raises(DecodeError):
        wpa_ctrl.parse_scan_results(b"FAIL\n")


def test_scan_results_row_count_is_capped() -> None:
    row = b"02:00:00:00:01:00\t2412\t-70\t[ESS]\tn\n"
    results = wpa_ctrl.parse_scan_results(HEADER + row * (wpa_ctrl.MAX_SCAN_ROWS + 10))
    assert results.rejected_rows == 10


def test_oversized_reply_is_too_large() -> None:
    with pytest.raises(DecodeError):
        wpa_ctrl.parse_scan_results(HEADER + b"x" * wpa_ctrl.MAX_REPLY_BYTES)


def test_status_to_wifi_status() -> None:
    fields = wpa_ctrl.parse_status(
        b"bssid=02:00:00:00:01:00\nssid=caf\\xc3\\xa9\nid=0\nwpa_state=COMPLETED\nip_address=10.0.0.5\n"
    )
    status = wpa_ctrl.wifi_status(fields)
    assert status.connected and status.ssid == "caf\u00e9" and status.ip_address == "10.0.0.5"
    assert not wpa_ctrl.wifi_status({"wpa_state": "COMPLETED"}).connected
    assert wpa_ctrl.wifi_status({"wpa_state": "SCANNING"}) == wpa_ctrl.wifi_status({})


def test_events_parse() -> None:
    event = wpa_ctrl.parse_event(
        b"<3>CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=7 id_str=]"
    )
    assert event.kind is wpa_ctrl.EventKind.CONNECTED and event.fields["id"] == "7"
    wrong = wpa_ctrl.parse_event(
        b'<3>CTRL-EVENT-SSID-TEMP-DISABLED id=1 ssid="a b" auth_failures=1 duration=10 '
        b"reason=WRONG_KEY"
    )
    assert wrong.fields == {
        "id": "1",
        "ssid": '"a b"',
        "auth_failures": "1",
        "duration": "10",
        "reason": "WRONG_KEY",
    }


def test_hostile_ssid_cannot_forge_a_wrong_key_reason() -> None:
    event = wpa_ctrl.parse_event(
        b'<3>CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid="x\\" reason=WRONG_KEY id=0" '
        b"auth_failures=1 duration=10 reason=CONN_FAILED"
    )
    assert event.fields["reason"] == "CONN_FAILED"
    tracker = wpa_ctrl.ConnectTracker(0, deadline=10.0)
    tracker.on_event(event)
    assert tracker.result is None


def test_hostile_events_about_other_networks_are_ignored() -> None:
    tracker = wpa_ctrl.ConnectTracker(3, deadline=10.0)
    for raw in (
        b'<3>CTRL-EVENT-SSID-TEMP-DISABLED id=4 ssid="x" reason=WRONG_KEY',
        b"<3>CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=9 id_str=]",
        b'<3>CTRL-EVENT-SSID-TEMP-DISABLED ssid="x" reason=WRONG_KEY',
        b"<3>CTRL-EVENT-CONNECTEDX",
    ):
        tracker.on_event(wpa_ctrl.parse_event(raw))
    tracker.on_status({"wpa_state": "COMPLETED", "id": "4", "ip_address": "10.0.0.1"})
    assert tracker.result is None and not tracker.associated


@pytest.mark.parametrize(
    "raw", [b"", b"CTRL-EVENT-CONNECTED", b"<x>CTRL", b"<3>", b"<3>" + b"A" * 5000]
)
def test_malformed_events_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        wpa_ctrl.parse_event(raw)


def test_tracker_needs_an_address_before_connected() -> None:
    tracker = wpa_ctrl.ConnectTracker(0, deadline=10.0)
    tracker.on_event(
        wpa_ctrl.parse_event(b"<3>CTRL-EVENT-CONNECTED - Connection to x completed [id=0 id_str=]")
    )
    tracker.on_status({"wpa_state": "COMPLETED", "id": "0"})
    assert tracker.result is None
    tracker.on_time(10.0)
    assert tracker.result is not None
    assert tracker.result.outcome is ConnectOutcome.TIMEOUT
    assert "no address" in tracker.result.detail


def test_tracker_outcomes() -> None:
    tracker = wpa_ctrl.ConnectTracker(0, deadline=10.0)
    tracker.on_status({"wpa_state": "COMPLETED", "id": "0", "ip_address": "10.1.1.1"})
    assert (
        tracker.result is not None and tracker.result.ok and tracker.result.ip_address == "10.1.1.1"
    )
    lost = wpa_ctrl.ConnectTracker(0, deadline=10.0)
    lost.on_event(wpa_ctrl.parse_event(b"<3>CTRL-EVENT-NETWORK-NOT-FOUND "))
    assert lost.result is not None and lost.result.outcome is ConnectOutcome.NOT_FOUND


def test_network_list_parse() -> None:
    data = (
        b"network id / ssid / bssid / flags\n"
        b"0\thome\tany\t[CURRENT]\n1\told\tany\t[DISABLED]\nbad\n"
    )
    assert wpa_ctrl.parse_network_list(data) == {0: True, 1: False}


@given(st.binary(max_size=600))
def test_parsers_only_raise_decode_error(data: bytes) -> None:
    for parser in (
        wpa_ctrl.parse_scan_results,
        wpa_ctrl.parse_status,
        wpa_ctrl.parse_event,
        wpa_ctrl.parse_network_id,
        wpa_ctrl.parse_network_list,
    ):
        with contextlib.suppress(DecodeError):
            parser(data)


@given(st.binary(max_size=300))
def test_scan_rows_from_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        wpa_ctrl.parse_scan_results(HEADER + data)
        wpa_ctrl.wifi_status(wpa_ctrl.parse_status(data))
    except DecodeError:
        pass


def test_scan_row_with_huge_unclosed_flags_is_parsed_in_linear_time() -> None:
    import time

    row = "00:11:22:33:44:55\t2412\t-40\t[WPA2-PSK-CCMP]" + "[" * 100_000 + "\tnet"
    started = time.monotonic()
    access_point = wpa_ctrl.parse_scan_row(row)
    assert time.monotonic() - started < 1.0
    assert access_point.security is Security.WPA2_PSK
