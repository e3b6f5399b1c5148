"""Wi-Fi backends behind :class:`agent.provisioning.wifi.WifiBackend`.

``open_backend(settings)`` picks one by ``[provisioning] wifi_backend``:
wpa_supplicant's control socket, NetworkManager's nmcli, or an ESP-AT module.
"""

from __future__ import annotations

from agent.errors import ConfigError
from agent.provisioning.settings import ProvisioningSettings, WifiBackendKind
from agent.provisioning.wifi import WifiBackend


def open_backend(settings: ProvisioningSettings) -> WifiBackend:
    """Open the configured backend.

    Raises ConfigError for ``none`` and a TransportError when the daemon, tool
    or serial port cannot be reached.
    """
    kind = settings.wifi_backend
    if kind is WifiBackendKind.WPA_SUPPLICANT:
        from drivers.wifi.wpa import WpaSupplicantBackend

        return WpaSupplicantBackend(settings.wpa_ctrl_path, settings.wpa_client_dir)
    if kind is WifiBackendKind.NETWORK_MANAGER:
        from drivers.wifi.nmcli import NmcliBackend

        return NmcliBackend(settings.nmcli_path, settings.nmcli_interface)
    if kind is WifiBackendKind.ESP_AT:
        from drivers.wifi.esp_at import EspAtBackend

        return EspAtBackend(settings.esp_at_port, settings.esp_at_baud)
    raise ConfigError("provisioning.wifi_backend", "no Wi-Fi backend is configured")
