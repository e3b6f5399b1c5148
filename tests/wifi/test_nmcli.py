"""nmcli: terse parsing, and the backend driving a fake ``nmcli`` found on PATH."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError, PolicyError
from agent.provisioning import nmcli
from agent.provisioning.wifi import ConnectOutcome, Security, WifiCredentials
from agent.provisioning.wpa_ctrl import derive_psk
from drivers.wifi.nmcli import NmcliBackend
from tests.wifi.conftest import PLANTED_PASSPHRASE

HERE = pathlib.Path(__file__).resolve().parent

# Real `nmcli -t -f IN-USE,SSID,BSSID,FREQ,SIGNAL,SECURITY device wifi list` rows.
ROWS = [
    r"*:HomeNet:AA\:BB\:CC\:DD\:EE\:01:2437 MHz:75:WPA2",
    r" :HomeNet:AA\:BB\:CC\:DD\:EE\:02:5180 MHz:90:WPA2",
    r" :Caf\\e\: bar:AA\:BB\:CC\:DD\:EE\:03:2412 MHz:40:",
    r" :Office:AA\:BB\:CC\:DD\:EE\:04:2462 MHz:55:WPA2 802.1X",
    r" :Modern:AA\:BB\:CC\:DD\:EE\:05:5500 MHz:60:WPA3",
    r" ::AA\:BB\:CC\:DD\:EE\:06:2412 MHz:20:WPA2",
]


def test_split_terse_unescapes_colons_and_backslashes() -> None:
    assert nmcli.split_terse(r"a\:b:c\\d::e") == ["a:b", "c\\d", "", "e"]
    with pytest.raises(DecodeError):
        nmcli.split_terse("bad\\q")
    with pytest.raises(DecodeError):
        nmcli.split_terse("dangling\\")


@given(st.lists(st.text(max_size=12), min_size=1, max_size=6))
def test_terse_escape_round_trip(values: list[str]) -> None:
    assert nmcli.split_terse(":".join(nmcli.escape_terse(v) for v in values)) == values


def test_wifi_list_parses_real_rows() -> None:
    listing = nmcli.parse_wifi_list(("\n".join(ROWS) + "\n").encode())
    assert [(ap.ssid, ap.security) for ap in listing.access_points] == [
        ("HomeNet", Security.WPA2_PSK),
        ("Modern", Security.WPA3_SAE),
        ("Office", Security.ENTERPRISE),
        ("Caf\\e: bar", Security.OPEN),
    ]
    home = listing.access_points[0]
    assert (
        home.bssid == "aa:bb:cc:dd:ee:02" and home.frequency_mhz == 5180 and home.signal_dbm == -46
    )
    assert listing.in_use is not None and listing.in_use.bssid == "aa:bb:cc:dd:ee:01"


def test_wifi_list_with_malformed_rows_keeps_the_good_ones() -> None:
    bad = [
        r" :x:AA\:BB\:CC\:DD\:EE:2412 MHz:40:",
        r" :x:AA\:BB\:CC\:DD\:EE\:07:fast:40:",
        r" :x:AA\:BB\:CC\:DD\:EE\:07:2412 MHz:4000:",
        r" :trunc:AA\:BB",
        "\x00\x01 binary",
        " :" + "y" * 40 + r":AA\:BB\:CC\:DD\:EE\:07:2412 MHz:40:",
    ]
    listing = nmcli.parse_wifi_list(("\n".join([ROWS[0], *bad])).encode())
    assert [ap.ssid for ap in listing.access_points] == ["HomeNet"]
    assert listing.rejected_rows == len(bad)


def test_signal_percent_to_dbm() -> None:
    assert [nmcli.signal_to_dbm(p) for p in (0, 50, 100, 150)] == [-100, -70, -40, -40]


def test_fields_and_uuid() -> None:
    fields = nmcli.parse_fields(
        b"GENERAL.STATE:activated\nIP4.ADDRESS[1]:10.0.0.9/24\nIP6.ADDRESS[1]:fe80\\:\\:1/64\n"
    )
    assert nmcli.is_activated(fields) and nmcli.first_ipv4(fields) == "10.0.0.9"
    assert fields["IP6.ADDRESS[1]"] == "fe80::1/64"
    uuid = nmcli.parse_added_uuid(
        b"Connection 'x (1)' (0B4B4F0E-1A2B-4C3D-8E9F-0123456789AB) successfully added.\n"
    )
    assert uuid == "0b4b4f0e-1a2b-4c3d-8e9f-0123456789ab"
    with pytest.raises(DecodeError):
        nmcli.parse_added_uuid(b"Error: failed")


def test_psk_value_hands_over_awkward_passphrases_as_the_psk() -> None:
    assert nmcli.psk_value(WifiCredentials("n", "plain pass")) == "plain pass"
    edge = nmcli.psk_value(WifiCredentials("n", " spaced  "))
    assert edge == derive_psk(b" spaced  ", b"n").hex()
    assert (
        nmcli.psk_value(WifiCredentials("n", "back\\slash"))
        == derive_psk(b"back\\slash", b"n").hex()
    )
    for bad in ("short", "line\nbreak1"):
        with pytest.raises(PolicyError) as caught:
            nmcli.psk_value(WifiCredentials("n", bad))
        assert bad not in str(caught.value)


def test_activation_failures_map_to_outcomes() -> None:
    failed = "Error: Connection activation failed: "
    cases = {
        failed + "Secrets were required, but not provided.": ConnectOutcome.WRONG_KEY,
        failed + "The Wi-Fi network could not be found": ConnectOutcome.NOT_FOUND,
        "Error: Timeout expired (30 seconds)": ConnectOutcome.TIMEOUT,
        failed + "IP configuration could not be reserved": ConnectOutcome.FAILED,
    }
    for stderr, outcome in cases.items():
        assert nmcli.activation_failure(4, stderr)[0] is outcome


@given(st.binary(max_size=400))
def test_nmcli_parsers_only_raise_decode_error(data: bytes) -> None:
    for parser in (
        nmcli.parse_wifi_list,
        nmcli.parse_fields,
        nmcli.parse_added_uuid,
        nmcli.active_wifi_uuid,
    ):
        with contextlib.suppress(DecodeError):
            parser(data)


# --- backend with a fake nmcli on PATH ----------------------------------------------


class FakeNmcli:
    def __init__(self, home: pathlib.Path) -> None:
        self.home = home

    def scenario(self, **values: object) -> None:
        (self.home / "scenario.json").write_text(json.dumps(values))

    @property
    def calls(self) -> list[dict[str, object]]:
        path = self.home / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @property
    def connections(self) -> dict[str, dict[str, object]]:
        return json.loads((self.home / "state.json").read_text())["connections"]  # type: ignore[no-any-return]


@pytest.fixture
def fake_nmcli(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> FakeNmcli:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nmcli"
    script.write_text(f"#!{sys.executable}\n" + (HERE / "fake_nmcli.py").read_text())
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NMCLI_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", "")
    fake = FakeNmcli(tmp_path)
    fake.scenario(rows=ROWS, networks={"HomeNet": "password1", "Open": None})
    return fake


def test_scan_through_nmcli(fake_nmcli: FakeNmcli) -> None:
    aps = NmcliBackend("nmcli", "wlan0").scan(timeout=5)
    assert aps[0].ssid == "HomeNet"
    argv = fake_nmcli.calls[0]["argv"]
    assert argv[:3] == ["-t", "-f", nmcli.WIFI_LIST_FIELDS] and argv[-4:] == [
        "--rescan",
        "yes",
        "ifname",
        "wlan0",
    ]


def test_connect_passes_key_only_in_a_deleted_0600_file(fake_nmcli: FakeNmcli) -> None:
    result = NmcliBackend().connect(WifiCredentials("HomeNet", "password1"), timeout=5)
    assert result.outcome is ConnectOutcome.CONNECTED and result.ip_address == "192.168.1.50"
    up = [c for c in fake_nmcli.calls if "up" in c["argv"]]
    assert len(up) == 1
    assert up[0]["passwd_file"] == "802-11-wireless-security.psk:password1\n"
    assert up[0]["passwd_mode"] == 0o600
    assert not os.path.exists(str(up[0]["passwd_path"]))
    for call in fake_nmcli.calls:
        assert not any("password1" in arg for arg in call["argv"]), call["argv"]
    (profile,) = fake_nmcli.connections.values()
    assert profile["saved"] and profile["options"]["connection.autoconnect"] == "yes"
    assert profile["options"]["save"] == "no", "added in memory, persisted only by modify"


@pytest.mark.parametrize(
    ("ssid", "key", "expected"),
    [
        ("HomeNet", "wrongpass", ConnectOutcome.WRONG_KEY),
        ("Gone", "password1", ConnectOutcome.NOT_FOUND),
    ],
)
def test_failed_connect_deletes_the_unsaved_profile(
    fake_nmcli: FakeNmcli, ssid: str, key: str, expected: ConnectOutcome
) -> None:
    result = NmcliBackend().connect(WifiCredentials(ssid, key), timeout=5)
    assert result.outcome is expected
    assert fake_nmcli.connections == {}
    assert not any("modify" in c["argv"] for c in fake_nmcli.calls)


def test_activated_without_address_times_out(fake_nmcli: FakeNmcli) -> None:
    fake_nmcli.scenario(rows=ROWS, networks={"Open": None}, address=False)
    result = NmcliBackend().connect(WifiCredentials("Open"), timeout=1)
    assert result.outcome is ConnectOutcome.TIMEOUT and fake_nmcli.connections == {}


def test_wpa3_network_gets_sae(fake_nmcli: FakeNmcli) -> None:
    fake_nmcli.scenario(rows=ROWS, networks={"Modern": "password1"})
    assert NmcliBackend().connect(WifiCredentials("Modern", "password1"), timeout=5).ok
    add = next(c["argv"] for c in fake_nmcli.calls if "add" in c["argv"])
    assert add[add.index("wifi-sec.key-mgmt") + 1] == "sae"


def test_status_through_nmcli(fake_nmcli: FakeNmcli) -> None:
    backend = NmcliBackend()
    assert not backend.status().connected
    backend.connect(WifiCredentials("HomeNet", "password1"), timeout=5)
    status = backend.status()
    assert status.connected and status.ssid == "HomeNet" and status.ip_address == "192.168.1.50"


def test_passphrase_never_in_argv_logs_or_errors_nmcli(
    fake_nmcli: FakeNmcli, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_nmcli.scenario(rows=ROWS, networks={"HomeNet": PLANTED_PASSPHRASE})
    backend = NmcliBackend()
    assert backend.connect(WifiCredentials("HomeNet", PLANTED_PASSPHRASE), timeout=5).ok
    assert not backend.connect(WifiCredentials("HomeNet", PLANTED_PASSPHRASE + "!"), timeout=5).ok
    for call in fake_nmcli.calls:
        assert not any(PLANTED_PASSPHRASE in arg for arg in call["argv"])
    assert PLANTED_PASSPHRASE not in caplog.text


def test_missing_nmcli_is_a_device_error(tmp_path: pathlib.Path) -> None:
    from agent.errors import DeviceIOError

    with pytest.raises(DeviceIOError):
        NmcliBackend(str(tmp_path / "no-nmcli")).scan(timeout=1)
