"""An in-process stand-in for a Wi-Fi radio behind the WifiBackend Protocol.

No radio can run in the test environment, so this double plays the access
points: ``networks`` maps SSID -> passphrase (None for open).  ``connect``
answers like a backend would: CONNECTED with an address when the passphrase
matches, WRONG_KEY when it does not, NOT_FOUND for an unknown SSID; ``forced``
overrides the outcome.  Every call is recorded for assertions.
"""

from __future__ import annotations

import threading

from agent.provisioning.wifi import (
    AccessPoint,
    ConnectOutcome,
    ConnectResult,
    Security,
    WifiCredentials,
    WifiStatus,
)

DOUBLE_ADDRESS = "192.0.2.10"  # TEST-NET-1: a label only, never contacted


class RadioDouble:
    def __init__(
        self,
        networks: dict[str, str | None] | None = None,
        *,
        forced: ConnectOutcome | None = None,
        connect_delay: float = 0.0,
    ) -> None:
        self.networks = dict(networks or {})
        self.forced = forced
        self.connect_delay = connect_delay
        self.connect_calls: list[WifiCredentials] = []
        self.scan_calls = 0
        self._status = WifiStatus(connected=False)

    def scan(self, timeout: float) -> list[AccessPoint]:
        self.scan_calls += 1
        return [
            AccessPoint(
                ssid=ssid,
                bssid=f"02:00:00:00:00:{index:02x}",
                signal_dbm=-40 - 5 * index,
                security=Security.OPEN if key is None else Security.WPA2_PSK,
            )
            for index, (ssid, key) in enumerate(self.networks.items())
        ]

    def connect(self, credentials: WifiCredentials, timeout: float) -> ConnectResult:
        self.connect_calls.append(credentials)
        if self.connect_delay:
            threading.Event().wait(self.connect_delay)
        outcome = self.forced or self._outcome(credentials)
        if outcome is not ConnectOutcome.CONNECTED:
            return ConnectResult(outcome, detail=outcome.value)
        self._status = WifiStatus(True, credentials.ssid, "02:00:00:00:00:00", DOUBLE_ADDRESS)
        return ConnectResult(ConnectOutcome.CONNECTED, ip_address=DOUBLE_ADDRESS)

    def _outcome(self, credentials: WifiCredentials) -> ConnectOutcome:
        if credentials.ssid not in self.networks:
            return ConnectOutcome.NOT_FOUND
        if self.networks[credentials.ssid] != credentials.passphrase:
            return ConnectOutcome.WRONG_KEY
        return ConnectOutcome.CONNECTED

    def status(self) -> WifiStatus:
        return self._status

    def close(self) -> None:
        return None
