"""Wi-Fi through wpa_supplicant's control interface (UNIX datagram socket).

Like ``wpa_ctrl.c``: the client binds its own socket path (the daemon replies
to it) and connects to ``/run/wpa_supplicant/<ifname>``.  A second socket is
ATTACHed for unsolicited ``<N>CTRL-EVENT-...`` messages while scanning or
connecting, so requests and events never interleave on one socket.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pathlib
import secrets
import socket
import tempfile
import threading
import time
from types import TracebackType

from agent.errors import (
    ConnectionLostError,
    DecodeError,
    DeviceIOError,
    DeviceTimeoutError,
    PolicyError,
)
from agent.provisioning import wpa_ctrl
from agent.provisioning.wifi import (
    AccessPoint,
    ConnectResult,
    WifiCredentials,
    WifiStatus,
)
from drivers.wifi.locking import serialized

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
STATUS_POLL_INTERVAL = 0.25
_RECV_BYTES = wpa_ctrl.MAX_REPLY_BYTES + 1
_counter = itertools.count()


class WpaControl:
    """One control-interface connection; ``attach=True`` makes it an event monitor."""

    def __init__(self, ctrl_path: str, client_dir: str, *, attach: bool = False) -> None:
        name = f"edge-wpa-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        self._local_path = str(pathlib.Path(client_dir or tempfile.gettempdir()) / name)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(self._local_path)
            self._sock.connect(ctrl_path)
        except OSError as error:
            self.close()
            raise ConnectionLostError(
                f"cannot reach wpa_supplicant at {ctrl_path}: {error.strerror}"
            ) from None
        self.attached = False
        if attach:
            if not wpa_ctrl.is_ok(self.request("ATTACH")):
                self.close()
                raise DeviceIOError("wpa_supplicant refused ATTACH")
            self.attached = True

    def _drain(self) -> None:
        """Drop late replies to an earlier request that timed out."""
        self._sock.setblocking(False)
        try:
            while True:
                self._sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:
            raise ConnectionLostError(f"wpa_supplicant socket failed: {error.strerror}") from None
        finally:
            self._sock.setblocking(True)

    def request(
        self, command: str, *, label: str | None = None, timeout: float = REQUEST_TIMEOUT
    ) -> bytes:
        """Send ``command`` and return the reply; ``label`` replaces it in errors."""
        what = label if label is not None else command.split(" ", 1)[0]
        if not self.attached:
            self._drain()
        deadline = time.monotonic() + timeout
        try:
            self._sock.send(command.encode("utf-8"))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeoutError(f"wpa_supplicant did not answer {what}")
                self._sock.settimeout(remaining)
                reply = self._sock.recv(_RECV_BYTES)
                if not wpa_ctrl.is_event(reply):
                    return reply
        except TimeoutError:
            raise DeviceTimeoutError(f"wpa_supplicant did not answer {what}") from None
        except OSError as error:
            raise ConnectionLostError(f"wpa_supplicant {what} failed: {error.strerror}") from None

    def next_event(self, timeout: float) -> wpa_ctrl.WpaEvent | None:
        """The next parsable event within ``timeout``; None when none came."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(_RECV_BYTES)
            except TimeoutError:
                return None
            except OSError as error:
                raise ConnectionLostError(
                    f"wpa_supplicant monitor failed: {error.strerror}"
                ) from None
            if not wpa_ctrl.is_event(data):
                continue
            try:
                return wpa_ctrl.parse_event(data)
            except DecodeError as error:
                log.warning("ignoring malformed wpa_supplicant event: %s", error)
        return None

    def close(self) -> None:
        if getattr(self, "attached", False):
            with contextlib.suppress(Exception):
                self.request("DETACH", timeout=0.5)
            self.attached = False
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self._local_path)

    def __enter__(self) -> WpaControl:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class WpaSupplicantBackend:
    """:class:`agent.provisioning.wifi.WifiBackend` over wpa_supplicant."""

    def __init__(self, ctrl_path: str, client_dir: str = "") -> None:
        self._ctrl_path = ctrl_path
        self._lock = threading.RLock()
        self._client_dir = client_dir
        self._control = WpaControl(ctrl_path, client_dir)

    def _monitor(self) -> WpaControl:
        return WpaControl(self._ctrl_path, self._client_dir, attach=True)

    def _expect_ok(self, command: str) -> None:
        reply = self._control.request(command)
        if not wpa_ctrl.is_ok(reply):
            raise PolicyError(f"wpa_supplicant rejected {command}: {reply[:40]!r}")

    def _set_network(self, network_id: int, setting: wpa_ctrl.NetworkSetting) -> None:
        # The label stands in for the command in errors: the value may be the key.
        label = f"SET_NETWORK {network_id} {setting.name}"
        reply = self._control.request(f"{label} {setting.value}", label=label)
        if not wpa_ctrl.is_ok(reply) and setting.fallback is not None:
            reply = self._control.request(f"{label} {setting.fallback}", label=label)
        if not wpa_ctrl.is_ok(reply):
            raise PolicyError(f"wpa_supplicant rejected {label}: {reply[:40]!r}")

    @serialized
    def scan(self, timeout: float) -> list[AccessPoint]:
        with self._monitor() as monitor:
            reply = self._control.request("SCAN").strip()
            if reply not in (b"OK", b"FAIL-BUSY"):
                raise DeviceIOError(f"wpa_supplicant refused SCAN: {reply[:40]!r}")
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                event = monitor.next_event(remaining)
                if event is not None and event.kind in (
                    wpa_ctrl.EventKind.SCAN_RESULTS,
                    wpa_ctrl.EventKind.SCAN_FAILED,
                ):
                    break
        results = wpa_ctrl.parse_scan_results(self._control.request("SCAN_RESULTS"))
        if results.rejected_rows:
            log.warning("skipped %d malformed SCAN_RESULTS rows", results.rejected_rows)
        return results.access_points

    @serialized
    def connect(self, credentials: WifiCredentials, timeout: float) -> ConnectResult:
        settings = wpa_ctrl.network_settings(credentials)
        enabled_before = [
            nid
            for nid, enabled in wpa_ctrl.parse_network_list(
                self._control.request("LIST_NETWORKS")
            ).items()
            if enabled
        ]
        with self._monitor() as monitor:
            network_id = wpa_ctrl.parse_network_id(self._control.request("ADD_NETWORK"))
            result: ConnectResult | None = None
            try:
                for setting in settings:
                    self._set_network(network_id, setting)
                self._expect_ok(f"SELECT_NETWORK {network_id}")
                result = self._await_connection(monitor, network_id, timeout)
            finally:
                if result is not None and result.ok:
                    result = self._persist(result, enabled_before)
                else:
                    self._forget(network_id, enabled_before)
        assert result is not None
        log.info("wifi connect to %r: %s %s", credentials.ssid, result.outcome.value, result.detail)
        return result

    def _await_connection(
        self, monitor: WpaControl, network_id: int, timeout: float
    ) -> ConnectResult:
        tracker = wpa_ctrl.ConnectTracker(network_id, time.monotonic() + timeout)
        next_poll = 0.0
        while tracker.result is None:
            now = time.monotonic()
            if now >= next_poll:
                tracker.on_status(wpa_ctrl.parse_status(self._control.request("STATUS")))
                next_poll = now + STATUS_POLL_INTERVAL
            tracker.on_time(now)
            if tracker.result is not None:
                break
            event = monitor.next_event(max(0.0, min(next_poll, tracker.deadline) - now))
            if event is not None:
                tracker.on_event(event)
        return tracker.result

    def _persist(self, result: ConnectResult, enabled_before: list[int]) -> ConnectResult:
        # SELECT_NETWORK disabled every other network; save them as they were.
        for nid in enabled_before:
            self._control.request(f"ENABLE_NETWORK {nid}")
        if not wpa_ctrl.is_ok(self._control.request("SAVE_CONFIG")):
            log.warning("connected, but wpa_supplicant could not SAVE_CONFIG")
            return ConnectResult(result.outcome, result.ip_address, "connected; not saved")
        return result

    def _forget(self, network_id: int, enabled_before: list[int]) -> None:
        try:
            self._control.request(f"REMOVE_NETWORK {network_id}")
            for nid in enabled_before:
                self._control.request(f"ENABLE_NETWORK {nid}")
        except (DeviceTimeoutError, ConnectionLostError) as error:
            log.warning("could not remove unconfirmed network %d: %s", network_id, error)

    @serialized
    def forget(self, ssid: str | None) -> int:
        """Remove the saved networks named ``ssid`` and save the configuration.

        wpa_supplicant keeps no mark of who added a network, so the SSID the agent
        saved is how its network is found; without one there is nothing to remove
        (a failed attempt's network was removed when it failed).
        """
        if ssid is None:
            return 0
        listed = wpa_ctrl.parse_network_list(self._control.request("LIST_NETWORKS"))
        removed = 0
        for nid in listed:
            reply = self._control.request(f"GET_NETWORK {nid} ssid")
            if wpa_ctrl.stored_ssid_is(reply, ssid):
                self._expect_ok(f"REMOVE_NETWORK {nid}")
                removed += 1
        # The file on disk is what must not keep it (memory holds all the file had).
        if removed and not wpa_ctrl.is_ok(self._control.request("SAVE_CONFIG")):
            raise DeviceIOError("wpa_supplicant could not SAVE_CONFIG after removing networks")
        log.info("removed %d wpa_supplicant network(s)", removed)
        return removed

    @serialized
    def status(self) -> WifiStatus:
        return wpa_ctrl.wifi_status(wpa_ctrl.parse_status(self._control.request("STATUS")))

    def ping(self) -> bool:
        return self._control.request("PING").strip() == b"PONG"

    def close(self) -> None:
        self._control.close()
