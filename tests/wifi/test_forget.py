"""Account erasure removes the network the agent saved in the Wi-Fi backend (issue 11, item 9).

NetworkManager through the fake ``nmcli`` on PATH, wpa_supplicant through the
protocol fake and the real daemon in a network namespace, and the erasure
itself through ``edge-agent data erase --account`` as an owner would run it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning import nmcli, wpa_ctrl
from agent.provisioning.wifi import ConnectOutcome, WifiCredentials
from drivers.cli import main
from drivers.provisioning.store import FileProvisioningStore
from drivers.wifi.nmcli import NmcliBackend
from drivers.wifi.wpa import WpaControl, WpaSupplicantBackend
from tests.wifi.fake_wpa import FakeWpaSupplicant
from tests.wifi.test_nmcli import ROWS, FakeNmcli
from tests.wifi.test_wpa_real import RealWpa, real_wpa  # noqa: F401 -- the fixture

HERE = pathlib.Path(__file__).resolve().parent
KEY = "correct horse battery"
# A profile the agent did not make (the image's own, or the owner's): never touched.
FOREIGN = "Wired connection 1:0b4b4f0e-1a2b-4c3d-8e9f-0000000000aa:802-11-wireless"
FOREIGN_UUID = "0b4b4f0e-1a2b-4c3d-8e9f-0000000000aa"


@pytest.fixture
def fake_nm(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> FakeNmcli:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nmcli"
    script.write_text(f"#!{sys.executable}\n" + (HERE / "fake_nmcli.py").read_text())
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NMCLI_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", "")
    fake = FakeNmcli(tmp_path)
    fake.scenario(rows=ROWS, networks={"HomeNet": KEY}, other_profiles=[FOREIGN])
    return fake


def _deleted(fake: FakeNmcli) -> list[str]:
    argvs = [list(c["argv"]) for c in fake.calls]  # type: ignore[call-overload]
    return [str(a[-1]) for a in argvs if a[:2] == ["connection", "delete"]]


def test_agent_profiles_are_found_by_their_name_only() -> None:
    listing = (
        b"edge-agent-0a1b2c3d:11111111-2222-3333-4444-555555555555:802-11-wireless\n"
        + FOREIGN.encode() + b"\n"
        + b"edge-agent-0a1b2c3d:11111111-2222-3333-4444-666666666666:ethernet\n"
        + b"edge-agent-lookalike:11111111-2222-3333-4444-777777777777:802-11-wireless\n"
        + b"edge\\:agent:bad\n\x00junk\n"
    )
    assert nmcli.agent_profiles(listing) == ["11111111-2222-3333-4444-555555555555"]


def test_nmcli_forget_deletes_the_saved_profile_and_nothing_else(fake_nm: FakeNmcli) -> None:
    backend = NmcliBackend()
    assert backend.connect(WifiCredentials("HomeNet", KEY), timeout=5).ok
    assert not backend.connect(WifiCredentials("HomeNet", "wrong-key-1"), timeout=5).ok
    (saved,) = fake_nm.connections  # the failed attempt's profile is already gone
    assert backend.forget("HomeNet") == 1
    assert fake_nm.connections == {}
    assert saved in _deleted(fake_nm) and FOREIGN_UUID not in _deleted(fake_nm)
    assert backend.forget("HomeNet") == 0  # idempotent: a retried erasure succeeds


def test_wpa_forget_removes_the_network_and_saves_the_config(
    fake_wpa: FakeWpaSupplicant, short_dir: str
) -> None:
    backend = WpaSupplicantBackend(fake_wpa.path, short_dir)
    try:
        assert backend.connect(WifiCredentials('Home "Net"', KEY), timeout=5.0).ok
        other = backend.connect(WifiCredentials("Neighbour", "password2"), timeout=5.0)
        assert other.ok
        assert backend.forget('Home "Net"') == 1
    finally:
        backend.close()
    remaining = [n.values.get("ssid") for n in fake_wpa.networks.values()]
    assert remaining == ['"Neighbour"']
    # SAVE_CONFIG came after the removal: the saved file holds the other network only.
    assert [n.get("ssid") for n in fake_wpa.saved[-1].values()] == ['"Neighbour"']


def test_wpa_forget_without_a_known_ssid_touches_nothing(
    fake_wpa: FakeWpaSupplicant, short_dir: str
) -> None:
    backend = WpaSupplicantBackend(fake_wpa.path, short_dir)
    try:
        assert backend.connect(WifiCredentials("Home", KEY), timeout=5.0).ok
        commands = len(fake_wpa.commands)
        assert backend.forget(None) == 0
        assert len(fake_wpa.commands) == commands
    finally:
        backend.close()


def test_real_wpa_supplicant_forgets_the_saved_network(
    real_wpa: RealWpa,  # noqa: F811 -- the imported fixture
    short_dir: str,
) -> None:
    backend = WpaSupplicantBackend(real_wpa.ctrl_path, short_dir)
    try:
        assert backend.connect(WifiCredentials('wired "lab"'), timeout=10.0).ok
        with WpaControl(real_wpa.ctrl_path, short_dir) as control:
            nid = wpa_ctrl.parse_network_id(control.request("ADD_NETWORK"))
            control.request(f"SET_NETWORK {nid} ssid {wpa_ctrl.encode_ssid('keep me')}")
            control.request(f"SET_NETWORK {nid} key_mgmt NONE")
        assert 'wired "lab"' in real_wpa.conf.read_text()
        assert backend.forget('wired "lab"') == 1
    finally:
        backend.close()
    saved = real_wpa.conf.read_text()
    assert "wired" not in saved and "keep me" in saved


def _config(tmp_path: pathlib.Path, provisioning: str) -> pathlib.Path:
    path = tmp_path / "agent.toml"
    path.write_text(f"[mqtt]\nenabled = false\n[provisioning]\n{provisioning}")
    return path


def _erase(config: pathlib.Path, state: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    code = main(["data", "erase", "--account", "--yes", "--config", str(config),
                 "--state-dir", str(state)])
    reply = json.loads(capsys.readouterr().out)
    assert (code == 0) == reply["complete"]
    return reply  # type: ignore[no-any-return]


def test_account_erase_removes_the_networkmanager_profile(
    tmp_path: pathlib.Path, fake_nm: FakeNmcli, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    credentials = WifiCredentials("HomeNet", KEY)
    assert NmcliBackend().connect(credentials, timeout=5).ok  # what provisioning did
    store = FileProvisioningStore(state, keys=DataKeys(StateLayout(state)))
    store.save_credentials(credentials)
    assert KEY.encode() not in store.credentials_path.read_bytes()  # NetworkManager keeps it
    reply = _erase(_config(tmp_path, 'wifi_backend = "networkmanager"\n'), state, capsys)
    assert reply["complete"] and reply["erased"]["wifi_credentials"] == 2  # profile + file
    assert fake_nm.connections == {} and FOREIGN_UUID not in _deleted(fake_nm)
    assert not store.credentials_path.exists()


def test_unreachable_backend_fails_the_erasure_and_keeps_what_finds_the_network(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    store = FileProvisioningStore(state, keys=DataKeys(StateLayout(state)))
    store.save_credentials(WifiCredentials("HomeNet", KEY))
    config = _config(
        tmp_path, f'wifi_backend = "networkmanager"\nnmcli_path = "{tmp_path / "no-nmcli"}"\n'
    )
    reply = _erase(config, state, capsys)
    assert not reply["complete"] and reply["failed"] == ["wifi_credentials"]
    # A retry must still know which network to remove.
    assert store.load_credentials() == WifiCredentials("HomeNet")


def test_account_erase_removes_the_wpa_supplicant_network(
    tmp_path: pathlib.Path,
    real_wpa: RealWpa,  # noqa: F811 -- the imported fixture
    short_dir: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    credentials = WifiCredentials("wired lab")
    backend = WpaSupplicantBackend(real_wpa.ctrl_path, short_dir)
    try:
        assert backend.connect(credentials, timeout=10.0).outcome is ConnectOutcome.CONNECTED
    finally:
        backend.close()
    FileProvisioningStore(state, keys=DataKeys(StateLayout(state))).save_credentials(credentials)
    assert "wired lab" in real_wpa.conf.read_text()
    config = _config(
        tmp_path,
        f'wifi_backend = "wpa_supplicant"\nwpa_ctrl_path = "{real_wpa.ctrl_path}"\n'
        f'wpa_client_dir = "{short_dir}"\n',
    )
    reply = _erase(config, state, capsys)
    assert reply["complete"] and reply["erased"]["wifi_credentials"] == 2
    assert "wired lab" not in real_wpa.conf.read_text()


def test_a_passphrase_an_older_version_stored_is_dropped_at_start(tmp_path: pathlib.Path) -> None:
    from agent.config import AgentConfig
    from agent.feature import Mode
    from drivers.compose import compose
    from drivers.provisioning.feature import build_provisioning

    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    store.credentials_path.parent.mkdir(parents=True)
    store.credentials_path.write_text(
        json.dumps({"v": 1, "ssid": "HomeNet", "passphrase": KEY, "hidden": False})
    )
    config = AgentConfig(state_dir=tmp_path)
    compose(config, Mode.DAEMON, builders=(build_provisioning,), environ={}).close()
    assert KEY.encode() not in store.credentials_path.read_bytes()
    assert store.load_credentials() == WifiCredentials("HomeNet") and store.saved_secured()
