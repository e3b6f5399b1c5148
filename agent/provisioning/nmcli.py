"""NetworkManager's ``nmcli`` terse output and argument building, without a process.

Terse tabular output (``-t``) separates fields with ``:`` and escapes ``:``
and ``\\`` inside values with a backslash (``AA\\:BB\\:...`` for a BSSID).
Secrets never go into argv: :func:`passwd_file_text` builds the ``passwd-file``
body that drivers/wifi/nmcli.py writes to a private 0600 file.
"""

from __future__ import annotations

import dataclasses
import re

from agent.errors import DecodeError, PolicyError, TooLargeError
from agent.provisioning.wifi import AccessPoint, ConnectOutcome, Security, WifiCredentials
from agent.provisioning.wpa_ctrl import (
    MAX_SSID_BYTES,
    derive_psk,
    is_hex_psk,
    parse_rows,
    strongest_per_ssid,
)

MAX_OUTPUT_BYTES = 256 * 1024
MAX_ROWS = 512
WIFI_LIST_FIELDS = "IN-USE,SSID,BSSID,FREQ,SIGNAL,SECURITY"
WIFI_CONNECTION_TYPE = "802-11-wireless"
PSK_PROPERTY = "802-11-wireless-security.psk"
# Every profile the agent adds is named this plus 8 hex digits: how an erasure finds them.
PROFILE_PREFIX = "edge-agent-"
PROFILE_LIST_FIELDS = "NAME,UUID,TYPE"
_AGENT_PROFILE = re.compile(re.escape(PROFILE_PREFIX) + r"[0-9a-f]{8}")


def output_text(data: bytes) -> str:
    if len(data) > MAX_OUTPUT_BYTES:
        raise TooLargeError(f"nmcli output of {len(data)} bytes exceeds {MAX_OUTPUT_BYTES}")
    return data.decode("utf-8", "replace")


def split_terse(line: str) -> list[str]:
    """Split one ``-t`` row on unescaped colons, undoing ``\\:`` and ``\\\\``."""
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line)
    for char in chars:
        if char == "\\":
            following = next(chars, None)
            if following not in (":", "\\"):
                raise DecodeError("bad escape in nmcli terse output")
            current.append(following)
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def escape_terse(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def signal_to_dbm(percent: int) -> int:
    """Invert NetworkManager's dBm -> quality map (-100 dBm = 0 %, -40 dBm = 100 %)."""
    return -100 + round(max(0, min(100, percent)) * 60 / 100)


def security_from_nm(text: str) -> Security:
    tokens = set(text.split())
    if "802.1X" in tokens:
        return Security.ENTERPRISE
    if "WPA2" in tokens:
        return Security.WPA2_PSK
    if "WPA3" in tokens:
        return Security.WPA3_SAE
    if "WPA1" in tokens:
        return Security.WPA_PSK
    if "WEP" in tokens:
        return Security.WEP
    if not tokens or tokens == {"--"}:
        return Security.OPEN
    return Security.UNKNOWN


_BSSID = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


@dataclasses.dataclass(frozen=True)
class WifiRow:
    in_use: bool
    access_point: AccessPoint


def parse_wifi_row(line: str) -> WifiRow:
    fields = split_terse(line)
    if len(fields) != 6:
        raise DecodeError(f"nmcli wifi row has {len(fields)} fields, expected 6")
    in_use, ssid, bssid, freq, signal, security = fields
    if not _BSSID.fullmatch(bssid):
        raise DecodeError("nmcli wifi row has a malformed BSSID")
    freq_match = re.fullmatch(r"(\d{1,6})(?: MHz)?", freq)
    if freq_match is None or not re.fullmatch(r"\d{1,3}", signal):
        raise DecodeError("nmcli wifi row has a malformed frequency or signal")
    if len(ssid.encode("utf-8")) > MAX_SSID_BYTES:
        raise DecodeError("nmcli wifi row SSID is longer than 32 bytes")
    access_point = AccessPoint(
        ssid=ssid,
        bssid=bssid.lower(),
        signal_dbm=signal_to_dbm(int(signal)),
        security=security_from_nm(security),
        frequency_mhz=int(freq_match.group(1)),
    )
    return WifiRow(in_use.strip() == "*", access_point)


@dataclasses.dataclass(frozen=True)
class WifiList:
    access_points: list[AccessPoint]
    in_use: AccessPoint | None
    rejected_rows: int


def parse_wifi_list(data: bytes) -> WifiList:
    """``nmcli -t -f IN-USE,SSID,BSSID,FREQ,SIGNAL,SECURITY device wifi list``."""
    rows, rejected = parse_rows(output_text(data).split("\n"), parse_wifi_row, MAX_ROWS)
    in_use = next((row.access_point for row in rows if row.in_use), None)
    return WifiList(strongest_per_ssid(row.access_point for row in rows), in_use, rejected)


def parse_fields(data: bytes) -> dict[str, str]:
    """Multi-line ``-t`` output (``connection show ID``): ``NAME:value`` per line."""
    fields: dict[str, str] = {}
    for line in output_text(data).split("\n")[:MAX_ROWS]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9._\-\[\]]+", name):
            raise DecodeError("nmcli field line is not NAME:value")
        fields.setdefault(name, "".join(split_terse(value)) if "\\" in value else value)
    return fields


def first_ipv4(fields: dict[str, str]) -> str | None:
    for name in ("IP4.ADDRESS[1]", "IP4.ADDRESS"):
        match = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3})(?:/\d{1,2})?", fields.get(name, ""))
        if match:
            return match.group(1)
    return None


def is_activated(fields: dict[str, str]) -> bool:
    return fields.get("GENERAL.STATE") == "activated"


_UUID = re.compile(
    r"\(([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\)"
)


def parse_added_uuid(data: bytes) -> str:
    """``Connection 'name' (UUID) successfully added.``"""
    matches = _UUID.findall(output_text(data))
    if not matches:
        raise DecodeError("nmcli connection add did not report a UUID")
    return str(matches[-1]).lower()


def active_wifi_uuid(data: bytes) -> str | None:
    """``nmcli -t -f TYPE,UUID connection show --active`` -> the Wi-Fi one."""
    for line in output_text(data).split("\n")[:MAX_ROWS]:
        if not line:
            continue
        fields = split_terse(line)
        if (
            len(fields) == 2
            and fields[0] == WIFI_CONNECTION_TYPE
            and _UUID.fullmatch(f"({fields[1]})")
        ):
            return fields[1].lower()
    return None


def agent_profiles(data: bytes) -> list[str]:
    """UUIDs of the agent's Wi-Fi profiles in ``nmcli -t -f NAME,UUID,TYPE connection show``."""
    found: list[str] = []
    for line in output_text(data).split("\n")[:MAX_ROWS]:
        if not line:
            continue
        try:
            fields = split_terse(line)
        except DecodeError:
            continue
        if (
            len(fields) == 3
            and _AGENT_PROFILE.fullmatch(fields[0])
            and fields[2] == WIFI_CONNECTION_TYPE
            and _UUID.fullmatch(f"({fields[1]})")
        ):
            found.append(fields[1].lower())
    return found


# --- building a connection ------------------------------------------------------


def add_arguments(
    credentials: WifiCredentials, name: str, interface: str, security: Security | None
) -> list[str]:
    """``connection add`` arguments: an in-memory profile (``save no``) without the key."""
    ssid_bytes = credentials.ssid.encode("utf-8")
    if not 1 <= len(ssid_bytes) <= MAX_SSID_BYTES:
        raise PolicyError(f"an SSID is 1..{MAX_SSID_BYTES} bytes, got {len(ssid_bytes)}")
    arguments = [
        "connection",
        "add",
        "type",
        "wifi",
        "con-name",
        name,
        "ifname",
        interface or "*",
        "ssid",
        credentials.ssid,
        "autoconnect",
        "no",
        "save",
        "no",
    ]
    if credentials.hidden:
        arguments += ["802-11-wireless.hidden", "yes"]
    if credentials.passphrase:
        key_mgmt = "sae" if security is Security.WPA3_SAE else "wpa-psk"
        arguments += ["wifi-sec.key-mgmt", key_mgmt]
    return arguments


def psk_value(credentials: WifiCredentials) -> str:
    """The secret as NetworkManager should get it; errors never quote it.

    nmcli reads ``passwd-file`` line by line and may trim or unescape the
    value, so a passphrase with edge whitespace or backslashes is handed over
    as its 64-hex-digit PSK, which survives any such treatment.
    """
    passphrase = credentials.passphrase or ""
    if is_hex_psk(passphrase):
        return passphrase.lower()
    raw = passphrase.encode("utf-8")
    if not 8 <= len(raw) <= 63:
        raise PolicyError(f"a WPA passphrase is 8..63 characters or 64 hex digits, got {len(raw)}")
    if any(c in passphrase for c in "\r\n\0"):
        raise PolicyError("a WPA passphrase cannot contain line breaks or NUL")
    if passphrase != passphrase.strip() or "\\" in passphrase:
        return derive_psk(raw, credentials.ssid.encode("utf-8")).hex()
    return passphrase


def passwd_file_text(credentials: WifiCredentials) -> str:
    return f"{PSK_PROPERTY}:{psk_value(credentials)}\n"


def activation_failure(returncode: int, stderr: str) -> tuple[ConnectOutcome, str]:
    """Map ``nmcli connection up`` failure to an outcome (run with LC_ALL=C)."""
    text = stderr.lower()
    if "secrets were required" in text or "802.1x supplicant" in text:
        return ConnectOutcome.WRONG_KEY, "wrong passphrase"
    if "could not be found" in text or "no network with ssid" in text or returncode == 10:
        return ConnectOutcome.NOT_FOUND, "network not found"
    if returncode == 3 or "timeout" in text:
        return ConnectOutcome.TIMEOUT, "activation timed out"
    first_line = stderr.strip().split("\n", 1)[0][:160]
    return ConnectOutcome.FAILED, first_line or f"nmcli exited with {returncode}"
