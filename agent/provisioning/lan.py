"""The LAN provisioning API's logic, independent of HTTP.

Sequence per installer session:

1. ``start(msg_a)`` -> ``(session_id, msg_b)`` (SPAKE2 exchange)
2. ``confirm(session_id, confirm_a)`` -> ``confirm_b``; a wrong proof counts as
   a failed attempt, ends the session and says nothing else
3. ``submit(session_id, seq, sealed)`` -> credentials to try (AES-GCM)
4. ``status(session_id, seq, tag)`` -> sealed progress (connecting/connected/failed)
5. ``bind(session_id, seq, sealed, bind_owner)`` -> sealed ``{device_id}``: the
   owner's account and public key (AES-GCM), before or after step 3, or alone

Steps 1-3 and 5 need the provisioning window open and no lockout; binding is
also allowed to the session whose own Wi-Fi credentials just closed the window
(it proved the code while the window was open).  Each session is one guess of
the code: it is dropped on a failed proof, and confirmed sessions cannot be
confirmed again.  Callers serialise calls (the driver holds a lock).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

from agent.errors import DecodeError, NotFoundError, PolicyError, VerificationError
from agent.provisioning.limits import AttemptLimiter, ProvisioningWindow
from agent.provisioning.pake import DevicePake, OwnerBinding
from agent.provisioning.wifi import ConnectResult, WifiCredentials

MAX_SESSIONS = 8
SESSION_TTL = 300.0
MAX_SEQ = 2**63 - 1

# The owner binding (account, raw public key) -> the new device id; raises
# PolicyError when the device already has an owner.
BindOwner = Callable[[OwnerBinding], str]


def _check_seq(seq: int) -> int:
    if isinstance(seq, bool) or not 0 < seq <= MAX_SEQ:
        raise DecodeError("sequence number out of range")
    return seq


@dataclasses.dataclass
class _Session:
    pake: DevicePake
    created_at: float
    credentials_seq: int = -1
    status_seq: int = -1
    bind_seq: int = -1
    # What this session bound, so a retry after a lost answer gets the same id.
    bound: tuple[bytes, str] | None = None
    state: str = "authenticating"
    detail: str = ""
    ip_address: str | None = None


@dataclasses.dataclass(frozen=True)
class LanLimits:
    max_failures: int = 5
    failure_window: float = 300.0
    lockout: float = 60.0
    lockout_max: float = 3600.0


class LanProvisioning:
    def __init__(
        self,
        serial_number: str,
        verification_code: str,
        window: ProvisioningWindow,
        limits: LanLimits,
    ) -> None:
        self.serial_number = serial_number
        self._code = verification_code
        self.window = window
        self.limiter = AttemptLimiter(
            limits.max_failures, limits.failure_window, limits.lockout, limits.lockout_max
        )
        self._sessions: dict[str, _Session] = {}

    def _guard(self, now: float) -> None:
        self.window.require_open(now)
        self.limiter.check(now)

    def _session(self, session_id: str, now: float) -> _Session:
        self._expire(now)
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFoundError("no such provisioning session")
        return session

    def _expire(self, now: float) -> None:
        for sid, session in list(self._sessions.items()):
            if now - session.created_at > SESSION_TTL and session.state != "connecting":
                del self._sessions[sid]

    def info(self, now: float) -> dict[str, object]:
        return {
            "serial_number": self.serial_number,
            "window": self.window.state(now).value,
            "remaining_seconds": round(self.window.remaining(now)),
        }

    def start(self, msg_a: bytes, now: float) -> tuple[str, bytes]:
        self._guard(now)
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(
                (s for s in self._sessions.items() if s[1].state != "connecting"),
                key=lambda item: item[1].created_at,
                default=None,
            )
            if oldest is None:
                raise PolicyError("too many provisioning sessions")
            del self._sessions[oldest[0]]
        session_id = secrets.token_urlsafe(16)
        pake = DevicePake(self._code, self.serial_number, session_id)
        msg_b = pake.respond(msg_a)
        self._sessions[session_id] = _Session(pake, now)
        return session_id, msg_b

    def confirm(self, session_id: str, confirm_a: bytes, now: float) -> bytes:
        self._guard(now)
        session = self._session(session_id, now)
        if session.pake.confirmed:
            raise VerificationError("session is already confirmed")
        try:
            confirm_b = session.pake.check_confirmation(confirm_a)
        except VerificationError:
            del self._sessions[session_id]
            self.limiter.record_failure(now)
            raise
        session.state = "confirmed"
        return confirm_b

    def submit(self, session_id: str, seq: int, sealed: bytes, now: float) -> WifiCredentials:
        self._guard(now)
        _check_seq(seq)
        session = self._session(session_id, now)
        if seq <= session.credentials_seq:
            raise VerificationError("replayed credentials message")
        if session.state == "connecting":
            raise PolicyError("a connection attempt is already running")
        credentials = session.pake.open_credentials(sealed, seq)
        session.credentials_seq = seq
        session.state = "connecting"
        session.detail = ""
        return credentials

    def connect_finished(self, session_id: str, result: ConnectResult, now: float) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.state = "connected" if result.ok else "failed"
            session.detail = result.outcome.value
            session.ip_address = result.ip_address
        if result.ok:
            self.window.succeed(now)
            self.limiter.record_success()

    def status(self, session_id: str, seq: int, tag: bytes, now: float) -> bytes:
        _check_seq(seq)
        session = self._session(session_id, now)
        session.pake.check_status_request(seq, tag)
        if seq <= session.status_seq:
            raise VerificationError("replayed status request")
        session.status_seq = seq
        body: dict[str, object] = {"state": session.state, "detail": session.detail}
        if session.ip_address:
            body["ip_address"] = session.ip_address
        return session.pake.seal_status(body, seq)

    def bind(
        self, session_id: str, seq: int, sealed: bytes, now: float, bind_owner: BindOwner
    ) -> bytes:
        """Bind the owner named in ``sealed``; the sealed answer carries the device id."""
        self.limiter.check(now)
        _check_seq(seq)
        session = self._session(session_id, now)
        if session.state != "connected":
            # The window is what lets a code holder act at all; only the session
            # that just closed it by provisioning the Wi-Fi may still finish.
            self.window.require_open(now)
        if not session.pake.confirmed:
            # An honest installer always confirms first; this is a guess that
            # skipped the proof, so it costs an attempt like a wrong one.
            del self._sessions[session_id]
            self.limiter.record_failure(now)
            raise VerificationError("session is not confirmed")
        if seq <= session.bind_seq:
            raise VerificationError("replayed binding message")
        request = session.pake.open_owner_binding(sealed, seq)
        session.bind_seq = seq
        if session.bound is not None and session.bound[0] == request.owner_key:
            device_id = session.bound[1]
        else:
            device_id = bind_owner(request)
            session.bound = (request.owner_key, device_id)
        return session.pake.seal_bound(device_id, seq)
