"""The device end of Improv serial as a pure state machine.

The driver feeds it decoded frames (or decode errors) with the monotonic time
and writes back the frames it returns.  A Wi-Fi settings RPC does not connect
here: the reply asks the driver to connect (with the backend, off this object)
and to report the :class:`ConnectResult` through
:meth:`ImprovDevice.connect_finished`.

Conformance with https://www.improv-wifi.com/serial/:

* every RPC command is answered first with the error state ``0`` (no error),
  then with its result or an error update;
* "request current state" on a provisioned device is answered with the state
  *and* the result a successful provisioning gives (the redirect URL), which is
  what the official SDK waits for when it reconnects;
* a provisioned device refuses new credentials (``not authorized``) unless the
  owner reopened provisioning; the other channels follow the same rule;
* with a physical button configured, the device starts in "authorization
  required" and accepts credentials only for ``authorization_seconds`` after a
  press (the Improv BLE state machine, which serial shares).

The current state is derived, not stored: :meth:`ImprovDevice.tick` sends an
update to listening clients whenever it changes (a press, an authorization
running out, another channel provisioning the device).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from agent.errors import DecodeError
from agent.provisioning import improv
from agent.provisioning.improv import Command, ErrorCode, Frame, FrameType, State
from agent.provisioning.wifi import AccessPoint, ConnectResult, Security, WifiCredentials

log = logging.getLogger(__name__)

MAX_INFO_BYTES = 64
MAX_URL_BYTES = 200


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    firmware: str
    version: str
    chip: str
    device_name: str


@dataclasses.dataclass(frozen=True)
class ImprovReply:
    frames: tuple[bytes, ...] = ()
    connect: WifiCredentials | None = None


def redirect_url(template: str, ip_address: str | None) -> str:
    """Fill ``{ip}`` in the configured URL; no ``str.format`` on operator text."""
    if "{ip}" in template and not ip_address:
        return ""
    return template.replace("{ip}", ip_address or "")


def _truncate(text: str, limit: int) -> bytes:
    """At most ``limit`` bytes of UTF-8, never cutting a character in two."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def _never() -> bool:
    return False


def _no_address() -> str | None:
    return None


class ImprovDevice:
    """One Improv service; ``provisioned``/``reopened``/``address`` are asked when needed.

    ``provisioned``: the device has a working network (from any channel).
    ``reopened``: the owner reopened provisioning (the provisioning window is open).
    ``address``: the device's address now, for the redirect URL.
    ``authorization_seconds``: None without a physical button; else how long a
    press authorizes.
    """

    def __init__(
        self,
        info: DeviceInfo,
        scan: Callable[[], Sequence[AccessPoint]],
        redirect_template: str,
        *,
        provisioned: Callable[[], bool] = _never,
        reopened: Callable[[], bool] = _never,
        address: Callable[[], str | None] = _no_address,
        authorization_seconds: float | None = None,
    ) -> None:
        self._info = info
        self._scan = scan
        self._redirect_template = redirect_template
        self._provisioned = provisioned
        self._reopened = reopened
        self._address = address
        self._authorization_seconds = authorization_seconds
        self._authorized_until = float("-inf")
        self._connecting = False
        self._provisioned_here = False
        self._last_ip: str | None = None
        self._reported = self.state(float("-inf"))

    # --- state ---------------------------------------------------------------------

    @property
    def requires_authorization(self) -> bool:
        return self._authorization_seconds is not None

    def is_provisioned(self) -> bool:
        return self._provisioned_here or self._provisioned()

    def _authorized(self, now: float) -> bool:
        return not self.requires_authorization or now < self._authorized_until

    def state(self, now: float) -> State:
        if self._connecting:
            return State.PROVISIONING
        if self.is_provisioned():
            return State.PROVISIONED
        if not self._authorized(now):
            return State.AUTHORIZATION_REQUIRED
        return State.AUTHORIZED

    def authorize(self, now: float) -> None:
        """The physical button was pressed: credentials are taken for a while."""
        if self._authorization_seconds is not None:
            self._authorized_until = now + self._authorization_seconds
            log.info("Improv authorized by the button for %.0f s", self._authorization_seconds)

    def tick(self, now: float) -> list[bytes]:
        """The current state, if it changed since a client last heard it."""
        state = self.state(now)
        if state == self._reported:
            return []
        return [self._state_frame(state)]

    def _state_frame(self, state: State) -> bytes:
        self._reported = state
        return improv.encode_state(state)

    def refusal(self, now: float) -> str | None:
        """Why Wi-Fi settings would be refused now (None: they are taken)."""
        if self._connecting:
            return "a connection attempt is already running"
        if self.is_provisioned() and not self._reopened():
            return "the device is already provisioned; the owner must reopen provisioning first"
        if not self._authorized(now):
            return "press the device's button first"
        return None

    # --- frames --------------------------------------------------------------------

    def receive(self, item: Frame | DecodeError, now: float) -> ImprovReply:
        if isinstance(item, DecodeError):
            return ImprovReply((improv.encode_error(ErrorCode.INVALID_PACKET),))
        if item.type != FrameType.RPC_COMMAND:
            # states/results are only ever sent by the device; ignore echoes
            return ImprovReply()
        # The spec: an RPC command first clears the error state, whatever follows.
        cleared = improv.encode_error(ErrorCode.NONE)
        try:
            rpc = improv.parse_command(item)
        except improv.UnknownCommandError:
            return ImprovReply((cleared, improv.encode_error(ErrorCode.UNKNOWN_RPC)))
        except DecodeError:
            return ImprovReply((cleared, improv.encode_error(ErrorCode.INVALID_PACKET)))
        if rpc.command == Command.REQUEST_CURRENT_STATE:
            return ImprovReply((cleared, *self._current_state(now)))
        if rpc.command == Command.REQUEST_DEVICE_INFO:
            strings = (
                self._info.firmware,
                self._info.version,
                self._info.chip,
                self._info.device_name,
            )
            encoded = [_truncate(s, MAX_INFO_BYTES) for s in strings]
            return ImprovReply((cleared, improv.encode_result(rpc.command, encoded)))
        if rpc.command == Command.REQUEST_SCANNED_NETWORKS:
            return ImprovReply((cleared, *self._scan_results()))
        return self._wifi_settings(rpc.payload, now, cleared)

    def _current_state(self, now: float) -> list[bytes]:
        state = self.state(now)
        frames = [self._state_frame(state)]
        if state == State.PROVISIONED:
            # What a successful provisioning answered: how the SDK learns the URL again.
            frames.append(improv.encode_result(Command.REQUEST_CURRENT_STATE, self._url()))
        return frames

    def _url(self, address: str | None = None) -> list[bytes]:
        address = address or self._address() or self._last_ip
        url = redirect_url(self._redirect_template, address)
        return [_truncate(url, MAX_URL_BYTES)] if url else []

    def _wifi_settings(self, payload: bytes, now: float, cleared: bytes) -> ImprovReply:
        try:
            ssid, password = improv.decode_wifi_settings(payload)
        except DecodeError:
            return ImprovReply((cleared, improv.encode_error(ErrorCode.INVALID_PACKET)))
        refused = self.refusal(now)
        if refused is not None:
            log.info("Improv: Wi-Fi settings refused: %s", refused)
            code = ErrorCode.UNKNOWN if self._connecting else ErrorCode.NOT_AUTHORIZED
            return ImprovReply((cleared, improv.encode_error(code)))
        self._connecting = True
        credentials = WifiCredentials(ssid=ssid, passphrase=password or None)
        return ImprovReply(
            (cleared, self._state_frame(State.PROVISIONING)),
            connect=credentials,
        )

    def connect_finished(self, result: ConnectResult, now: float) -> list[bytes]:
        self._connecting = False
        if result.ok:
            self._provisioned_here = True
            self._last_ip = result.ip_address
            # Used: the next change needs the owner (and the button) again.
            self._authorized_until = float("-inf")
            return [
                self._state_frame(State.PROVISIONED),
                improv.encode_result(Command.SEND_WIFI_SETTINGS, self._url(result.ip_address)),
            ]
        if self.requires_authorization and self._authorized(now):
            # The BLE spec: after a failed attempt the authorization timeout starts over.
            self.authorize(now)
        # State first, then the error: a client (the official SDK) fails the request as
        # the error arrives, and must already see the device ready for another try.
        return [
            self._state_frame(self.state(now)),
            improv.encode_error(ErrorCode.UNABLE_TO_CONNECT),
        ]

    def _scan_results(self) -> list[bytes]:
        frames: list[bytes] = []
        seen: set[str] = set()
        for ap in self._scan():
            if not ap.ssid or ap.ssid in seen:
                continue
            seen.add(ap.ssid)
            secured = "NO" if ap.security is Security.OPEN else "YES"
            strings = [_truncate(ap.ssid, 32), str(ap.signal_dbm).encode(), secured.encode()]
            frames.append(improv.encode_result(Command.REQUEST_SCANNED_NETWORKS, strings))
        frames.append(improv.encode_result(Command.REQUEST_SCANNED_NETWORKS, []))
        return frames
