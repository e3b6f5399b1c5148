"""The wpa_supplicant control-interface protocol, without the socket.

Everything here takes the bytes wpa_supplicant sent (or the values we are about
to send) and returns values; drivers/wifi/wpa.py does the datagram I/O.

* SSIDs in ``SCAN_RESULTS``, ``STATUS`` and events are ``printf_encode``d by
  wpa_supplicant (``\\xNN``, ``\\\\``, ``\\"``, ``\\n`` ...): :func:`printf_decode`.
* ``SET_NETWORK`` values: an SSID is sent quoted only when it is printable ASCII
  without ``"``, otherwise as hex (always safe); a passphrase of 8..63
  printable ASCII characters is quoted, a 64-hex-digit PSK is sent raw, and any
  other 8..63-byte UTF-8 passphrase is turned into its PSK (PBKDF2, IEEE 802.11i)
  so the control line never has to carry non-ASCII text.
* :class:`ConnectTracker` turns events and ``STATUS`` into a ConnectOutcome.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

from agent.errors import DecodeError, PolicyError, TooLargeError
from agent.provisioning.wifi import (
    AccessPoint,
    ConnectOutcome,
    ConnectResult,
    Security,
    WifiCredentials,
    WifiStatus,
)

MAX_REPLY_BYTES = 256 * 1024
MAX_EVENT_BYTES = 4096
MAX_SCAN_ROWS = 512
MAX_SSID_BYTES = 32
T = TypeVar("T")

_SIMPLE_ESCAPES = {"\\": 0x5C, '"': 0x22, "n": 0x0A, "r": 0x0D, "t": 0x09, "e": 0x1B}
_ENCODE_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x1B: "\\e", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCTAL_DIGITS = frozenset("01234567")


# --- printf_encode / printf_decode (src/utils/common.c) ----------------------


def printf_encode(data: bytes) -> str:
    """What wpa_supplicant prints for ``data`` (used by tests and the fake)."""
    out: list[str] = []
    for byte in data:
        if byte in _ENCODE_ESCAPES:
            out.append(_ENCODE_ESCAPES[byte])
        elif 32 <= byte <= 126:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def printf_decode(text: str) -> bytes:
    """Undo ``printf_encode``; a dangling or unknown escape is a DecodeError."""
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= len(text):
            raise DecodeError("dangling backslash in wpa_supplicant text")
        code = text[i + 1]
        if code in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[code])
            i += 2
        elif code == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or not set(digits) <= _HEX_DIGITS:
                raise DecodeError("bad \\x escape in wpa_supplicant text")
            out.append(int(digits, 16))
            i += 4
        elif code in _OCTAL_DIGITS:
            j = i + 1
            while j < len(text) and j < i + 4 and text[j] in _OCTAL_DIGITS:
                j += 1
            value = int(text[i + 1 : j], 8)
            if value > 255:
                raise DecodeError("octal escape out of range in wpa_supplicant text")
            out.append(value)
            i = j
        else:
            raise DecodeError("unknown escape in wpa_supplicant text")
    return bytes(out)


def ssid_text(raw: bytes) -> str:
    """Display form of an SSID; bytes that are not UTF-8 become U+FFFD."""
    return raw.decode("utf-8", "replace")


def _decode_text(data: bytes, cap: int, what: str) -> str:
    if len(data) > cap:
        raise TooLargeError(f"{what} of {len(data)} bytes exceeds {cap}")
    # The control interface is ASCII; anything else is decoded losslessly so
    # printf_decode still sees the original bytes.
    return data.decode("utf-8", "surrogateescape")


# --- SET_NETWORK values ---------------------------------------------------------


def _printable_ascii(raw: bytes) -> bool:
    return all(32 <= byte <= 126 for byte in raw)


def encode_ssid(ssid: str) -> str:
    """The SET_NETWORK value for ``ssid``: ``"text"`` when unambiguous, else hex."""
    raw = ssid.encode("utf-8")
    if not 1 <= len(raw) <= MAX_SSID_BYTES:
        raise PolicyError(f"an SSID is 1..{MAX_SSID_BYTES} bytes, got {len(raw)}")
    if _printable_ascii(raw) and b'"' not in raw:
        return f'"{ssid}"'
    return raw.hex()


def decode_config_string(value: str) -> bytes:
    """Parse a string as GET_NETWORK returns it: ``"text"`` or hex."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1].encode("utf-8", "surrogateescape")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError("network value is neither quoted nor hex") from None


def stored_ssid_is(reply: bytes, ssid: str) -> bool:
    """Whether a ``GET_NETWORK <id> ssid`` reply names ``ssid`` (FAIL or garbage: no)."""
    try:
        return decode_config_string(reply_text(reply).strip("\n")) == ssid.encode("utf-8")
    except DecodeError:
        return False


def is_hex_psk(passphrase: str) -> bool:
    return len(passphrase) == 64 and set(passphrase) <= _HEX_DIGITS


def encode_psk(passphrase: str, ssid: str) -> str:
    """The SET_NETWORK ``psk`` value; errors never quote the passphrase."""
    if is_hex_psk(passphrase):
        return passphrase.lower()
    raw = passphrase.encode("utf-8")
    if not 8 <= len(raw) <= 63:
        raise PolicyError(f"a WPA passphrase is 8..63 characters or 64 hex digits, got {len(raw)}")
    if _printable_ascii(raw):
        # wpa_config_parse_psk takes the text up to the LAST quote, so inner quotes are fine.
        return f'"{passphrase}"'
    return derive_psk(raw, ssid.encode("utf-8")).hex()


def derive_psk(passphrase: bytes, ssid: bytes) -> bytes:
    """IEEE 802.11i PSK = PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32)."""
    return hashlib.pbkdf2_hmac("sha1", passphrase, ssid, 4096, 32)


@dataclasses.dataclass(frozen=True)
class NetworkSetting:
    name: str
    value: str
    secret: bool = False
    # Tried when the daemon refuses ``value`` (e.g. a build without SAE support).
    fallback: str | None = None


def network_settings(credentials: WifiCredentials) -> list[NetworkSetting]:
    """The SET_NETWORK name/value pairs for ``credentials``, in order."""
    settings = [NetworkSetting("ssid", encode_ssid(credentials.ssid))]
    if credentials.hidden:
        settings.append(NetworkSetting("scan_ssid", "1"))
    if credentials.passphrase:
        psk = encode_psk(credentials.passphrase, credentials.ssid)
        # SAE needs the passphrase itself; a derived or given PSK can only do WPA-PSK.
        if psk.startswith('"'):
            settings.append(NetworkSetting("key_mgmt", "WPA-PSK SAE", fallback="WPA-PSK"))
        else:
            settings.append(NetworkSetting("key_mgmt", "WPA-PSK"))
        settings.append(NetworkSetting("ieee80211w", "1"))
        settings.append(NetworkSetting("psk", psk, secret=True))
    else:
        settings.append(NetworkSetting("key_mgmt", "NONE"))
    return settings


# --- replies ------------------------------------------------------------------


def reply_text(data: bytes) -> str:
    return _decode_text(data, MAX_REPLY_BYTES, "wpa_supplicant reply")


def is_ok(data: bytes) -> bool:
    return data.strip() == b"OK"


def parse_network_id(data: bytes) -> int:
    text = data.strip()
    if not text.isdigit() or len(text) > 9:
        raise DecodeError("ADD_NETWORK did not return a network id")
    return int(text)


def parse_network_list(data: bytes) -> dict[int, bool]:
    """LIST_NETWORKS -> {network id: enabled}; malformed rows are skipped."""
    networks: dict[int, bool] = {}
    for row in reply_text(data).split("\n")[1:]:
        fields = row.split("\t")
        if len(fields) == 4 and fields[0].isdigit() and len(fields[0]) <= 9:
            networks[int(fields[0])] = "[DISABLED]" not in fields[3]
    return networks


def security_from_flags(flags: str) -> Security:
    """``[WPA2-PSK-CCMP][ESS]`` -> WPA2_PSK; the strongest usable suite wins."""
    # Groups may not contain '[': keeps findall linear on a run of unclosed '['.
    groups = re.findall(r"\[([^\[\]]*)\]", flags)
    if any("EAP" in g for g in groups if g.startswith(("WPA", "RSN"))):
        return Security.ENTERPRISE
    if any("PSK" in g for g in groups if g.startswith(("WPA2", "RSN"))):
        return Security.WPA2_PSK
    if any("SAE" in g for g in groups):
        return Security.WPA3_SAE
    if any(g.startswith("WPA-") and "PSK" in g for g in groups):
        return Security.WPA_PSK
    if "WEP" in groups:
        return Security.WEP
    if any(g.startswith(("WPA", "RSN", "OWE", "OSEN")) for g in groups):
        return Security.UNKNOWN
    return Security.OPEN


_BSSID = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def parse_scan_row(row: str) -> AccessPoint:
    fields = row.split("\t")
    if len(fields) != 5:
        raise DecodeError(f"scan row has {len(fields)} fields, expected 5")
    bssid, frequency, signal, flags, encoded_ssid = fields
    if not _BSSID.match(bssid):
        raise DecodeError("scan row has a malformed BSSID")
    try:
        frequency_mhz, signal_dbm = int(frequency), int(signal)
    except ValueError:
        raise DecodeError("scan row has a non-numeric frequency or signal") from None
    if not (0 <= frequency_mhz <= 100_000 and -200 <= signal_dbm <= 100):
        raise DecodeError("scan row frequency or signal out of range")
    raw_ssid = printf_decode(encoded_ssid)
    if len(raw_ssid) > MAX_SSID_BYTES:
        raise DecodeError("scan row SSID is longer than 32 bytes")
    return AccessPoint(
        ssid=ssid_text(raw_ssid),
        bssid=bssid.lower(),
        signal_dbm=signal_dbm,
        security=security_from_flags(flags),
        frequency_mhz=frequency_mhz,
    )


@dataclasses.dataclass(frozen=True)
class ScanResults:
    access_points: list[AccessPoint]
    rejected_rows: int


def parse_scan_results(data: bytes) -> ScanResults:
    """Parse SCAN_RESULTS; malformed rows are counted and skipped, not fatal.

    Hidden networks (empty SSID) are dropped, and for each SSID only the
    strongest BSS is kept; the list is strongest first.
    """
    lines = reply_text(data).split("\n")
    if not lines[0].startswith("bssid / frequency"):
        raise DecodeError("SCAN_RESULTS reply lacks its header line")
    found, rejected = parse_rows(lines[1:], parse_scan_row, MAX_SCAN_ROWS)
    return ScanResults(strongest_per_ssid(found), rejected)


def parse_rows(lines: list[str], parse: Callable[[str], T], cap: int) -> tuple[list[T], int]:
    """Parse the non-empty lines, at most ``cap``; a bad row is counted, not fatal."""
    rows = [line for line in lines if line]
    parsed: list[T] = []
    rejected = max(0, len(rows) - cap)
    for row in rows[:cap]:
        try:
            parsed.append(parse(row))
        except DecodeError:
            rejected += 1
    return parsed, rejected


def strongest_per_ssid(access_points: Iterable[AccessPoint]) -> list[AccessPoint]:
    """One entry per named SSID (its strongest BSS), strongest first; hidden ones dropped."""
    best: dict[str, AccessPoint] = {}
    for ap in access_points:
        if ap.ssid and (ap.ssid not in best or best[ap.ssid].signal_dbm < ap.signal_dbm):
            best[ap.ssid] = ap
    return sorted(best.values(), key=lambda ap: (-ap.signal_dbm, ap.ssid))


def parse_status(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in reply_text(data).split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise DecodeError("STATUS line is not key=value")
        fields[key] = value
    return fields


def wifi_status(fields: dict[str, str]) -> WifiStatus:
    completed = fields.get("wpa_state") == "COMPLETED"
    ssid: str | None = None
    if "ssid" in fields:
        ssid = ssid_text(printf_decode(fields["ssid"]))
    address = fields.get("ip_address") or None
    return WifiStatus(
        connected=completed and address is not None,
        ssid=ssid if completed else None,
        bssid=fields.get("bssid") if completed else None,
        ip_address=address if completed else None,
    )


# --- unsolicited events -------------------------------------------------------


class EventKind(enum.Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    TEMP_DISABLED = "temp_disabled"
    NETWORK_NOT_FOUND = "network_not_found"
    SCAN_RESULTS = "scan_results"
    SCAN_FAILED = "scan_failed"
    OTHER = "other"


_EVENT_NAMES = {
    "CTRL-EVENT-CONNECTED": EventKind.CONNECTED,
    "CTRL-EVENT-DISCONNECTED": EventKind.DISCONNECTED,
    "CTRL-EVENT-SSID-TEMP-DISABLED": EventKind.TEMP_DISABLED,
    "CTRL-EVENT-NETWORK-NOT-FOUND": EventKind.NETWORK_NOT_FOUND,
    "CTRL-EVENT-SCAN-RESULTS": EventKind.SCAN_RESULTS,
    "CTRL-EVENT-SCAN-FAILED": EventKind.SCAN_FAILED,
}
_EVENT_HEAD = re.compile(r"^<([0-9])>(\S+)")
_TOKEN = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclasses.dataclass(frozen=True)
class WpaEvent:
    kind: EventKind
    name: str
    fields: dict[str, str]


def is_event(data: bytes) -> bool:
    return data[:1] == b"<"


def parse_event(data: bytes) -> WpaEvent:
    """Parse ``<3>CTRL-EVENT-... key=value ...``; quoted values keep their escapes."""
    text = _decode_text(data, MAX_EVENT_BYTES, "wpa_supplicant event").rstrip("\n")
    head = _EVENT_HEAD.match(text)
    if head is None:
        raise DecodeError("not a wpa_supplicant event")
    name = head.group(2)
    fields: dict[str, str] = {}
    rest = text[head.end() :]
    if name == "CTRL-EVENT-CONNECTED":
        # "- Connection to aa:bb:.. completed [id=0 id_str=]"
        rest = rest[rest.rfind("[") + 1 :] if "[" in rest else rest
    for match in _TOKEN.finditer(rest):
        fields.setdefault(match.group(1), match.group(2))
    return WpaEvent(_EVENT_NAMES.get(name, EventKind.OTHER), name, fields)


# --- connect state machine ------------------------------------------------------


class ConnectTracker:
    """Decide a connect attempt from events and STATUS, given ``now`` by the caller.

    Associated is not enough: CONNECTED counts only once STATUS shows
    ``wpa_state=COMPLETED`` and an ``ip_address``.  Events about other network
    ids are ignored, so a hostile or stale event cannot end the attempt.
    """

    def __init__(self, network_id: int, deadline: float) -> None:
        self.network_id = network_id
        self.deadline = deadline
        self.associated = False
        self.result: ConnectResult | None = None
        self._last_reason = ""

    @property
    def done(self) -> bool:
        return self.result is not None

    def _about_us(self, event: WpaEvent) -> bool:
        event_id = event.fields.get("id")
        return event_id is None or event_id == str(self.network_id)

    def on_event(self, event: WpaEvent) -> None:
        if self.done:
            return
        if event.kind is EventKind.CONNECTED and self._about_us(event):
            self.associated = True
        elif event.kind is EventKind.DISCONNECTED:
            self.associated = False
        elif event.kind is EventKind.TEMP_DISABLED and "id" in event.fields:
            if not self._about_us(event):
                return
            reason = event.fields.get("reason", "")
            if reason == "WRONG_KEY":
                self.result = ConnectResult(ConnectOutcome.WRONG_KEY, detail="wrong passphrase")
            else:
                self._last_reason = reason[:40]
        elif event.kind is EventKind.NETWORK_NOT_FOUND and not self.associated:
            self.result = ConnectResult(ConnectOutcome.NOT_FOUND, detail="network not found")

    def on_status(self, fields: dict[str, str]) -> None:
        if self.done:
            return
        if fields.get("wpa_state") != "COMPLETED" or fields.get("id") != str(self.network_id):
            return
        self.associated = True
        address = fields.get("ip_address")
        if address:
            self.result = ConnectResult(ConnectOutcome.CONNECTED, ip_address=address)

    def on_time(self, now: float) -> None:
        if self.done or now < self.deadline:
            return
        if self.associated:
            detail = "associated but no address"
        elif self._last_reason:
            detail = f"gave up after {self._last_reason}"
        else:
            detail = "no connection before the deadline"
        self.result = ConnectResult(ConnectOutcome.TIMEOUT, detail=detail)
