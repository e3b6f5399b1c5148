"""Configuration of Wi-Fi provisioning (section ``[provisioning]``)."""

from __future__ import annotations

import dataclasses
import enum


class WifiBackendKind(enum.Enum):
    WPA_SUPPLICANT = "wpa_supplicant"
    NETWORK_MANAGER = "networkmanager"
    ESP_AT = "esp_at"
    NONE = "none"


@dataclasses.dataclass(frozen=True)
class ProvisioningSettings:
    wifi_backend: WifiBackendKind = WifiBackendKind.NONE
    window_seconds: int = dataclasses.field(default=600, metadata={"min": 30, "max": 86400})
