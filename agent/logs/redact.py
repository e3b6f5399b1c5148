"""Scrubbing personal data and secrets out of log text before it leaves the device.

The :class:`Redactor` works on *formatted* text (a record's final message plus
its exception text), never on a template whose ``args`` could smuggle values
past it.  It removes two kinds of things:

* shapes that are personal or secret wherever they appear: e-mail addresses,
  phone numbers, IPv4/IPv6 and MAC addresses, bearer/JWT/hex/base64-like
  tokens, ``key=value`` secrets (passwords, PSKs, SSIDs, serials, codes),
  passwords inside URLs and every non-numeric value of a URL query;
* literals only the device knows are sensitive -- enrolled names, watched
  plates, the Wi-Fi SSID, the serial number -- from a provider the
  composition root supplies, asked afresh on every call so a name enrolled a
  minute ago is already covered; and literals handed to :meth:`Redactor.remember`
  (every SSID and passphrase this process has tried, connected or not).

Literals are matched case-insensitively and with optional separators between
characters, so the plate ``AB123CD`` is also caught as ``ab-123 cd``.  Both
kinds are also found in encoded form (:mod:`agent.logs.encoded`): percent-,
form-, JSON-, ``\\x``- and HTML-escaped, nested, and (literals only) as hex or
base64 of their UTF-8.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Iterable

from agent.logs.encoded import Span, View, binary_runs, decoded_views

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
# A URL query's values are whatever a client typed (a name, a search): any that is not
# a plain number goes, whatever its key.
_QUERY_VALUE = re.compile(
    r"(?P<head>[?&][A-Za-z0-9_.~%+-]{1,64}=)(?P<value>[^&\s#\"'<>]*[^&\s#\"'<>0-9.:-][^&\s#\"'<>]*)"
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
    # Separators between characters are optional so "AB123CD" matches "ab-123 cd"; a
    # run of them (as in "Ann  Lee" or "A - B") still matches the literal itself.
    chars = [c for c in literal if not c.isspace() and c not in "-_."]
    return r"[\s._-]*".join(re.escape(c) for c in chars)


def _literal_ok(literal: str) -> bool:
    return (
        len(_literal_pattern(literal)) > 0
        and sum(1 for c in literal if not c.isspace()) >= MIN_LITERAL_LENGTH
    )


def _kv_span(match: re.Match[str]) -> tuple[Span, str] | None:
    return match.span("value"), _kind(match.group("key"))


def _checked(
    kind: str, check: Callable[[re.Match[str]], str] | None = None
) -> Callable[[re.Match[str]], tuple[Span, str] | None]:
    def span(match: re.Match[str]) -> tuple[Span, str] | None:
        if check is not None and check(match) == match.group(0):
            return None  # the validator said: not really this shape
        return match.span(), kind

    return span


# The shapes again, as spans to replace in the raw text when a decoded view has them.
_SHAPE_SPANS: tuple[
    tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[Span, str] | None]], ...
] = (
    (_URL_PASSWORD, lambda m: ((m.end("head"), m.end()), "password")),
    (_BEARER, lambda m: ((m.end("scheme"), m.end()), "token")),
    (_JWT, _checked("jwt")),
    (_KEY_VALUE, _kv_span),
    (_QUERY_VALUE, lambda m: (m.span("value"), "query")),
    (_EMAIL, _checked("email")),
    (_MAC, _checked("mac")),
    (_IPV6_CANDIDATE, _checked("ipv6", _ipv6)),
    (_IPV4, _checked("ipv4", _ipv4)),
    (_HEX_SECRET, _checked("hex")),
    (_BASE64ISH, _checked("token", _base64ish)),
    (_PHONE, _checked("phone", _phone)),
)


def _replace_spans(text: str, found: list[tuple[Span, str]]) -> str:
    """``text`` with each span replaced by its marker; overlapping spans merge."""
    if not found:
        return text
    merged: list[tuple[int, int, str]] = []
    for (start, end), kind in sorted(found):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2])
        else:
            merged.append((start, end, kind))
    parts: list[str] = []
    position = 0
    for start, end, kind in merged:
        parts += [text[position:start], marker(kind)]
        position = end
    parts.append(text[position:])
    return "".join(parts)


class Redactor:
    """``redact(text)`` returns ``text`` with personal data and secrets replaced."""

    def __init__(self, known_secrets_provider: KnownSecretsProvider | None = None) -> None:
        self._provider = known_secrets_provider
        self._cached_key: frozenset[str] | None = None
        self._cached_pattern: re.Pattern[str] | None = None
        # Insertion-ordered, so the oldest go first when the cap is reached.
        self._remembered: dict[str, None] = {}
        self._lock = threading.Lock()

    def remember(self, *literals: str | None) -> None:
        """Redact these from now on, for this process's lifetime, whatever the provider says.

        For values no store keeps but a log line may still carry: the SSID and
        passphrase of a Wi-Fi attempt that failed, before anything is logged about it.
        """
        with self._lock:
            for literal in literals:
                if literal and _literal_ok(literal.strip()):
                    self._remembered[literal.strip()] = None
            while len(self._remembered) > MAX_LITERALS:
                del self._remembered[next(iter(self._remembered))]

    def _literals(self) -> re.Pattern[str] | None:
        provided = list(self._provider())[:MAX_LITERALS] if self._provider is not None else []
        with self._lock:
            remembered = list(self._remembered)
        literals = frozenset(
            s.strip()
            for s in [*remembered, *provided]
            if isinstance(s, str) and _literal_ok(s.strip())
        )
        if literals != self._cached_key:
            ordered = sorted(literals, key=len, reverse=True)
            self._cached_pattern = (
                re.compile("|".join(_literal_pattern(s) for s in ordered), re.IGNORECASE)
                if ordered
                else None
            )
            self._cached_key = literals
        return self._cached_pattern

    def redact(self, text: str) -> str:
        literals = self._literals()
        # Encoded forms first: the plain shapes below would otherwise split an escaped
        # secret into pieces no view can reassemble.
        text = self._redact_encoded(text, literals)
        if literals is not None:
            text = literals.sub(marker("known"), text)
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + marker("password"), text)
        text = _BEARER.sub(lambda m: m.group("scheme") + " " + marker("token"), text)
        text = _JWT.sub(marker("jwt"), text)
        text = _KEY_VALUE.sub(
            lambda m: m.group("key") + m.group("sep") + marker(_kind(m.group("key"))), text
        )
        text = _QUERY_VALUE.sub(lambda m: m.group("head") + marker("query"), text)
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

    @staticmethod
    def _redact_encoded(text: str, literals: re.Pattern[str] | None) -> str:
        found: list[tuple[Span, str]] = []
        for view in decoded_views(text):
            found += _view_spans(view, literals)
        if literals is not None:
            # Hex and base64 decode to anything: searched for known literals only.
            found += [
                (span, "known") for span, decoded in binary_runs(text) if literals.search(decoded)
            ]
        return _replace_spans(text, found)


def _view_spans(view: View, literals: re.Pattern[str] | None) -> list[tuple[Span, str]]:
    found: list[tuple[Span, str]] = []
    if literals is not None:
        found += [(view.raw_span(*m.span()), "known") for m in literals.finditer(view.text)
                  if m.end() > m.start()]
    for pattern, span_of in _SHAPE_SPANS:
        for match in pattern.finditer(view.text):
            hit = span_of(match)
            if hit is not None and hit[0][1] > hit[0][0]:
                found.append((view.raw_span(*hit[0]), hit[1]))
    return found


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
