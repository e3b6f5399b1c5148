"""WpaSupplicantBackend against the protocol fake on a real UNIX datagram socket."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest

from agent.errors import ConnectionLostError, DeviceTimeoutError, PolicyError
from agent.provisioning import wpa_ctrl
from agent.provisioning.wifi import ConnectOutcome, Security, WifiCredentials
from drivers.wifi.wpa import WpaControl, WpaSupplicantBackend
from tests.wifi.conftest import PLANTED_PASSPHRASE
from tests.wifi.fake_wpa import FakeNetwork, FakeWpaSupplicant


@pytest.fixture
def backend(fake_wpa: FakeWpaSupplicant, short_dir: str):  # type: ignore[no-untyped-def]
    instance = WpaSupplicantBackend(fake_wpa.path, short_dir)
    yield instance
    instance.close()


def verbs(fake: FakeWpaSupplicant) -> list[str]:
    return [c.split(" ")[0] for c in fake.commands]


def test_ping_and_client_binds_its_own_path(backend: WpaSupplicantBackend, short_dir: str) -> None:
    assert backend.ping()
    assert any(name.startswith("edge-wpa-") for name in os.listdir(short_dir))
    backend.close()
    assert not any(name.startswith("edge-wpa-") for name in os.listdir(short_dir))


def test_scan_waits_for_results_event(
    backend: WpaSupplicantBackend, fake_wpa: FakeWpaSupplicant
) -> None:
    fake_wpa.scan_rows = [
        "02:00:00:00:01:00\t2412\t-60\t[WPA2-PSK-CCMP][ESS]\tHome\\\\Net",
        "02:00:00:00:02:00\t2412\t-50\t[ESS]\tCaf\\xc3\\xa9",
        "garbage row",
    ]
    aps = backend.scan(timeout=2.0)
    assert [(ap.ssid, ap.security) for ap in aps] == [
        ("Caf\u00e9", Security.OPEN),
        ("Home\\Net", Security.WPA2_PSK),
    ]
    assert verbs(fake_wpa).index("SCAN_RESULTS") > verbs(fake_wpa).index("SCAN")


def test_connect_ok_saves_only_after_address(
    backend: WpaSupplicantBackend, fake_wpa: FakeWpaSupplicant
) -> None:
    fake_wpa.address_delay = 0.6
    result = backend.connect(WifiCredentials('My "Net"', "password1"), timeout=5.0)
    assert result.outcome is ConnectOutcome.CONNECTED and result.ip_address == "10.0.0.42"
    sets = {
        c.split(" ")[2]: c.split(" ", 3)[3]
        for c in fake_wpa.commands
        if c.startswith("SET_NETWORK")
    }
    assert sets["ssid"] == b'My "Net"'.hex()
    assert sets["psk"] == '"password1"'
    assert len(fake_wpa.saved) == 1 and 0 in fake_wpa.saved[0]
    order = verbs(fake_wpa)
    assert order.index("SAVE_CONFIG") > order.index("SELECT_NETWORK")
    assert "REMOVE_NETWORK" not in order
    assert backend.status().ip_address == "10.0.0.42"


def test_build_without_sae_falls_back_to_wpa_psk(
    backend: WpaSupplicantBackend, fake_wpa: FakeWpaSupplicant
) -> None:
    fake_wpa.supports_sae = False
    assert backend.connect(WifiCredentials("Net", "password1"), timeout=3.0).ok
    assert fake_wpa.networks[0].values["key_mgmt"] == "WPA-PSK"
    assert "SET_NETWORK 0 key_mgmt WPA-PSK SAE" in fake_wpa.commands


def test_connect_re_enables_networks_that_were_enabled(
    backend: WpaSupplicantBackend, fake_wpa: FakeWpaSupplicant
) -> None:
    fake_wpa.next_id = 1
    fake_wpa.networks[0] = FakeNetwork({"ssid": '"old"'}, enabled=True)
    fake_wpa.outcome = "wrong_key"
    backend.connect(WifiCredentials("new", "password1"), timeout=3.0)
    assert fake_wpa.networks[0].enabled and 1 not in fake_wpa.networks


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [("wrong_key", ConnectOutcome.WRONG_KEY), ("not_found", ConnectOutcome.NOT_FOUND)],
)
def test_failed_connect_removes_the_network_and_never_saves(
    backend: WpaSupplicantBackend,
    fake_wpa: FakeWpaSupplicant,
    outcome: str,
    expected: ConnectOutcome,
) -> None:
    fake_wpa.outcome = outcome
    result = backend.connect(WifiCredentials("Net", "password1"), timeout=3.0)
    assert result.outcome is expected
    assert "REMOVE_NETWORK 0" in fake_wpa.commands
    assert not fake_wpa.saved and not fake_wpa.networks


def test_associated_without_address_times_out_and_is_removed(
    backend: WpaSupplicantBackend, fake_wpa: FakeWpaSupplicant
) -> None:
    fake_wpa.outcome = "no_address"
    result = backend.connect(WifiCredentials("Net"), timeout=0.8)
    assert result.outcome is ConnectOutcome.TIMEOUT and "no address" in result.detail
    assert not fake_wpa.saved and "REMOVE_NETWORK 0" in fake_wpa.commands


def test_hostile_unsolicited_events_do_not_decide_the_outcome(
    backend: WpaSupplicantBackend, fake_wpa: FakeWpaSupplicant
) -> None:
    fake_wpa.extra_events = [
        b'<3>CTRL-EVENT-SSID-TEMP-DISABLED id=99 ssid="x" reason=WRONG_KEY',
        b'<3>CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid="\\" reason=WRONG_KEY" reason=CONN_FAILED',
        b"<3>CTRL-EVENT-CONNECTED - Connection to x completed [id=5 id_str=]",
        b"\xff\xfe garbage",
        b"<3>" + b"\x00" * 5000,
        b"<9>CTRL-EVENT-UNKNOWN \xc3\x28",
    ]
    result = backend.connect(WifiCredentials("Net", "password1"), timeout=5.0)
    assert result.outcome is ConnectOutcome.CONNECTED


def test_passphrase_never_logged_or_raised(
    backend: WpaSupplicantBackend,
    fake_wpa: FakeWpaSupplicant,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = WifiCredentials("Net", PLANTED_PASSPHRASE)
    assert PLANTED_PASSPHRASE not in repr(credentials) and PLANTED_PASSPHRASE not in str(
        credentials
    )
    fake_wpa.outcome = "wrong_key"
    backend.connect(credentials, timeout=3.0)
    fake_wpa.outcome = "connect"
    backend.connect(credentials, timeout=3.0)
    # A psk value the daemon refuses: the error names the field, never the value.
    monkeypatch.setattr(wpa_ctrl, "encode_psk", lambda p, s: '"' + p[:4] + '"')
    with pytest.raises(PolicyError) as caught:
        backend.connect(WifiCredentials("Net", PLANTED_PASSPHRASE[:4] + "xxxx"), timeout=1.0)
    assert "psk" in str(caught.value) and PLANTED_PASSPHRASE[:4] not in str(caught.value)
    assert list(fake_wpa.networks) == [1], "the half-configured network 2 was removed"
    for record in caplog.records:
        assert PLANTED_PASSPHRASE not in record.getMessage()
        assert PLANTED_PASSPHRASE not in (record.exc_text or "")
    assert PLANTED_PASSPHRASE not in caplog.text


def test_missing_daemon_is_connection_lost(short_dir: str) -> None:
    with pytest.raises(ConnectionLostError):
        WpaSupplicantBackend(f"{short_dir}/nothing", short_dir)


def test_silent_daemon_times_out(short_dir: str) -> None:
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mute.bind(f"{short_dir}/mute")
    try:
        with (
            WpaControl(f"{short_dir}/mute", short_dir) as control,
            pytest.raises(DeviceTimeoutError),
        ):
            control.request("PING", timeout=0.3)
    finally:
        mute.close()


def test_late_reply_is_not_taken_for_the_next_answer(short_dir: str) -> None:
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(f"{short_dir}/slow")
    try:
        with WpaControl(f"{short_dir}/slow", short_dir) as control:
            with pytest.raises(DeviceTimeoutError):
                control.request("STATUS", timeout=0.2)
            _, sender = peer.recvfrom(100)
            peer.sendto(b"wpa_state=STALE\n", sender)
            time.sleep(0.05)

            def answer() -> None:
                _, who = peer.recvfrom(100)
                peer.sendto(b"PONG\n", who)

            thread = threading.Thread(target=answer)
            thread.start()
            assert control.request("PING", timeout=2) == b"PONG\n"
            thread.join()
    finally:
        peer.close()
