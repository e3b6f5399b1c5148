"""The ESP-AT Wi-Fi command set (Espressif modules on a UART), without the port.

* :class:`LineAssembler` cuts the byte stream into lines with a length cap,
  resynchronising after an overlong line, and keeps the unterminated tail so a
  truncated line can be reported at a timeout.
* :class:`AtExchange` follows one command to its final result code (``OK``,
  ``ERROR``, ``FAIL``, ``busy p...``) collecting ``+CMD:`` lines; anything else
  on the line (garbage, our own echo, ``WIFI CONNECTED``) never ends it.
* String parameters are quoted with ``,`` ``"`` ``\\`` escaped by a backslash.
* ``+CWLAP`` rows print the SSID raw, so they are parsed from both ends.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from agent.errors import DecodeError, PolicyError, TooLargeError
from agent.provisioning.wifi import AccessPoint, ConnectOutcome, Security, WifiCredentials
from agent.provisioning.wpa_ctrl import MAX_SSID_BYTES, parse_rows, ssid_text, strongest_per_ssid

MAX_LINE_BYTES = 512
MAX_LINES_PER_REPLY = 256

_ESCAPED = frozenset(',"\\')


def escape(text: str) -> str:
    return "".join("\\" + char if char in _ESCAPED else char for char in text)


def unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, None)
            if following is None:
                raise DecodeError("dangling backslash in AT string")
            out.append(following)
        else:
            out.append(char)
    return "".join(out)


def quoted(text: str) -> str:
    return f'"{escape(text)}"'


def join_command(credentials: WifiCredentials) -> bytes:
    """``AT+CWJAP="ssid","password"``; errors never quote the password."""
    ssid_bytes = credentials.ssid.encode("utf-8")
    if not 1 <= len(ssid_bytes) <= MAX_SSID_BYTES:
        raise PolicyError(f"an SSID is 1..{MAX_SSID_BYTES} bytes, got {len(ssid_bytes)}")
    password = credentials.passphrase or ""
    if password and not 8 <= len(password.encode("utf-8")) <= 64:
        raise PolicyError("an ESP-AT password is 8..64 bytes")
    if any(c in "\r\n\0" for c in credentials.ssid + password):
        raise PolicyError("line breaks and NUL cannot be sent over an AT line")
    command = f"AT+CWJAP={quoted(credentials.ssid)},{quoted(password)}"
    return command.encode("utf-8") + b"\r\n"


# --- line framing --------------------------------------------------------------


class LineAssembler:
    """Bytes in, complete lines out (without CR/LF); overlong lines are dropped."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self.overlong_lines = 0
        self._pending = bytearray()
        self._discarding = False

    @property
    def pending(self) -> bytes:
        """An unterminated tail: a truncated line once the module stops talking."""
        return bytes(self._pending)

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        for chunk in re.split(rb"(\n)", data):
            if chunk == b"\n":
                if not self._discarding:
                    line = bytes(self._pending).rstrip(b"\r")
                    if line:
                        lines.append(line)
                self._pending.clear()
                self._discarding = False
            elif not self._discarding:
                self._pending += chunk
                if len(self._pending) > self.max_line:
                    self.overlong_lines += 1
                    self._pending.clear()
                    self._discarding = True
        return lines


# --- one command's reply -------------------------------------------------------


class AtStatus(enum.Enum):
    OK = "OK"
    ERROR = "ERROR"
    FAIL = "FAIL"
    BUSY = "busy"


_FINAL = {b"OK": AtStatus.OK, b"ERROR": AtStatus.ERROR, b"FAIL": AtStatus.FAIL}


@dataclasses.dataclass
class AtReply:
    status: AtStatus
    info: list[str]
    notices: list[str]
    ignored_lines: int

    def cwjap_code(self) -> int | None:
        for line in self.info:
            match = re.fullmatch(r"\+CWJAP:(\d{1,3})", line)
            if match:
                return int(match.group(1))
        return None


class AtExchange:
    """Collect the reply to ``command`` line by line until its final result."""

    def __init__(self, command: bytes) -> None:
        self._echo = command.rstrip(b"\r\n")
        self._prefix = b"+" + self._echo[3:].split(b"=", 1)[0].split(b"?", 1)[0] + b":"
        self.info: list[str] = []
        self.notices: list[str] = []
        self.ignored = 0
        self.reply: AtReply | None = None

    def feed_line(self, line: bytes) -> AtReply | None:
        if self.reply is not None:
            return self.reply
        status = _FINAL.get(line.strip())
        if status is None and line.startswith((b"busy p", b"busy s")):
            status = AtStatus.BUSY
        if status is not None:
            self.reply = AtReply(status, self.info, self.notices, self.ignored)
            return self.reply
        if len(self.info) + len(self.notices) >= MAX_LINES_PER_REPLY:
            raise TooLargeError(f"AT reply exceeded {MAX_LINES_PER_REPLY} lines")
        if line.startswith(self._prefix):
            self.info.append(line.decode("utf-8", "replace"))
        elif line.startswith((b"WIFI ", b"+CWJAP:")):
            self.notices.append(line.decode("ascii", "replace"))
        else:
            # Our own echo (it may hold the password), garbage, unrelated URCs.
            self.ignored += 1
        return None


# --- parsers --------------------------------------------------------------------

_ECN = {
    0: Security.OPEN,
    1: Security.WEP,
    2: Security.WPA_PSK,
    3: Security.WPA2_PSK,
    4: Security.WPA2_PSK,
    5: Security.ENTERPRISE,
    6: Security.WPA3_SAE,
    7: Security.WPA2_PSK,
}
# Greedy SSID: the real rssi/mac/channel are the LAST match, whatever the SSID holds.
_CWLAP = re.compile(
    rb'\+CWLAP:\((\d{1,2}),"(.*)",(-?\d{1,3}),"([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})",'
    rb"(\d{1,3})(?:,[-\d,]*)?\)",
    re.DOTALL,
)


def channel_frequency(channel: int) -> int:
    if channel == 14:
        return 2484
    if 1 <= channel <= 13:
        return 2407 + 5 * channel
    if 32 <= channel <= 196:
        return 5000 + 5 * channel
    return 0


def parse_cwlap_line(line: bytes) -> AccessPoint:
    match = _CWLAP.fullmatch(line)
    if match is None:
        raise DecodeError("malformed +CWLAP line")
    ecn, raw_ssid, rssi, bssid, channel = match.groups()
    if len(raw_ssid) > MAX_SSID_BYTES:
        raise DecodeError("+CWLAP SSID is longer than 32 bytes")
    return AccessPoint(
        ssid=ssid_text(raw_ssid),
        bssid=bssid.decode("ascii").lower(),
        signal_dbm=int(rssi),
        security=_ECN.get(int(ecn), Security.UNKNOWN),
        frequency_mhz=channel_frequency(int(channel)),
    )


@dataclasses.dataclass(frozen=True)
class ApList:
    access_points: list[AccessPoint]
    rejected_lines: int


def parse_cwlap(lines: list[str]) -> ApList:
    found, rejected = parse_rows(
        lines, lambda line: parse_cwlap_line(line.encode("utf-8", "replace")), MAX_LINES_PER_REPLY
    )
    return ApList(strongest_per_ssid(found), rejected)


def parse_station_ip(info: list[str]) -> str | None:
    """``+CIPSTA:ip:"192.168.1.7"`` (``+CIPSTA_CUR`` on old firmware); 0.0.0.0 is none."""
    for line in info:
        match = re.fullmatch(r'\+CIPSTA(?:_CUR)?:ip:"(\d{1,3}(?:\.\d{1,3}){3})"', line)
        if match and match.group(1) != "0.0.0.0":  # noqa: S104 (an address read, not bound)
            return match.group(1)
    return None


@dataclasses.dataclass(frozen=True)
class JoinedAp:
    ssid: str
    bssid: str


def parse_joined_ap(info: list[str]) -> JoinedAp | None:
    for line in info:
        match = re.fullmatch(r'\+CWJAP:"(.*)","([0-9a-fA-F:]{17})",.*', line, re.DOTALL)
        if match:
            return JoinedAp(match.group(1), match.group(2).lower())
    return None


_JOIN_ERRORS = {
    1: (ConnectOutcome.TIMEOUT, "the module timed out joining"),
    2: (ConnectOutcome.WRONG_KEY, "wrong password"),
    3: (ConnectOutcome.NOT_FOUND, "no such access point"),
    4: (ConnectOutcome.FAILED, "join failed"),
}


def join_failure(code: int | None) -> tuple[ConnectOutcome, str]:
    return _JOIN_ERRORS.get(code or 0, (ConnectOutcome.FAILED, f"join failed (code {code})"))
