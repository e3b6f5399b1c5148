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
    """Wi-Fi provisioning: the channels an installer uses and the Wi-Fi backend.

    Attributes:
        wifi_backend: How Wi-Fi is configured: ``"wpa_supplicant"``,
            ``"networkmanager"``, ``"esp_at"`` (an ESP AT-command modem) or ``"none"``.
        window_seconds: How long the provisioning window stays open once opened.
        connect_timeout_seconds: Time a Wi-Fi connection attempt may take.
        qr_scan_interval_seconds: How often a camera frame is searched for a
            provisioning QR code while the window is open.
        lan_enabled: Serve the provisioning API on the LAN.
        lan_bind_address: Address the LAN provisioning API listens on (wired hubs are on
            the LAN before Wi-Fi is set).
        lan_port (-): TCP port of the LAN provisioning API; 0 = any free port.
        lan_max_failed_attempts (attempts): Failed LAN authentications within
            ``lan_failure_window_seconds`` before a lockout.
        lan_failure_window_seconds: Sliding window those failures are counted in.
        lan_lockout_seconds: First lockout; it doubles with each further one.
        lan_lockout_max_seconds: Longest lockout.
        lan_max_connections (connections): Open LAN connections at once; more are
            answered 503 and closed.
        lan_max_connections_per_source (connections): Open LAN connections at once from
            one source address.
        lan_timeout_seconds: Time a whole LAN request may take to arrive.
        improv_serial_port: Serial device for Improv Wi-Fi; empty disables Improv.
        improv_baud: Speed of ``improv_serial_port``.
        improv_button_device: Linux input device of a setup button (e.g. gpio-keys'
            ``/dev/input/eventN``); when set, Improv takes credentials only after a press.
            Empty: no button.
        improv_button_key (-): Linux key code of that button (529 = KEY_WPS_BUTTON).
        improv_authorization_seconds: How long Improv accepts credentials after a press.
        redirect_url: URL sent in the Improv result after a successful connection;
            ``{ip}`` is replaced by the device's address.
        wpa_ctrl_path: wpa_supplicant control socket (``wifi_backend = "wpa_supplicant"``).
        wpa_client_dir: Directory the wpa_supplicant client binds its reply socket in;
            empty: the system temporary directory.
        nmcli_path: The ``nmcli`` program (``wifi_backend = "networkmanager"``).
        nmcli_interface: Wi-Fi interface NetworkManager uses; empty: its choice.
        esp_at_port: Serial device of the ESP AT modem (``wifi_backend = "esp_at"``).
        esp_at_baud: Speed of ``esp_at_port``.
    """

    wifi_backend: WifiBackendKind = WifiBackendKind.NONE
    window_seconds: int = dataclasses.field(default=600, metadata={"min": 30, "max": 86400})
    # Provisioning channels (agent/provisioning/, drivers/provisioning/).
    connect_timeout_seconds: float = dataclasses.field(
        default=30.0, metadata={"min": 1, "max": 300}
    )
    qr_scan_interval_seconds: float = dataclasses.field(
        default=1.0, metadata={"min": 0.1, "max": 60}
    )
    lan_enabled: bool = True
    # Where installers reach the LAN API; wired hubs are on the LAN before Wi-Fi is set.
    lan_bind_address: str = "0.0.0.0"  # noqa: S104
    lan_port: int = dataclasses.field(default=8470, metadata={"min": 0, "max": 65535})
    lan_max_failed_attempts: int = dataclasses.field(default=5, metadata={"min": 1, "max": 100})
    lan_failure_window_seconds: int = dataclasses.field(
        default=300, metadata={"min": 10, "max": 86400}
    )
    lan_lockout_seconds: int = dataclasses.field(default=60, metadata={"min": 1, "max": 86400})
    lan_lockout_max_seconds: int = dataclasses.field(
        default=3600, metadata={"min": 1, "max": 7 * 86400}
    )
    # Hostile LAN peers (drivers/httpserve.py): open connections at once, in all and per
    # source address (more are answered 503 and closed), and the time a whole request
    # may take to arrive; the cap is also held under 1/8 of the file descriptor limit.
    lan_max_connections: int = dataclasses.field(default=16, metadata={"min": 1, "max": 256})
    lan_max_connections_per_source: int = dataclasses.field(
        default=4, metadata={"min": 1, "max": 256}
    )
    lan_timeout_seconds: float = dataclasses.field(
        default=10.0, metadata={"min": 0.5, "max": 300.0}
    )
    # Empty: Improv over serial disabled.
    improv_serial_port: str = ""
    improv_baud: int = dataclasses.field(default=115200, metadata={"min": 9600, "max": 4000000})
    # A physical button (a Linux input event device, e.g. gpio-keys' /dev/input/eventN):
    # when set, Improv starts in "authorization required" and takes credentials only
    # for improv_authorization_seconds after a press of key improv_button_key
    # (a Linux key code; 0x211 = KEY_WPS_BUTTON). Empty: no button.
    improv_button_device: str = ""
    improv_button_key: int = dataclasses.field(default=0x211, metadata={"min": 1, "max": 0x2FF})
    improv_authorization_seconds: float = dataclasses.field(
        default=60.0, metadata={"min": 5, "max": 3600}
    )
    # Sent in the Improv result after a successful connection; "{ip}" is filled in.
    redirect_url: str = "http://{ip}/"
    # Wi-Fi backend options (drivers/wifi/); only the chosen backend's fields are used.
    wpa_ctrl_path: str = "/run/wpa_supplicant/wlan0"
    wpa_client_dir: str = ""  # where the client binds its reply socket; "" = system temp dir
    nmcli_path: str = "nmcli"
    nmcli_interface: str = ""
    esp_at_port: str = "/dev/ttyS1"
    esp_at_baud: int = dataclasses.field(default=115200, metadata={"min": 9600, "max": 4000000})
