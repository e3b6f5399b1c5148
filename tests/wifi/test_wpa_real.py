"""The real wpa_supplicant (-D wired on a veth inside a private network namespace).

No radio is needed: the wired driver speaks the same control interface, so
quoting round-trips (GET_NETWORK returns what SET_NETWORK stored), STATUS and
even a whole open-network connect + SAVE_CONFIG run against the real daemon.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.provisioning import wpa_ctrl
from agent.provisioning.wifi import ConnectOutcome, WifiCredentials
from drivers.wifi.wpa import WpaControl, WpaSupplicantBackend

pytestmark = pytest.mark.netns
_names = itertools.count()


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


class RealWpa:
    def __init__(self, root: str) -> None:
        self.root = pathlib.Path(root)
        self.netns = f"edgewifi{os.getpid()}x{next(_names)}"
        self.conf = self.root / "wpa.conf"
        self.ctrl_dir = self.root / "ctrl"
        self.conf.write_text(f"ctrl_interface={self.ctrl_dir}\nupdate_config=1\nap_scan=0\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ctrl_path(self) -> str:
        return str(self.ctrl_dir / "veth0")

    def start(self) -> None:
        _run("ip", "netns", "add", self.netns)
        exec_ns = ("ip", "netns", "exec", self.netns)
        _run(*exec_ns, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        _run(*exec_ns, "ip", "link", "set", "veth1", "up")
        _run(*exec_ns, "ip", "link", "set", "veth0", "up")
        _run(*exec_ns, "ip", "addr", "add", "10.77.0.1/24", "dev", "veth0")
        self.process = subprocess.Popen(
            [*exec_ns, "wpa_supplicant", "-D", "wired", "-i", "veth0", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.ctrl_path):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("wpa_supplicant did not create its control socket")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=10)


@pytest.fixture
def real_wpa(short_dir: str) -> Iterator[RealWpa]:
    if shutil.which("wpa_supplicant") is None:
        pytest.skip("wpa_supplicant is not installed (apt-get install -y wpasupplicant)")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"`ip netns` does not work here: {probe.stderr.decode(errors='replace')[:100]}")
    daemon = RealWpa(short_dir)
    try:
        daemon.start()
    except (subprocess.CalledProcessError, RuntimeError) as error:
        daemon.stop()
        pytest.skip(f"cannot run wpa_supplicant in a network namespace: {error}")
    try:
        yield daemon
    finally:
        daemon.stop()


SSIDS = ["Plain", 'quo"te', "comma,semi;", "back\\slash", "caf\u00e9 \u2615", "tab\tnl\n", " lead"]


def test_ping_status_and_quoting_round_trips(real_wpa: RealWpa, short_dir: str) -> None:
    with WpaControl(real_wpa.ctrl_path, short_dir) as control:
        assert control.request("PING") == b"PONG\n"
        status = wpa_ctrl.parse_status(control.request("STATUS"))
        assert status["wpa_state"] in ("DISCONNECTED", "INACTIVE")
        assert status["ip_address"] == "10.77.0.1"
        for ssid in SSIDS:
            nid = wpa_ctrl.parse_network_id(control.request("ADD_NETWORK"))
            reply = control.request(f"SET_NETWORK {nid} ssid {wpa_ctrl.encode_ssid(ssid)}")
            assert reply == b"OK\n", ssid
            stored = control.request(f"GET_NETWORK {nid} ssid").decode()
            assert wpa_ctrl.decode_config_string(stored) == ssid.encode(), ssid
        for passphrase in [
            "password",
            'with "quotes" and spaces',
            "x" * 63,
            "ab" * 32,
            "pässwörd1",
        ]:
            value = wpa_ctrl.encode_psk(passphrase, "Plain")
            assert control.request(f"SET_NETWORK 0 psk {value}") == b"OK\n"
            # The daemon never hands a key back.
            assert control.request("GET_NETWORK 0 psk") == b"*"
        assert control.request('SET_NETWORK 0 psk "short"') == b"FAIL\n"
        networks = wpa_ctrl.parse_network_list(control.request("LIST_NETWORKS"))
        assert sorted(networks) == list(range(len(SSIDS)))
        for nid in networks:
            assert control.request(f"REMOVE_NETWORK {nid}") == b"OK\n"
        assert wpa_ctrl.parse_network_list(control.request("LIST_NETWORKS")) == {}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ssid=st.text(min_size=1, max_size=8))
def test_any_ssid_round_trips_through_the_real_daemon(
    real_wpa: RealWpa, short_dir: str, ssid: str
) -> None:
    with WpaControl(real_wpa.ctrl_path, short_dir) as control:
        nid = wpa_ctrl.parse_network_id(control.request("ADD_NETWORK"))
        try:
            reply = control.request(f"SET_NETWORK {nid} ssid {wpa_ctrl.encode_ssid(ssid)}")
            assert reply == b"OK\n"
            stored = control.request(f"GET_NETWORK {nid} ssid").decode()
            assert wpa_ctrl.decode_config_string(stored) == ssid.encode()
        finally:
            control.request(f"REMOVE_NETWORK {nid}")


def test_open_network_connects_and_is_saved(real_wpa: RealWpa, short_dir: str) -> None:
    backend = WpaSupplicantBackend(real_wpa.ctrl_path, short_dir)
    try:
        result = backend.connect(WifiCredentials('wired "lab"'), timeout=10.0)
        assert result.outcome is ConnectOutcome.CONNECTED
        assert result.ip_address == "10.77.0.1"
        status = backend.status()
        assert status.connected and status.ssid == 'wired "lab"'
    finally:
        backend.close()
    saved = real_wpa.conf.read_text()
    # wpa_supplicant writes printable SSIDs quoted (last quote wins when it reads back).
    assert 'ssid="wired "lab""' in saved and "key_mgmt=NONE" in saved


def test_unconfirmed_network_is_removed_not_saved(real_wpa: RealWpa, short_dir: str) -> None:
    backend = WpaSupplicantBackend(real_wpa.ctrl_path, short_dir)
    try:
        # WPA-PSK over a wire never completes its handshake: no confirmation.
        result = backend.connect(WifiCredentials("never", "password1"), timeout=1.5)
        assert result.outcome is ConnectOutcome.TIMEOUT
        with WpaControl(real_wpa.ctrl_path, short_dir) as control:
            assert wpa_ctrl.parse_network_list(control.request("LIST_NETWORKS")) == {}
    finally:
        backend.close()
    assert "never" not in real_wpa.conf.read_text()
