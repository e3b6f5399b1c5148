"""The device side of a technician's log pull, as a pure state machine.

Sequence (every message is one frame, see :mod:`agent.logs.frames`)::

    technician                         device
    {"t": "hello", "v": 1}        ->
                                  <-   {"t": "challenge", "nonce": 16 bytes, "methods": [...]}
    {"t": "auth", "method": "code"|"token", "mac": HMAC-SHA256(secret, CONTEXT + nonce)}  ->
                                  <-   {"t": "auth_ok"} | {"t": "error", ...}
    {"t": "get", "query": {...}}  ->
                                  <-   {"t": "meta", "size", "chunks", "sha256", ...}
                                  <-   {"t": "chunk", "i": 0, "data": ...} ... {"t": "end"}

A nonce answers exactly one ``auth`` attempt, so a recorded exchange cannot be
replayed.  Failed attempts count against an :class:`AuthLimiter` shared by
every channel (serial, LAN), which locks technicians out for a while.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agent import limitstate
from agent.errors import DecodeError, PolicyError
from agent.logs import codes
from agent.logs.bundle import Bundle, BundleQuery
from agent.ports import AuditSink

PROTOCOL_VERSION = 1
NONCE_BYTES = 16
AUTH_CONTEXT = b"edge-agent/log-pull/v1\x00"

SecretSource = Callable[[], str | None]
BundleProvider = Callable[[BundleQuery, float], Bundle]


def auth_mac(secret: str, nonce: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), AUTH_CONTEXT + nonce, hashlib.sha256).digest()


class AuthLimiter:
    """Locks authentication out after ``max_failures`` failures in a row.

    Shared by the serial console and the LAN endpoint's request threads, hence
    the lock: a burst of parallel guesses must not lose a count.  Its state
    survives restarts (:mod:`agent.limitstate`): ``on_change`` runs after every
    change, outside the lock.
    """

    def __init__(self, max_failures: int, lockout_seconds: float) -> None:
        self._max = max_failures
        self._lockout = lockout_seconds
        self._failures = 0
        self._locked_until = 0.0
        self._lock = threading.Lock()
        self.on_change: Callable[[], None] | None = None

    def retry_after(self, now: float) -> float:
        with self._lock:
            return max(0.0, self._locked_until - now)

    def failed(self, now: float) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self._max:
                self._locked_until = now + self._lockout
                self._failures = 0
        if self.on_change is not None:
            self.on_change()

    def succeeded(self) -> None:
        with self._lock:
            changed, self._failures = self._failures != 0, 0
        if changed and self.on_change is not None:
            self.on_change()

    def snapshot(self, now: float) -> dict[str, object]:
        with self._lock:
            return {
                **limitstate.header(now),
                "failures": self._failures,
                "locked_until": self._locked_until,
            }

    def restore(self, data: Mapping[str, object], now: float) -> None:
        shift = limitstate.clock_shift(data, now)
        failures = limitstate.count(data, "failures", max(0, self._max - 1))
        locked_until = limitstate.number(data, "locked_until") + shift
        with self._lock:
            self._failures = failures
            # However the record came to say more, no lockout outlasts one lockout period.
            self._locked_until = min(locked_until, now + self._lockout)

    def fail_safe(self, now: float) -> None:
        """An unreadable record: locked out for one lockout period from now."""
        with self._lock:
            self._failures = 0
            self._locked_until = max(self._locked_until, now + self._lockout)


@dataclasses.dataclass(frozen=True)
class TechnicianSecrets:
    """Where the device finds the secrets a technician may prove knowledge of."""

    verification_code: SecretSource
    technician_token: SecretSource = lambda: None

    def by_method(self) -> dict[str, SecretSource]:
        return {"code": self.verification_code, "token": self.technician_token}

    def check_mac(self, method: object, nonce: bytes, mac: object) -> bool:
        source = self.by_method().get(method) if isinstance(method, str) else None
        if source is None or not isinstance(mac, bytes):
            return False
        secret = source()
        if not secret:
            return False
        return hmac.compare_digest(auth_mac(secret, nonce), mac)

    def check_bearer(self, presented: str) -> str | None:
        """The method whose secret equals ``presented`` (LAN API), else None."""
        for method, source in self.by_method().items():
            secret = source()
            if secret and hmac.compare_digest(secret.encode(), presented.encode()):
                return method
        return None


def error(code: codes.ErrorCode, reason: str, **extra: Any) -> dict[str, Any]:
    return {"t": "error", "code": code.code, "reason": reason, **extra}


class PullSession:
    """One technician connection; ``handle(message, now)`` returns messages to send."""

    def __init__(
        self,
        technician_secrets: TechnicianSecrets,
        limiter: AuthLimiter,
        bundles: BundleProvider,
        *,
        chunk_bytes: int,
        channel: str = "serial",
        audit: AuditSink | None = None,
        nonce_source: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._secrets = technician_secrets
        self._limiter = limiter
        self._bundles = bundles
        self._chunk_bytes = chunk_bytes
        self._channel = channel
        self._audit = audit
        self._nonce_source = nonce_source
        self._nonce: bytes | None = None
        self.authenticated_by: str | None = None

    def handle(self, message: dict[str, Any], now: float) -> list[dict[str, Any]]:
        kind = message["t"]
        if kind == "hello":
            self._nonce = self._nonce_source(NONCE_BYTES)
            self.authenticated_by = None
            return [
                {
                    "t": "challenge",
                    "v": PROTOCOL_VERSION,
                    "nonce": self._nonce,
                    "methods": sorted(self._secrets.by_method()),
                }
            ]
        if kind == "auth":
            return [self._authenticate(message, now)]
        if kind == "get":
            if self.authenticated_by is None:
                return [error(codes.AUTH_FAILED, "authenticate first")]
            raw_query = message.get("query", {})
            if not isinstance(raw_query, dict):
                raise DecodeError("query must be a map")
            return self._transfer(BundleQuery.from_args(raw_query), now)
        if kind == "bye":
            self.authenticated_by = None
            return []
        raise PolicyError(f"unexpected message type {kind[:20]!r}")

    def _authenticate(self, message: dict[str, Any], now: float) -> dict[str, Any]:
        wait = self._limiter.retry_after(now)
        if wait > 0:
            return error(codes.AUTH_LOCKED_OUT, "too many failed attempts", retry_after=wait)
        nonce, self._nonce = self._nonce, None
        if nonce is None:
            return error(codes.AUTH_FAILED, "no challenge outstanding; send hello")
        method = message.get("method")
        if not self._secrets.check_mac(method, nonce, message.get("mac")):
            self._limiter.failed(now)
            return error(codes.AUTH_FAILED, "authentication failed")
        self._limiter.succeeded()
        self.authenticated_by = str(method)
        return {"t": "auth_ok", "method": self.authenticated_by}

    def _transfer(self, query: BundleQuery, now: float) -> list[dict[str, Any]]:
        bundle = self._bundles(query, now)
        data = bundle.data
        chunks = [data[i : i + self._chunk_bytes] for i in range(0, len(data), self._chunk_bytes)]
        if self._audit is not None:
            self._audit.record(
                "logs.pull",
                {
                    "channel": self._channel,
                    "method": self.authenticated_by or "",
                    "bytes": len(data),
                    "lines": bundle.lines,
                    "truncated": bundle.truncated,
                },
                now,
            )
        out: list[dict[str, Any]] = [
            {
                "t": "meta",
                "size": len(data),
                "chunks": len(chunks),
                "sha256": hashlib.sha256(data).digest(),
                "lines": bundle.lines,
                "truncated": bundle.truncated,
            }
        ]
        out.extend({"t": "chunk", "i": i, "data": chunk} for i, chunk in enumerate(chunks))
        out.append({"t": "end"})
        return out
