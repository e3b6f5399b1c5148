"""Trying Wi-Fi credentials from any channel and keeping only what worked.

Every channel (camera QR, Improv serial, LAN API) ends here: the backend
connects, and only a confirmed connection is saved to the state store and
recorded in the audit log (SSID, channel and outcome -- never the passphrase).
Bindings from any channel (binding QR, LAN API) end here too: the owner's key
goes to the principal store, the account to the state store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from agent.auth.principals import PrincipalStore, key_id
from agent.errors import EdgeAgentError, PolicyError
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
        on_attempt: Callable[[WifiCredentials], None] | None = None,
    ) -> None:
        self._backend = backend
        self._store = store
        self._clock = clock
        self._audit = audit
        self._timeout = connect_timeout
        # Told of every attempt before anything (the backend included) can log it:
        # the log redactor learns the SSID and passphrase even of one that fails.
        self._on_attempt = on_attempt
        # One radio: attempts from different channels must not interleave.
        self._lock = threading.Lock()
        self._provisioned = store.has_credentials()

    @property
    def provisioned(self) -> bool:
        return self._provisioned

    def apply(self, credentials: WifiCredentials, channel: str) -> ConnectResult:
        with self._lock:
            if self._on_attempt is not None:
                self._on_attempt(credentials)
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

    def bind_owner(
        self, principals: PrincipalStore, account: str, owner_key: bytes, channel: str
    ) -> str:
        """Make ``owner_key`` the owner's and remember ``account``; returns the new device id.

        The key goes first: the principal store refuses a second owner in the
        same transaction that would add it, and a refusal must change nothing,
        the account file included.
        """
        now = self._clock.now()
        try:
            device_id = principals.bind_owner(owner_key, account, now, source=channel)
        except PolicyError:
            log.info("binding via %s refused: the device already has an owner", channel)
            self._record("provisioning.bind_refused", {"channel": channel})
            raise
        self._store.save_account(account)
        # Not the account itself: it is personal data no redaction pattern recognises.
        log.info("device bound to a new owner via %s", channel)
        # The key id (as the authoriser names signers), so the trail says which key.
        owner = key_id(owner_key).hex()[:16]
        self._record("provisioning.bound", {"channel": channel, "owner": owner})
        return device_id

    def _record(self, kind: str, detail: dict[str, object]) -> None:
        if self._audit is not None:
            self._audit.record(kind, detail, self._clock.now())
