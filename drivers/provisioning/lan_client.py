"""The installer's client for the LAN provisioning API (see lan_server.py)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

from agent.errors import (
    ConnectionLostError,
    DecodeError,
    DeviceTimeoutError,
    EdgeAgentError,
    NotFoundError,
    PolicyError,
    TooLargeError,
    VerificationError,
)
from agent.ports import Clock
from agent.provisioning.limits import LockedOutError, WindowClosedError
from agent.provisioning.pake import (
    InstallerPake,
    OwnerBinding,
    decode_owner_binding,
    encode_owner_binding,
)
from agent.provisioning.wifi import WifiCredentials
from drivers.clock import SystemClock
from drivers.provisioning.lan_server import PREFIX, b64decode, b64encode

MAX_REPLY = 64 * 1024


def _error_for(status: int, message: str, retry_after: str | None) -> EdgeAgentError:
    if status == 429:
        return LockedOutError(float(retry_after or 0))
    if status == 410:
        return WindowClosedError(message)
    if status == 403:
        return VerificationError(f"device refused: {message} (wrong verification code?)")
    if status == 404:
        return NotFoundError(message)
    if status == 413:
        return TooLargeError(message)
    if 400 <= status < 500:
        return PolicyError(f"device refused the request: {message}")
    return ConnectionLostError(f"device error {status}: {message}")


class LanClient:
    def __init__(
        self,
        base_url: str,
        timeout: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise DecodeError(f"device URL must be http(s)://host:port, got {base_url!r}")
        self._base = f"{parsed.scheme}://{parsed.netloc}{PREFIX}"
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock or SystemClock()

    def _call(self, route: str, body: Mapping[str, object] | None = None) -> dict[str, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 -- scheme checked in __init__
            self._base + route,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                raw = response.read(MAX_REPLY + 1)
        except urllib.error.HTTPError as exc:
            try:
                reply = json.loads(exc.read(MAX_REPLY))
                message = str(reply.get("error", ""))[:200]
            except (ValueError, AttributeError, OSError):
                message = exc.reason
            raise _error_for(exc.code, message, exc.headers.get("Retry-After")) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionLostError(f"cannot reach the device: {exc}") from exc
        if len(raw) > MAX_REPLY:
            raise TooLargeError("device reply too large")
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise DecodeError("device reply is not JSON") from exc
        if not isinstance(reply, dict):
            raise DecodeError("device reply is not a JSON object")
        return reply

    def info(self) -> dict[str, object]:
        return self._call("info")

    def networks(self) -> list[dict[str, object]]:
        reply = self._call("networks")
        networks = reply.get("networks")
        if not isinstance(networks, list):
            raise DecodeError("device sent no network list")
        return [n for n in networks if isinstance(n, dict) and isinstance(n.get("ssid"), str)]

    def authenticate(self, code: str, serial_number: str) -> InstallerPake:
        """Run SPAKE2 and key confirmation; the device proves the code back."""
        pake = InstallerPake(code, serial_number)
        reply = self._call("pake", {"pake": b64encode(pake.start())})
        session_id = reply.get("session")
        if not isinstance(session_id, str):
            raise DecodeError("device sent no session")
        confirm_a = pake.finish(session_id, b64decode(reply.get("pake"), "pake"))
        reply = self._call("confirm", {"session": session_id, "confirm": b64encode(confirm_a)})
        pake.verify_device(b64decode(reply.get("confirm"), "confirm"))
        return pake

    def bind(self, pake: InstallerPake, account: str, owner_public_key: bytes) -> str:
        """Make ``owner_public_key`` (raw Ed25519) the device's owner; returns the device id.

        Needs a session from :meth:`authenticate`.  A device that already has an
        owner refuses (PolicyError) and keeps its owner.
        """
        # The device checks the same; failing here names the mistake without a round trip.
        request = OwnerBinding(account, owner_public_key)
        request = decode_owner_binding(encode_owner_binding(request))
        seq = pake.next_seq()
        sealed = pake.seal_owner_binding(request, seq)
        reply = self._call(
            "bind", {"session": pake.session_id, "seq": seq, "sealed": b64encode(sealed)}
        )
        return pake.open_bound(b64decode(reply.get("sealed"), "sealed"), seq)

    def provision(
        self,
        pake: InstallerPake,
        credentials: WifiCredentials,
        *,
        wait: float = 90.0,
        poll_interval: float = 1.0,
        progress: Callable[[str], None] = lambda _: None,
    ) -> dict[str, object]:
        """Send the sealed credentials and follow progress until connected or failed."""
        seq = pake.next_seq()
        sealed = pake.seal_credentials(credentials, seq)
        self._call(
            "credentials", {"session": pake.session_id, "seq": seq, "sealed": b64encode(sealed)}
        )
        progress(f"credentials for {credentials.ssid!r} sent; device is connecting")
        deadline = self._clock.monotonic() + wait
        while self._clock.monotonic() < deadline:
            status_seq = pake.next_seq()
            request = {
                "session": pake.session_id,
                "seq": status_seq,
                "tag": b64encode(pake.status_request_tag(status_seq)),
            }
            reply = self._call("status", request)
            status = pake.open_status(b64decode(reply.get("sealed"), "sealed"), status_seq)
            state = status.get("state")
            if state == "connected":
                progress(f"device connected (address {status.get('ip_address', 'unknown')})")
                return status
            if state == "failed":
                raise PolicyError(
                    f"device could not join {credentials.ssid!r}: {status.get('detail')}"
                )
            progress(f"device state: {state}")
            self._sleep(poll_interval)
        raise DeviceTimeoutError("device did not report a result in time")
