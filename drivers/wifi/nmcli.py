"""Wi-Fi through NetworkManager's ``nmcli``.

The network is added as an in-memory profile (``save no``), brought up with
the key in a private 0600 ``passwd-file`` that is deleted right after, and
written to disk (``connection modify``, which persists) only once the
connection is activated with an IPv4 address; otherwise the profile is
deleted.  The key is never in argv, where any local user could read it.
``forget`` deletes every profile the agent added (account erasure).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

from agent.errors import DeviceIOError, DeviceTimeoutError
from agent.provisioning import nmcli
from agent.provisioning.wifi import (
    AccessPoint,
    ConnectOutcome,
    ConnectResult,
    Security,
    WifiCredentials,
    WifiStatus,
)
from drivers.wifi.locking import serialized

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 15.0
ADDRESS_POLL_INTERVAL = 0.5


class NmcliBackend:
    """:class:`agent.provisioning.wifi.WifiBackend` over ``nmcli``."""

    def __init__(self, nmcli_path: str = "nmcli", interface: str = "") -> None:
        self._nmcli = nmcli_path
        self._lock = threading.RLock()
        self._interface = interface

    def _run(
        self, arguments: list[str], timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [self._nmcli, *arguments]
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeviceTimeoutError(f"nmcli {arguments[:3]} timed out") from None
        except OSError as error:
            raise DeviceIOError(f"cannot run {self._nmcli}: {error.strerror}") from None

    def _checked(self, arguments: list[str], timeout: float = COMMAND_TIMEOUT) -> bytes:
        done = self._run(arguments, timeout)
        if done.returncode != 0:
            message = nmcli.output_text(done.stderr[:400]).strip()
            raise DeviceIOError(
                f"nmcli {' '.join(arguments[:3])} failed ({done.returncode}): {message}"
            )
        return done.stdout

    def _wifi_list(self, rescan: bool, timeout: float = COMMAND_TIMEOUT) -> nmcli.WifiList:
        arguments = ["-t", "-f", nmcli.WIFI_LIST_FIELDS, "device", "wifi", "list"]
        arguments += ["--rescan", "yes" if rescan else "no"]
        if self._interface:
            arguments += ["ifname", self._interface]
        listing = nmcli.parse_wifi_list(self._checked(arguments, timeout))
        if listing.rejected_rows:
            log.warning("skipped %d malformed nmcli wifi rows", listing.rejected_rows)
        return listing

    @serialized
    def scan(self, timeout: float) -> list[AccessPoint]:
        return self._wifi_list(rescan=True, timeout=max(timeout, 1.0)).access_points

    def _known_security(self, ssid: str) -> Security | None:
        with contextlib.suppress(DeviceIOError, DeviceTimeoutError):
            for ap in self._wifi_list(rescan=False).access_points:
                if ap.ssid == ssid:
                    return ap.security
        return None

    @serialized
    def connect(self, credentials: WifiCredentials, timeout: float) -> ConnectResult:
        secret_text = nmcli.passwd_file_text(credentials) if credentials.passphrase else None
        security = self._known_security(credentials.ssid) if credentials.passphrase else None
        name = f"{nmcli.PROFILE_PREFIX}{secrets.token_hex(4)}"
        added = self._checked(nmcli.add_arguments(credentials, name, self._interface, security))
        uuid = nmcli.parse_added_uuid(added)
        result = ConnectResult(ConnectOutcome.FAILED, detail="not attempted")
        try:
            result = self._activate(uuid, secret_text, time.monotonic() + timeout)
            if result.ok:
                # modify without --temporary writes the in-memory profile to disk.
                self._checked(
                    ["connection", "modify", "uuid", uuid, "connection.autoconnect", "yes"]
                )
        finally:
            if not result.ok:
                with contextlib.suppress(DeviceIOError, DeviceTimeoutError):
                    self._checked(["connection", "delete", "uuid", uuid])
        if credentials.passphrase and credentials.passphrase in result.detail:
            result = ConnectResult(result.outcome, result.ip_address, "activation failed")
        log.info("wifi connect to %r: %s %s", credentials.ssid, result.outcome.value, result.detail)
        return result

    def _activate(self, uuid: str, secret_text: str | None, deadline: float) -> ConnectResult:
        wait = max(1, int(deadline - time.monotonic()))
        arguments = ["-w", str(wait), "connection", "up", "uuid", uuid]
        if secret_text is None:
            done = self._run(arguments, wait + 5.0)
        else:
            with _secret_file(secret_text) as path:
                done = self._run([*arguments, "passwd-file", path], wait + 5.0)
        if done.returncode != 0:
            outcome, detail = nmcli.activation_failure(
                done.returncode, nmcli.output_text(done.stderr)
            )
            return ConnectResult(outcome, detail=detail)
        while True:
            fields = nmcli.parse_fields(
                self._checked(
                    ["-t", "-f", "GENERAL.STATE,IP4.ADDRESS", "connection", "show", "uuid", uuid]
                )
            )
            address = nmcli.first_ipv4(fields)
            if nmcli.is_activated(fields) and address is not None:
                return ConnectResult(ConnectOutcome.CONNECTED, ip_address=address)
            if time.monotonic() + ADDRESS_POLL_INTERVAL > deadline:
                return ConnectResult(ConnectOutcome.TIMEOUT, detail="activated but no IPv4 address")
            time.sleep(ADDRESS_POLL_INTERVAL)

    @serialized
    def forget(self, ssid: str | None) -> int:
        """Delete every Wi-Fi profile the agent added (its name says so), saved or not.

        By name, not by ``ssid``: each attempt adds a fresh profile, and none of
        them, whatever network it names, may outlive an account's erasure.
        """
        listing = self._checked(
            ["-t", "-f", nmcli.PROFILE_LIST_FIELDS, "connection", "show"]
        )
        uuids = nmcli.agent_profiles(listing)
        for uuid in uuids:
            self._checked(["connection", "delete", "uuid", uuid])
        log.info("removed %d NetworkManager profile(s) the agent created", len(uuids))
        return len(uuids)

    @serialized
    def status(self) -> WifiStatus:
        uuid = nmcli.active_wifi_uuid(
            self._checked(["-t", "-f", "TYPE,UUID", "connection", "show", "--active"])
        )
        if uuid is None:
            return WifiStatus(connected=False)
        fields = nmcli.parse_fields(
            self._checked(
                [
                    "-t",
                    "-f",
                    "GENERAL.STATE,IP4.ADDRESS,802-11-wireless.ssid",
                    "connection",
                    "show",
                    "uuid",
                    uuid,
                ]
            )
        )
        address = nmcli.first_ipv4(fields)
        connected = nmcli.is_activated(fields) and address is not None
        return WifiStatus(
            connected=connected, ssid=fields.get("802-11-wireless.ssid"), ip_address=address
        )

    def close(self) -> None:
        """Nothing is held open between nmcli runs."""


@contextlib.contextmanager
def _secret_file(text: str) -> Iterator[str]:
    # mkdtemp and mkstemp both create owner-only (0700 / 0600) entries.
    directory = tempfile.mkdtemp(prefix="edge-nm-")
    path = os.path.join(directory, "secrets")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        yield path
    finally:
        # Zeroed before the unlink: a temp directory on disk keeps no passphrase.
        with contextlib.suppress(OSError), open(path, "r+b") as handle:
            handle.write(b"\0" * os.fstat(handle.fileno()).st_size)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(directory)
