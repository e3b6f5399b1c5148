"""The device end of Improv serial as a pure state machine.

The driver feeds it decoded frames (or decode errors) and writes back the
frames it returns.  A Wi-Fi settings RPC does not connect here: the reply asks
the driver to connect (with the backend, off this object) and to report the
:class:`ConnectResult` through :meth:`ImprovDevice.connect_finished`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from agent.errors import DecodeError
from agent.provisioning import improv
from agent.provisioning.improv import Command, ErrorCode, Frame, FrameType, State
from agent.provisioning.wifi import AccessPoint, ConnectResult, Security, WifiCredentials


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


def redirect_url(template: str, result: ConnectResult) -> str:
    """Fill ``{ip}`` in the configured URL; no ``str.format`` on operator text."""
    if "{ip}" in template and not result.ip_address:
        return ""
    return template.replace("{ip}", result.ip_address or "")


class ImprovDevice:
    def __init__(
        self,
        info: DeviceInfo,
        scan: Callable[[], Sequence[AccessPoint]],
        redirect_template: str,
        *,
        provisioned: bool = False,
    ) -> None:
        self._info = info
        self._scan = scan
        self._redirect_template = redirect_template
        self.state = State.PROVISIONED if provisioned else State.AUTHORIZED

    def receive(self, item: Frame | DecodeError) -> ImprovReply:
        if isinstance(item, DecodeError):
            return ImprovReply((improv.encode_error(ErrorCode.INVALID_PACKET),))
        if item.type != FrameType.RPC_COMMAND:
            # states/results are only ever sent by the device; ignore echoes
            return ImprovReply()
        try:
            rpc = improv.parse_command(item)
        except improv.UnknownCommandError:
            return ImprovReply((improv.encode_error(ErrorCode.UNKNOWN_RPC),))
        except DecodeError:
            return ImprovReply((improv.encode_error(ErrorCode.INVALID_PACKET),))
        if rpc.command == Command.REQUEST_CURRENT_STATE:
            return ImprovReply((improv.encode_state(self.state),))
        if rpc.command == Command.REQUEST_DEVICE_INFO:
            strings = (
                self._info.firmware,
                self._info.version,
                self._info.chip,
                self._info.device_name,
            )
            encoded = [s.encode("utf-8")[:64] for s in strings]
            return ImprovReply((improv.encode_result(rpc.command, encoded),))
        if rpc.command == Command.REQUEST_SCANNED_NETWORKS:
            return ImprovReply(tuple(self._scan_results()))
        return self._wifi_settings(rpc.payload)

    def _wifi_settings(self, payload: bytes) -> ImprovReply:
        if self.state == State.PROVISIONING:
            return ImprovReply((improv.encode_error(ErrorCode.UNKNOWN),))
        try:
            ssid, password = improv.decode_wifi_settings(payload)
        except DecodeError:
            return ImprovReply((improv.encode_error(ErrorCode.INVALID_PACKET),))
        self.state = State.PROVISIONING
        credentials = WifiCredentials(ssid=ssid, passphrase=password or None)
        return ImprovReply(
            (improv.encode_error(ErrorCode.NONE), improv.encode_state(self.state)),
            connect=credentials,
        )

    def connect_finished(self, result: ConnectResult) -> list[bytes]:
        if result.ok:
            self.state = State.PROVISIONED
            url = redirect_url(self._redirect_template, result)
            strings = [url.encode("utf-8")[:200]] if url else []
            return [
                improv.encode_state(self.state),
                improv.encode_result(Command.SEND_WIFI_SETTINGS, strings),
            ]
        self.state = State.AUTHORIZED
        return [improv.encode_error(ErrorCode.UNABLE_TO_CONNECT), improv.encode_state(self.state)]

    def _scan_results(self) -> list[bytes]:
        frames: list[bytes] = []
        seen: set[str] = set()
        for ap in self._scan():
            if not ap.ssid or ap.ssid in seen:
                continue
            seen.add(ap.ssid)
            secured = "NO" if ap.security is Security.OPEN else "YES"
            strings = [ap.ssid.encode("utf-8")[:32], str(ap.signal_dbm).encode(), secured.encode()]
            frames.append(improv.encode_result(Command.REQUEST_SCANNED_NETWORKS, strings))
        frames.append(improv.encode_result(Command.REQUEST_SCANNED_NETWORKS, []))
        return frames
