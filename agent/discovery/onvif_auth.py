"""WS-Security UsernameToken (PasswordDigest) for the ONVIF device service, sans I/O.

``PasswordDigest = Base64(SHA-1(nonce + created + password))``: to check it the
device needs the password itself, not a hash of it, so the credentials are kept
sealed in a 0600 file (``drivers/discovery/onvif_store.py``), never in the clear
on disk and never in a log line.

A token is accepted once: its ``Created`` must lie within ``skew`` seconds of
the device clock (either way) and not before the agent started, and its nonce
is remembered until the ``Created`` window has passed, so a replay is refused
while it could still be fresh.  Failed digests (a wrong user or password) count
against an :class:`~agent.provisioning.limits.AttemptLimiter` whose state
survives restarts (``drivers/limitstore.py``); while it locks out, no digest is
even computed.  Everything here is called from the HTTP server's threads: one
lock guards the limiter and the nonce table.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import enum
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable

from agent.discovery.onvif_soap import PASSWORD_DIGEST, UsernameToken
from agent.provisioning.limits import AttemptLimiter, LockedOutError

MAX_NONCE_BYTES = 64
# Created is written to the second by most clients (zeep drops the fraction):
# a token made in the second the agent started is still after its start.
START_SLACK_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class OnvifCredentials:
    username: str
    password: str = dataclasses.field(repr=False)


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """The WS-Security UsernameToken Profile 1.0 PasswordDigest."""
    # SHA-1 is what the profile (and every ONVIF client) uses; it is not our choice.
    raw = hashlib.sha1(  # noqa: S324
        nonce + created.encode("utf-8") + password.encode("utf-8")
    ).digest()
    return base64.b64encode(raw).decode("ascii")


def parse_created(value: str) -> float:
    """``wsu:Created`` (xs:dateTime, UTC when no offset is given) as epoch seconds."""
    if not 0 < len(value) <= 40:
        raise ValueError("Created has no sensible length")
    parsed = datetime.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


class Verdict(enum.Enum):
    OK = "ok"
    NO_USER = "no ONVIF user is set yet; the owner sets one (onvif.set_credentials)"
    MISSING = "a WS-Security UsernameToken is required"
    LOCKED_OUT = "too many failed attempts"
    PASSWORD_TYPE = "only PasswordDigest is accepted"  # noqa: S105 (a message)
    MALFORMED = "malformed UsernameToken"
    STALE = "Created is outside the accepted window"
    WRONG = "wrong username or password"
    REPLAYED = "this UsernameToken was already used"
    BUSY = "too many fresh tokens in use; retry shortly"


@dataclasses.dataclass(frozen=True)
class AuthResult:
    verdict: Verdict
    retry_after: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


class NonceTable:
    """Nonces seen in tokens that verified, each until its token can no longer be fresh."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, nonce: bytes, now: float) -> bool:
        expires = self._expiry.get(nonce)
        return expires is not None and expires >= now

    def add(self, nonce: bytes, expires: float, now: float) -> bool:
        """Remember ``nonce`` until ``expires``; False if the table is full of live ones."""
        if len(self._expiry) >= self.capacity:
            self._purge(now)
        if len(self._expiry) >= self.capacity:
            # Never forget a live nonce to make room: that would reopen its replay.
            return False
        self._expiry[nonce] = expires
        return True

    def _purge(self, now: float) -> None:
        for nonce, expires in list(self._expiry.items()):
            if expires < now:
                del self._expiry[nonce]


class Authenticator:
    def __init__(
        self,
        credentials: Callable[[], OnvifCredentials | None],
        limiter: AttemptLimiter,
        *,
        skew_seconds: float,
        started_at: float,
        max_nonces: int,
    ) -> None:
        self._credentials = credentials
        self.limiter = limiter
        self._skew = skew_seconds
        self._started_at = started_at
        self.nonces = NonceTable(max_nonces)
        self._lock = threading.Lock()
        self.failures = 0  # wrong digests since start (for tests and the status)

    def check(self, token: UsernameToken | None, now: float) -> AuthResult:
        credentials = self._credentials()
        if credentials is None:
            return AuthResult(Verdict.NO_USER)
        if token is None:
            return AuthResult(Verdict.MISSING)
        with self._lock:
            try:
                self.limiter.check(now)
            except LockedOutError as exc:
                return AuthResult(Verdict.LOCKED_OUT, exc.retry_after)
            return self._verify(token, credentials, now)

    def _verify(
        self, token: UsernameToken, credentials: OnvifCredentials, now: float
    ) -> AuthResult:
        if token.password_type != PASSWORD_DIGEST:
            # PasswordText would put the password on the wire: refused unread.
            return AuthResult(Verdict.PASSWORD_TYPE)
        try:
            created = parse_created(token.created)
            nonce = base64.b64decode(token.nonce, validate=True)
        except (ValueError, binascii.Error, OverflowError):
            return AuthResult(Verdict.MALFORMED)
        if not 0 < len(nonce) <= MAX_NONCE_BYTES:
            return AuthResult(Verdict.MALFORMED)
        if abs(now - created) > self._skew or created < self._started_at - START_SLACK_SECONDS:
            return AuthResult(Verdict.STALE)
        expected = password_digest(nonce, token.created, credentials.password)
        user_ok = hmac.compare_digest(token.username.encode(), credentials.username.encode())
        digest_ok = hmac.compare_digest(token.password.encode(), expected.encode())
        if not (user_ok and digest_ok):
            self.failures += 1
            self.limiter.record_failure(now)
            return AuthResult(Verdict.WRONG)
        if self.nonces.seen(nonce, now):
            return AuthResult(Verdict.REPLAYED)
        if not self.nonces.add(nonce, created + self._skew, now):
            return AuthResult(Verdict.BUSY)
        # Clears the failure count and the lockout escalation (written only if it changed).
        self.limiter.record_success()
        return AuthResult(Verdict.OK)
