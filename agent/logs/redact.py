"""Scrubbing personal data and secrets out of log text before it leaves the device.

The :class:`Redactor` works on *formatted* text (a record's final message plus
its exception text), never on a template whose ``args`` could smuggle values
past it.  It removes two kinds of things:

* shapes that are personal or secret wherever they appear: e-mail addresses,
  phone numbers, IPv4/IPv6 and MAC addresses, bearer/JWT/hex/base64-like
  tokens, ``key=value`` secrets (passwords, PSKs, SSIDs, serials, codes) and
  passwords inside URLs;
* literals only the device knows are sensitive -- enrolled names, watched
  plates, the Wi-Fi SSID, the serial number -- from a provider the
  composition root supplies, asked afresh on every call so a name enrolled a
  minute ago is already covered.

Literals are matched case-insensitively and with optional separators between
characters, so the plate ``AB123CD`` is also caught as ``ab-123 cd``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

KnownSecretsProvider = Callable[[], Iterable[str]]

MIN_LITERAL_LENGTH = 3  # shorter literals would blank out ordinary words
MAX_LITERALS = 4096


def marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]*(?=@)")
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{4,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_SENSITIVE_FIELD_NAMES = (
    r"pass(?:word|wd|phrase)?|pwd|secret|client[_-]?secret|token|access[_-]?token|"
    r"refresh[_-]?token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|psk|wpa[_-]?psk|"
    r"wifi[_-]?key|wep[_-]?key|key|auth|authorization|cookie|session(?:[_-]?id)?|"
    r"(?:verification[_-]?)?code|technician[_-]?token|ssid|essid|bssid|"
    r"serial(?:[_-]?(?:number|no))?|s/n|sn|imei|mac|email|phone|name|plate|label|person|"
    r"user(?:[_-]?name)?|login|owner"
)
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>(?<![A-Za-z0-9])(?:" + _SENSITIVE_FIELD_NAMES + r"))(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&}\])]+)"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MAC = re.compile(r"(?<![0-9A-Fa-f:-])(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f:-])")
_IPV6_CANDIDATE = re.compile(
    r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%[A-Za-z0-9]+)?"
    r"(?![0-9A-Fa-f:])"
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){2,4}(?!\w)"
    r"|(?<![\w+])\+\d{7,15}(?!\w)"
)
_HEX_SECRET = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{24,}(?![A-Za-z0-9])")
_BASE64ISH = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{24,}={0,2}(?![A-Za-z0-9+/_=-])")


def _looks_random(token: str) -> bool:
    # Encoded secrets mix cases and digits; file paths and identifiers rarely do.
    return (
        any(c.isdigit() for c in token)
        and any(c.isupper() for c in token)
        and any(c.islower() for c in token)
    )


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return text
    return marker("ipv6")


def _ipv4(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv4Address(match.group(0))
    except ValueError:
        return match.group(0)
    return marker("ipv4")


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if _ISO_DATE.match(text) or not 7 <= digits <= 15:
        return text
    return marker("phone")


def _base64ish(match: re.Match[str]) -> str:
    return marker("token") if _looks_random(match.group(0)) else match.group(0)


def _literal_pattern(literal: str) -> str:
    # Separators between characters are optional so "AB123CD" matches "ab-123 cd".
    chars = [c for c in literal if not c.isspace() and c not in "-_."]
    return r"[\s._-]?".join(re.escape(c) for c in chars)


class Redactor:
    """``redact(text)`` returns ``text`` with personal data and secrets replaced."""

    def __init__(self, known_secrets_provider: KnownSecretsProvider | None = None) -> None:
        self._provider = known_secrets_provider
        self._cached_key: frozenset[str] | None = None
        self._cached_pattern: re.Pattern[str] | None = None

    def _literals(self) -> re.Pattern[str] | None:
        if self._provider is None:
            return None
        literals = frozenset(
            s.strip()
            for s in list(self._provider())[:MAX_LITERALS]
            if isinstance(s, str) and len(_literal_pattern(s.strip())) > 0
            and sum(1 for c in s if not c.isspace()) >= MIN_LITERAL_LENGTH
        )
        if literals != self._cached_key:
            self._cached_key = literals
            ordered = sorted(literals, key=len, reverse=True)
            self._cached_pattern = (
                re.compile("|".join(_literal_pattern(s) for s in ordered), re.IGNORECASE)
                if ordered
                else None
            )
        return self._cached_pattern

    def redact(self, text: str) -> str:
        literals = self._literals()
        if literals is not None:
            text = literals.sub(marker("known"), text)
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + marker("password"), text)
        text = _BEARER.sub(lambda m: m.group("scheme") + " " + marker("token"), text)
        text = _JWT.sub(marker("jwt"), text)
        text = _KEY_VALUE.sub(
            lambda m: m.group("key") + m.group("sep") + marker(_kind(m.group("key"))), text
        )
        text = _EMAIL.sub(marker("email"), text)
        text = _MAC.sub(marker("mac"), text)
        text = _IPV6_CANDIDATE.sub(_ipv6, text)
        text = _IPV4.sub(_ipv4, text)
        text = _HEX_SECRET.sub(marker("hex"), text)
        text = _BASE64ISH.sub(_base64ish, text)
        text = _PHONE.sub(_phone, text)
        if literals is not None:
            # Removing other shapes can splice a literal's pieces back together.
            text = literals.sub(marker("known"), text)
        return text

    __call__ = redact


def _kind(key: str) -> str:
    lowered = key.lower()
    if "ssid" in lowered:
        return "ssid"
    if lowered in {"sn", "s/n", "imei"} or lowered.startswith("serial"):
        return "serial"
    if lowered in {"name", "label", "person", "plate", "email", "phone", "mac"}:
        return lowered
    if lowered.startswith("user") or lowered in {"login", "owner"}:
        return "user"
    return "secret"
