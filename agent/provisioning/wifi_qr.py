"""The ``WIFI:`` QR payload (ZXing convention) shown to the camera.

``WIFI:T:WPA;S:<ssid>;P:<passphrase>;H:true;;`` -- fields in any order, each
value escaping ``\\ ; , : "`` with a backslash.  The text comes from a
stranger's phone screen, so it is length-capped and every malformed form is a
:class:`~agent.errors.DecodeError`.
"""

from __future__ import annotations

import dataclasses

from agent.errors import DecodeError, TooLargeError
from agent.provisioning.wifi import Security, WifiCredentials

PREFIX = "WIFI:"
MAX_TEXT = 512
MAX_SSID_BYTES = 32
MAX_FIELDS = 8
_ESCAPED = '\\;,:"'
_SECURITY_BY_TYPE = {
    "WPA": Security.WPA2_PSK,
    "WPA2": Security.WPA2_PSK,
    "SAE": Security.WPA3_SAE,
    "WPA3": Security.WPA3_SAE,
    "WEP": Security.WEP,
    "NOPASS": Security.OPEN,
    "": Security.OPEN,
}


@dataclasses.dataclass(frozen=True)
class WifiQr:
    credentials: WifiCredentials
    security: Security


def escape(value: str) -> str:
    return "".join("\\" + c if c in _ESCAPED else c for c in value)


def format_wifi_qr(credentials: WifiCredentials, security: Security = Security.WPA2_PSK) -> str:
    kind = {Security.OPEN: "nopass", Security.WEP: "WEP", Security.WPA3_SAE: "SAE"}.get(
        security, "WPA"
    )
    parts = [f"T:{kind}", f"S:{escape(credentials.ssid)}"]
    if credentials.passphrase is not None and security is not Security.OPEN:
        parts.append(f"P:{escape(credentials.passphrase)}")
    if credentials.hidden:
        parts.append("H:true")
    return PREFIX + ";".join(parts) + ";;"


def _split_fields(body: str) -> list[tuple[str, str]]:
    """Split ``K:value;K:value;`` honouring escapes; the body must end with ';'."""
    fields: list[tuple[str, str]] = []
    current: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 >= len(body):
                raise DecodeError("Wi-Fi QR ends inside an escape")
            nxt = body[index + 1]
            if nxt not in _ESCAPED:
                raise DecodeError(f"Wi-Fi QR has an invalid escape \\{nxt!r}")
            current.append("\\" + nxt)
            index += 2
            continue
        if char == ";":
            field = "".join(current)
            current = []
            if field:
                fields.append(_key_value(field))
                if len(fields) > MAX_FIELDS:
                    raise TooLargeError("Wi-Fi QR has too many fields")
            index += 1
            continue
        current.append(char)
        index += 1
    if current:
        raise DecodeError("Wi-Fi QR field is not terminated by ';'")
    return fields


def _key_value(field: str) -> tuple[str, str]:
    key, sep, raw = field.partition(":")
    if not sep or len(key) != 1 or not key.isalpha():
        raise DecodeError("Wi-Fi QR field is not 'K:value'")
    return key.upper(), _unescape(raw)


def _unescape(raw: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(raw):
        if raw[index] == "\\":
            out.append(raw[index + 1])
            index += 2
        else:
            out.append(raw[index])
            index += 1
    return "".join(out)


def parse_wifi_qr(text: str) -> WifiQr:
    if len(text) > MAX_TEXT:
        raise TooLargeError(f"Wi-Fi QR text is longer than {MAX_TEXT} characters")
    if not text.upper().startswith(PREFIX):
        raise DecodeError("not a WIFI: QR payload")
    if any(ord(c) < 0x20 and c not in "\t" for c in text):
        raise DecodeError("Wi-Fi QR contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DecodeError("Wi-Fi QR text is not valid Unicode") from exc
    body = text[len(PREFIX) :]
    if not body.endswith(";;") and not body.endswith(";"):
        raise DecodeError("Wi-Fi QR is not terminated")
    fields: dict[str, str] = {}
    for key, value in _split_fields(body):
        if key in fields:
            raise DecodeError(f"Wi-Fi QR repeats field {key}")
        fields[key] = value
    ssid = fields.get("S")
    if not ssid:
        raise DecodeError("Wi-Fi QR has no SSID")
    if len(ssid.encode("utf-8")) > MAX_SSID_BYTES:
        raise TooLargeError(f"SSID is longer than {MAX_SSID_BYTES} bytes")
    kind = fields.get("T", "").upper()
    if kind not in _SECURITY_BY_TYPE:
        raise DecodeError(f"unknown Wi-Fi QR security type {kind[:16]!r}")
    security = _SECURITY_BY_TYPE[kind]
    passphrase = fields.get("P")
    if security is Security.OPEN:
        passphrase = None
    elif not passphrase:
        raise DecodeError("Wi-Fi QR for a secured network has no passphrase")
    else:
        _check_passphrase(passphrase, security)
    hidden_text = fields.get("H", "false").lower()
    if hidden_text not in ("true", "false"):
        raise DecodeError("Wi-Fi QR hidden flag must be true or false")
    credentials = WifiCredentials(ssid=ssid, passphrase=passphrase, hidden=hidden_text == "true")
    return WifiQr(credentials, security)


def _check_passphrase(passphrase: str, security: Security) -> None:
    if security is Security.WEP:
        return
    is_raw_psk = len(passphrase) == 64 and all(c in "0123456789abcdefABCDEF" for c in passphrase)
    if not is_raw_psk and not 8 <= len(passphrase) <= 63:
        raise DecodeError("WPA passphrase must be 8..63 characters (or 64 hex digits)")
    if not passphrase.isprintable():
        raise DecodeError("WPA passphrase must be printable")
