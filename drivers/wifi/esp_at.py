"""Wi-Fi through an Espressif module running ESP-AT firmware on a serial port.

The join is made with ``AT+SYSSTORE=0`` so the module keeps the new network in
RAM only; once it has joined and holds an address the join is repeated with
``AT+SYSSTORE=1``, which is what writes it to the module's flash.  A failed
attempt is dropped with ``AT+CWQAP`` and never reaches flash.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import serial

from agent.errors import ConnectionLostError, DeviceIOError, DeviceTimeoutError
from agent.provisioning import esp_at
from agent.provisioning.wifi import (
    AccessPoint,
    ConnectOutcome,
    ConnectResult,
    WifiCredentials,
    WifiStatus,
)
from drivers.wifi.locking import serialized

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 3.0
JOIN_REPLY_MARGIN = 1.0
BUSY_RETRIES = 3
BUSY_PAUSE = 0.3
IP_POLL_INTERVAL = 0.5


class EspAtBackend:
    """:class:`agent.provisioning.wifi.WifiBackend` over an ESP-AT serial link."""

    def __init__(self, port: str, baud: int = 115200) -> None:
        try:
            self._port = serial.Serial(port, baud, timeout=0.05, write_timeout=2)
        except (serial.SerialException, OSError) as error:
            raise ConnectionLostError(f"cannot open ESP-AT port {port}: {error}") from None
        self._name = port
        self._lock = threading.RLock()
        # Echo would repeat the password back to us; switch it off first.
        self._command(b"ATE0\r\n", "ATE0")

    def _read_reply(self, command: bytes, label: str, timeout: float) -> esp_at.AtReply:
        exchange = esp_at.AtExchange(command)
        lines = esp_at.LineAssembler()
        deadline = time.monotonic() + timeout
        try:
            self._port.reset_input_buffer()
            self._port.write(command)
            while time.monotonic() < deadline:
                data = self._port.read(max(1, self._port.in_waiting))
                for line in lines.feed(data):
                    reply = exchange.feed_line(line)
                    if reply is not None:
                        if lines.overlong_lines:
                            log.warning(
                                "%s: dropped %d overlong lines", label, lines.overlong_lines
                            )
                        return reply
        except (serial.SerialException, OSError) as error:
            raise DeviceIOError(
                f"ESP-AT port {self._name} failed during {label}: {error}"
            ) from None
        if lines.pending:
            raise DeviceTimeoutError(
                f"{label}: module stopped mid-line ({len(lines.pending)} bytes, no result)"
            )
        raise DeviceTimeoutError(f"{label}: no result from the module in {timeout:.1f} s")

    def _command(
        self, command: bytes, label: str, timeout: float = COMMAND_TIMEOUT
    ) -> esp_at.AtReply:
        """Run ``command``; ``label`` is all that errors and logs ever show of it."""
        for attempt in range(BUSY_RETRIES + 1):
            reply = self._read_reply(command, label, timeout)
            if reply.status is not esp_at.AtStatus.BUSY:
                return reply
            if attempt < BUSY_RETRIES:
                time.sleep(BUSY_PAUSE)
        raise DeviceTimeoutError(f"{label}: module stayed busy")

    def _ok(self, command: bytes, label: str) -> esp_at.AtReply:
        reply = self._command(command, label)
        if reply.status is not esp_at.AtStatus.OK:
            raise DeviceIOError(f"{label} answered {reply.status.value}")
        return reply

    @serialized
    def scan(self, timeout: float) -> list[AccessPoint]:
        reply = self._command(b"AT+CWLAP\r\n", "AT+CWLAP", timeout)
        if reply.status is not esp_at.AtStatus.OK:
            raise DeviceIOError(f"AT+CWLAP answered {reply.status.value}")
        found = esp_at.parse_cwlap(reply.info)
        if found.rejected_lines:
            log.warning("skipped %d malformed +CWLAP lines", found.rejected_lines)
        return found.access_points

    def _station_ip(self) -> str | None:
        return esp_at.parse_station_ip(self._ok(b"AT+CIPSTA?\r\n", "AT+CIPSTA?").info)

    @serialized
    def connect(self, credentials: WifiCredentials, timeout: float) -> ConnectResult:
        join = esp_at.join_command(credentials)
        deadline = time.monotonic() + timeout
        self._ok(b"AT+SYSSTORE=0\r\n", "AT+SYSSTORE=0")
        result = ConnectResult(ConnectOutcome.FAILED, detail="not attempted")
        try:
            result = self._join_and_confirm(join, deadline)
            if result.ok:
                result = self._persist(join, result, deadline)
        finally:
            if not result.ok:
                with contextlib.suppress(DeviceIOError, DeviceTimeoutError):
                    self._command(b"AT+CWQAP\r\n", "AT+CWQAP")
            with contextlib.suppress(DeviceIOError, DeviceTimeoutError):
                self._command(b"AT+SYSSTORE=1\r\n", "AT+SYSSTORE=1")
        log.info("wifi connect to %r: %s %s", credentials.ssid, result.outcome.value, result.detail)
        return result

    def _join_and_confirm(self, join: bytes, deadline: float) -> ConnectResult:
        # The module bounds the join itself (jap_timeout); allow for its reply.
        reply = self._command(join, "AT+CWJAP", self._join_wait(deadline))
        if reply.status is not esp_at.AtStatus.OK:
            outcome, detail = esp_at.join_failure(reply.cwjap_code())
            return ConnectResult(outcome, detail=detail)
        while True:
            address = self._station_ip()
            if address is not None:
                return ConnectResult(ConnectOutcome.CONNECTED, ip_address=address)
            if time.monotonic() + IP_POLL_INTERVAL > deadline:
                return ConnectResult(ConnectOutcome.TIMEOUT, detail="joined but no address")
            time.sleep(IP_POLL_INTERVAL)

    @staticmethod
    def _join_wait(deadline: float) -> float:
        return max(0.5, deadline - time.monotonic()) + JOIN_REPLY_MARGIN

    def _persist(self, join: bytes, result: ConnectResult, deadline: float) -> ConnectResult:
        self._ok(b"AT+SYSSTORE=1\r\n", "AT+SYSSTORE=1")
        reply = self._command(join, "AT+CWJAP", self._join_wait(deadline))
        if reply.status is not esp_at.AtStatus.OK:
            log.warning("joined, but the module did not store the network")
            return ConnectResult(result.outcome, result.ip_address, "connected; not saved")
        return ConnectResult(result.outcome, self._station_ip() or result.ip_address)

    @serialized
    def status(self) -> WifiStatus:
        joined = esp_at.parse_joined_ap(self._ok(b"AT+CWJAP?\r\n", "AT+CWJAP?").info)
        if joined is None:
            return WifiStatus(connected=False)
        address = self._station_ip()
        return WifiStatus(
            connected=address is not None, ssid=joined.ssid, bssid=joined.bssid, ip_address=address
        )

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()
