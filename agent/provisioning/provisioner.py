"""Trying Wi-Fi credentials from any channel and keeping only what worked.

Every channel (camera QR, Improv serial, LAN API) ends here: the backend
connects, and only a confirmed connection is saved to the state store and
recorded in the audit log (SSID, channel and outcome -- never the passphrase).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from agent.errors import EdgeAgentError
from agent.ports import AuditSink, Clock
from agent.provisioning.wifi import ConnectOutcome, ConnectResult, WifiBackend, WifiCredentials

log = logging.getLogger(__name__)


class ProvisioningStore(Protocol):
    def save_credentials(self, credentials: WifiCredentials) -> None:
        """Persist working credentials durably and privately."""
        ...

    def has_credentials(self) -> bool: ...

    def save_account(self, account: str) -> None:
        """Persist the account this device is bound to."""
        ...


class Provisioner:
    def __init__(
        self,
        backend: WifiBackend,
        store: ProvisioningStore,
        clock: Clock,
        *,
        audit: AuditSink | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self._backend = backend
        self._store = store
        self._clock = clock
        self._audit = audit
        self._timeout = connect_timeout
        # One radio: attempts from different channels must not interleave.
        self._lock = threading.Lock()
        self._provisioned = store.has_credentials()

    @property
    def provisioned(self) -> bool:
        return self._provisioned

    def apply(self, credentials: WifiCredentials, channel: str) -> ConnectResult:
        with self._lock:
            try:
                result = self._backend.connect(credentials, self._timeout)
            except EdgeAgentError as exc:
                # bad data (e.g. an SSID the backend refuses) or a transport failure:
                # either way this attempt failed and the channel must hear about it
                result = ConnectResult(ConnectOutcome.FAILED, detail=type(exc).__name__)
            if result.ok:
                self._store.save_credentials(credentials)
                self._provisioned = True
            log.info(
                "provisioning via %s for SSID %r: %s",
                channel,
                credentials.ssid,
                result.outcome.value,
            )
            self._record(
                "provisioning.wifi",
                # No SSID: the audit trail outlives erasures, so it holds no personal values.
                {"channel": channel, "outcome": result.outcome.value},
            )
            return result

    def bind_account(self, account: str, channel: str) -> None:
        self._store.save_account(account)
        # Not the account itself: it is personal data no redaction pattern recognises.
        log.info("device bound to an account via %s", channel)
        self._record("provisioning.bound", {"channel": channel})

    def _record(self, kind: str, detail: dict[str, object]) -> None:
        if self._audit is not None:
            self._audit.record(kind, detail, self._clock.now())
