"""The saved Wi-Fi network at rest: sealed wifi.json, crypto-erase, rotation, migration.

A real state directory; the raw bytes of every file under it are scanned for
the SSID and the passphrase.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from agent.config import AgentConfig
from agent.errors import DeviceIOError
from agent.feature import Mode
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning.wifi import WifiCredentials
from agent.purposes import WIFI_DOMAIN
from agent.sealing import is_sealed, read_header
from drivers.compose import compose
from drivers.provisioning.feature import build_provisioning
from drivers.provisioning.store import FileProvisioningStore, WifiCredentialsHolder

SSID = "Marzipan-Orbit-5G"
PASSPHRASE = "obsidian llama staple"


def residue(root: pathlib.Path) -> list[str]:
    return sorted(
        f"{p.relative_to(root)}: {m}"
        for p in root.rglob("*")
        if p.is_file()
        for m in (SSID, PASSPHRASE)
        if m.encode() in p.read_bytes()
    )


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> DataKeys:
    return DataKeys(StateLayout(tmp_path))


@pytest.fixture
def store(tmp_path: pathlib.Path, keys: DataKeys) -> FileProvisioningStore:
    return FileProvisioningStore(tmp_path, keys=keys)


class Forget:
    """The backend's ``forget`` as the holder calls it (the real ones: tests/wifi/test_forget)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str | None] = []
        self.fail = fail

    def __call__(self, ssid: str | None) -> int:
        self.calls.append(ssid)
        if self.fail:
            raise DeviceIOError("Wi-Fi backend unreachable")
        return 1


def test_the_saved_network_is_sealed(tmp_path: pathlib.Path, store: FileProvisioningStore) -> None:
    store.save_credentials(WifiCredentials(SSID, PASSPHRASE, hidden=True))
    raw = store.credentials_path.read_bytes()
    assert is_sealed(raw) and read_header(raw).domain == WIFI_DOMAIN
    assert residue(tmp_path) == []
    assert store.load_credentials() == WifiCredentials(SSID, hidden=True)
    assert store.saved_secured()
    # Another process, with its own DataKeys over the same key files, reads it too.
    other = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    assert other.load_credentials() == WifiCredentials(SSID, hidden=True)
    holder = WifiCredentialsHolder(other)
    assert holder.export_personal_data() == {
        "ssid": SSID, "hidden": True, "passphrase": "set, kept by the Wi-Fi system only"
    }


def test_after_the_key_is_destroyed_nothing_reads_and_the_erasure_still_forgets(
    tmp_path: pathlib.Path, store: FileProvisioningStore, keys: DataKeys
) -> None:
    store.save_credentials(WifiCredentials(SSID, PASSPHRASE))
    forget = Forget()
    holder = WifiCredentialsHolder(store, forget)  # made before the erasure, as the agent does
    assert keys.destroy(WIFI_DOMAIN) == 1  # what an erasure of "wifi" does first
    assert store.load_credentials() is None and not store.saved_secured()
    assert holder.export_personal_data() == {}
    # wpa_supplicant finds the network by SSID: the holder still knows it.
    assert holder.erase_personal_data() == 2  # the network and the file
    assert forget.calls == [SSID]
    assert not store.credentials_path.exists()
    assert store.remembered_ssid() is None


def test_a_failed_backend_keeps_what_finds_the_network_for_the_retry(
    tmp_path: pathlib.Path, store: FileProvisioningStore, keys: DataKeys
) -> None:
    store.save_credentials(WifiCredentials(SSID, PASSPHRASE))
    holder = WifiCredentialsHolder(store, Forget(fail=True))
    keys.destroy(WIFI_DOMAIN)
    with pytest.raises(DeviceIOError):
        holder.erase_personal_data()
    # Written back under a new key: readable by the retry, sealed like before.
    assert keys.live_numbers(WIFI_DOMAIN) == [2]
    assert residue(tmp_path) == []
    store.forget_remembered()  # the retry runs in a new process: nothing in memory
    retry_keys = DataKeys(StateLayout(tmp_path))
    forget = Forget()
    retry = WifiCredentialsHolder(FileProvisioningStore(tmp_path, keys=retry_keys), forget)
    retry_keys.destroy(WIFI_DOMAIN)
    assert retry.erase_personal_data() == 2
    assert forget.calls == [SSID] and not store.credentials_path.exists()


def test_rotation_reseals_the_file(
    tmp_path: pathlib.Path, store: FileProvisioningStore, keys: DataKeys
) -> None:
    store.save_credentials(WifiCredentials(SSID, PASSPHRASE))
    holder = WifiCredentialsHolder(store)
    keys.rotate(WIFI_DOMAIN)
    assert holder.reseal_personal_data() == 1
    assert holder.reseal_personal_data() == 0
    keys.retire_older(WIFI_DOMAIN)
    assert read_header(store.credentials_path.read_bytes()).number == 2
    assert store.load_credentials() == WifiCredentials(SSID) and store.saved_secured()
    assert residue(tmp_path) == []
    assert WifiCredentialsHolder(FileProvisioningStore(tmp_path / "none", keys=keys)) \
        .reseal_personal_data() == 0


def write_legacy(store: FileProvisioningStore, version: int) -> None:
    body: dict[str, object] = {"v": version, "ssid": SSID, "hidden": False}
    if version == 1:
        body["passphrase"] = PASSPHRASE
    else:
        body["secured"] = True
    store.credentials_path.parent.mkdir(parents=True, exist_ok=True)
    store.credentials_path.write_text(json.dumps(body))


@pytest.mark.parametrize("version", [1, 2])
def test_a_clear_wifi_json_is_read_then_sealed_by_a_reseal(
    tmp_path: pathlib.Path, store: FileProvisioningStore, version: int
) -> None:
    write_legacy(store, version)
    assert store.load_credentials() == WifiCredentials(SSID) and store.saved_secured()
    assert WifiCredentialsHolder(store).reseal_personal_data() == 1
    assert is_sealed(store.credentials_path.read_bytes())
    assert residue(tmp_path) == []
    assert store.load_credentials() == WifiCredentials(SSID) and store.saved_secured()


@pytest.mark.parametrize("version", [1, 2])
def test_the_daemon_seals_a_clear_wifi_json_at_start(
    tmp_path: pathlib.Path, store: FileProvisioningStore, version: int
) -> None:
    write_legacy(store, version)
    compose(AgentConfig(state_dir=tmp_path), Mode.DAEMON, builders=(build_provisioning,),
            environ={}).close()
    assert is_sealed(store.credentials_path.read_bytes())
    assert residue(tmp_path) == []
    assert store.load_credentials() == WifiCredentials(SSID) and store.saved_secured()
