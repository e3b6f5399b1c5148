"""The ``WIFI:`` QR payload (ZXing convention) shown to the camera.

``WIFI:T:WPA;S:<ssid>;P:<passphrase>;H:true;;`` -- fields in any order, each
value escaping ``\\ ; , : "`` with a backslash.  The text comes from a
stranger's phone screen, so it is length-capped and every malformed form is a
:class:`~agent.errors.DecodeError`.

Hex and quoting, as ZXing defines them: a value in unescaped double quotes is
that text, quotes removed (``S:"CAFE"`` is the network ``CAFE``); an unquoted
SSID of hex digits is the hex of the SSID's bytes (``S:414243`` is ``ABC``) --
but only where those bytes are printable UTF-8, the only SSIDs this device can
name: an unquoted ``cafe`` or ``1234`` stays the text it looks like, as phones
that never quote mean it.  An unquoted 64-hex-digit password is a raw WPA PSK.

WEP codes are refused with a message saying so: WEP is broken, and no Wi-Fi
backend here joins WEP networks (they would fail as a WPA attempt, slowly).
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
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
WEP_REFUSED = (
    "WEP Wi-Fi QR code refused: WEP is broken and this device does not join WEP "
    "networks; switch the access point to WPA2 or WPA3"
)


class WepRefusedError(DecodeError):
    """A WEP network: refused, whatever the key."""

    def __init__(self) -> None:
        super().__init__(WEP_REFUSED)


@dataclasses.dataclass(frozen=True)
class WifiQr:
    credentials: WifiCredentials
    security: Security


def escape(value: str) -> str:
    return "".join("\\" + c if c in _ESCAPED else c for c in value)


def _hex_ssid(value: str) -> str | None:
    """The SSID an unquoted all-hex value stands for, if it can be one (see above)."""
    if len(value) < 2 or len(value) % 2 or not set(value) <= _HEX_DIGITS:
        return None
    try:
        text = bytes.fromhex(value).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return text if text.isprintable() else None


def format_wifi_qr(credentials: WifiCredentials, security: Security = Security.WPA2_PSK) -> str:
    kind = {Security.OPEN: "nopass", Security.WEP: "WEP", Security.WPA3_SAE: "SAE"}.get(
        security, "WPA"
    )
    ssid = escape(credentials.ssid)
    if _hex_ssid(credentials.ssid) is not None:
        ssid = f'"{ssid}"'  # would read as hex: quoted, as ZXing asks
    parts = [f"T:{kind}", f"S:{ssid}"]
    if credentials.passphrase is not None and security is not Security.OPEN:
        parts.append(f"P:{escape(credentials.passphrase)}")
    if credentials.hidden:
        parts.append("H:true")
    return PREFIX + ";".join(parts) + ";;"


def _split_fields(body: str) -> list[tuple[str, _Value]]:
    """Split ``K:value;K:value;`` honouring escapes; the body must end with ';'."""
    fields: list[tuple[str, _Value]] = []
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


@dataclasses.dataclass(frozen=True)
class _Value:
    text: str
    quoted: bool  # it was in unescaped double quotes (which are not part of it)


def _key_value(field: str) -> tuple[str, _Value]:
    key, sep, raw = field.partition(":")
    if not sep or len(key) != 1 or not key.isalpha():
        raise DecodeError("Wi-Fi QR field is not 'K:value'")
    return key.upper(), _unescape(raw)


def _unescape(raw: str) -> _Value:
    chars: list[tuple[str, bool]] = []  # (character, was escaped)
    index = 0
    while index < len(raw):
        if raw[index] == "\\":
            chars.append((raw[index + 1], True))
            index += 2
        else:
            chars.append((raw[index], False))
            index += 1
    quoted = len(chars) >= 2 and chars[0] == ('"', False) and chars[-1] == ('"', False)
    if quoted:
        chars = chars[1:-1]
    return _Value("".join(c for c, _ in chars), quoted)


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
    fields: dict[str, _Value] = {}
    for key, value in _split_fields(body):
        if key in fields:
            raise DecodeError(f"Wi-Fi QR repeats field {key}")
        fields[key] = value
    ssid = _ssid(fields.get("S"))
    kind = fields["T"].text.upper() if "T" in fields else ""
    if kind not in _SECURITY_BY_TYPE:
        raise DecodeError(f"unknown Wi-Fi QR security type {kind[:16]!r}")
    security = _SECURITY_BY_TYPE[kind]
    if security is Security.WEP:
        raise WepRefusedError()
    password = fields.get("P")
    passphrase = None if password is None else password.text
    if security is Security.OPEN:
        passphrase = None
    elif not passphrase or password is None:
        raise DecodeError("Wi-Fi QR for a secured network has no passphrase")
    else:
        _check_passphrase(passphrase, quoted=password.quoted)
    hidden_text = fields["H"].text.lower() if "H" in fields else "false"
    if hidden_text not in ("true", "false"):
        raise DecodeError("Wi-Fi QR hidden flag must be true or false")
    credentials = WifiCredentials(ssid=ssid, passphrase=passphrase, hidden=hidden_text == "true")
    return WifiQr(credentials, security)


def _ssid(value: _Value | None) -> str:
    if value is None or not value.text:
        raise DecodeError("Wi-Fi QR has no SSID")
    ssid = value.text if value.quoted else (_hex_ssid(value.text) or value.text)
    if len(ssid.encode("utf-8")) > MAX_SSID_BYTES:
        raise TooLargeError(f"SSID is longer than {MAX_SSID_BYTES} bytes")
    return ssid


def _check_passphrase(passphrase: str, *, quoted: bool) -> None:
    # Unquoted 64 hex digits: a raw PSK. Quoted, they are text, too long for WPA.
    is_raw_psk = not quoted and len(passphrase) == 64 and all(c in _HEX_DIGITS for c in passphrase)
    if not is_raw_psk and not 8 <= len(passphrase) <= 63:
        raise DecodeError("WPA passphrase must be 8..63 characters (or 64 hex digits)")
    if not passphrase.isprintable():
        raise DecodeError("WPA passphrase must be printable")
