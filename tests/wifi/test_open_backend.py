"""open_backend picks the configured backend; backends serialise concurrent callers."""

from __future__ import annotations

import threading

import pytest

from agent.errors import ConfigError, ConnectionLostError, DeviceIOError
from agent.provisioning.settings import ProvisioningSettings, WifiBackendKind
from drivers.wifi import open_backend
from drivers.wifi.esp_at import EspAtBackend
from drivers.wifi.nmcli import NmcliBackend
from drivers.wifi.wpa import WpaSupplicantBackend
from tests.wifi.fake_esp import FakeEspModule
from tests.wifi.fake_wpa import FakeWpaSupplicant


def test_none_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        open_backend(ProvisioningSettings())
    assert caught.value.path == "provisioning.wifi_backend"


def test_each_kind_opens_its_backend(fake_wpa: FakeWpaSupplicant, short_dir: str) -> None:
    wpa = open_backend(
        ProvisioningSettings(
            wifi_backend=WifiBackendKind.WPA_SUPPLICANT,
            wpa_ctrl_path=fake_wpa.path,
            wpa_client_dir=short_dir,
        )
    )
    assert isinstance(wpa, WpaSupplicantBackend) and wpa.ping()
    wpa.close()
    nm = open_backend(ProvisioningSettings(wifi_backend=WifiBackendKind.NETWORK_MANAGER))
    assert isinstance(nm, NmcliBackend)
    module = FakeEspModule({})
    try:
        esp = open_backend(
            ProvisioningSettings(wifi_backend=WifiBackendKind.ESP_AT, esp_at_port=module.port)
        )
        assert isinstance(esp, EspAtBackend) and not esp.status().connected
        esp.close()
    finally:
        module.stop()


def test_unreachable_backends_are_transport_errors(short_dir: str) -> None:
    with pytest.raises(ConnectionLostError):
        open_backend(
            ProvisioningSettings(
                wifi_backend=WifiBackendKind.WPA_SUPPLICANT, wpa_ctrl_path=f"{short_dir}/none"
            )
        )
    with pytest.raises(ConnectionLostError):
        open_backend(
            ProvisioningSettings(
                wifi_backend=WifiBackendKind.ESP_AT, esp_at_port=f"{short_dir}/tty"
            )
        )
    nm = open_backend(
        ProvisioningSettings(
            wifi_backend=WifiBackendKind.NETWORK_MANAGER, nmcli_path=f"{short_dir}/nmcli"
        )
    )
    with pytest.raises(DeviceIOError):
        nm.status()


def test_concurrent_callers_do_not_cross_replies(
    fake_wpa: FakeWpaSupplicant, short_dir: str
) -> None:
    fake_wpa.scan_rows = ["02:00:00:00:01:00\t2412\t-60\t[ESS]\tNet"]
    backend = WpaSupplicantBackend(fake_wpa.path, short_dir)
    errors: list[BaseException] = []

    def hammer(work: str) -> None:
        try:
            for _ in range(15):
                if work == "scan":
                    assert backend.scan(timeout=1.0)[0].ssid == "Net"
                else:
                    assert not backend.status().connected
        except BaseException as error:  # collected and re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in ("scan", "status", "status")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    backend.close()
    assert errors == []
