"""The one interface every Wi-Fi backend implements (drivers/wifi/*).

Backends: wpa_supplicant control socket, NetworkManager (nmcli), ESP-AT module
over serial.  ``connect`` persists the network only once the connection is
confirmed (associated and an address obtained); on failure it removes what it
added and reports why.  A passphrase never appears in a repr, log or argv.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol, runtime_checkable


class Security(enum.Enum):
    OPEN = "open"
    WEP = "wep"
    WPA_PSK = "wpa-psk"
    WPA2_PSK = "wpa2-psk"
    WPA3_SAE = "wpa3-sae"
    ENTERPRISE = "enterprise"
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class AccessPoint:
    ssid: str
    bssid: str
    signal_dbm: int
    security: Security
    frequency_mhz: int = 0


@dataclasses.dataclass(frozen=True)
class WifiCredentials:
    ssid: str
    passphrase: str | None = dataclasses.field(default=None, repr=False)
    hidden: bool = False

    def __repr__(self) -> str:
        hidden = ", hidden" if self.hidden else ""
        secret = "set" if self.passphrase else "none"
        return f"WifiCredentials(ssid={self.ssid!r}, passphrase=<{secret}>{hidden})"

    __str__ = __repr__


class ConnectOutcome(enum.Enum):
    CONNECTED = "connected"
    WRONG_KEY = "wrong_key"
    NOT_FOUND = "network_not_found"
    TIMEOUT = "timeout"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class ConnectResult:
    outcome: ConnectOutcome
    ip_address: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is ConnectOutcome.CONNECTED


@dataclasses.dataclass(frozen=True)
class WifiStatus:
    connected: bool
    ssid: str | None = None
    bssid: str | None = None
    ip_address: str | None = None


class WifiBackend(Protocol):
    def scan(self, timeout: float) -> list[AccessPoint]:
        """Trigger a scan and return the access points seen, strongest first."""
        ...

    def connect(self, credentials: WifiCredentials, timeout: float) -> ConnectResult:
        """Join the network; save it only when connected with an address."""
        ...

    def status(self) -> WifiStatus: ...

    def close(self) -> None: ...


@runtime_checkable
class ForgetsNetworks(Protocol):
    """A backend that can remove the saved networks the agent created (account erasure)."""

    def forget(self, ssid: str | None) -> int:
        """Remove them (``ssid``: the one the agent saved, when known); returns how many went."""
        ...
