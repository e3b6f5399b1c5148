"""Seeing through the encodings a secret can wear inside a log line.

A name or passphrase rarely reaches a log in the form it was typed: a URL
carries it percent-encoded (``Alice%20Smith``, ``Alice+Smith``), a JSON dump
with ``\\u00e9``, a ``repr`` of bytes or wpa_supplicant's ``printf_encode``
with ``\\xc3\\xa9``, HTML with ``&#233;``, a token or payload as hex or base64.
The :class:`~agent.logs.redact.Redactor` matches literals and shapes on plain
text, so this module turns a line into plain *views* it can search, each able
to say which characters of the original line a match came from, so exactly
those are replaced -- across escapes nested up to :data:`MAX_DEPTH` times and
mixed within one word.

* :func:`decoded_views` -- escape sequences decoded (and a second view with
  ``+`` read as a space, as HTML forms send it), with a map back to the raw text;
* :func:`binary_runs` -- hex and base64 runs decoded to text, each replaced
  whole if a known literal is in it (their decoding is only ever searched for
  literals: random bytes can look like any shape).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import re
from collections.abc import Iterator

MAX_DEPTH = 3
# Bounds the work one line can cause: a log line is capped upstream anyway.
MAX_TEXT_CHARS = 64 * 1024

_PIECES = {
    "pct": r"%(?P<pct>[0-9A-Fa-f]{2})",
    "hexbyte": r"\\x(?P<hexbyte>[0-9A-Fa-f]{2})",
    "u16": r"\\u(?P<u16>[0-9A-Fa-f]{4})",
    "u32": r"\\U(?P<u32>[0-9A-Fa-f]{8})",
    "simple": r"\\(?P<simple>[\\\"'/bfnrt])",
    "dec": r"&#(?P<dec>[0-9]{1,7});",
    "hexent": r"&#[xX](?P<hexent>[0-9A-Fa-f]{1,6});",
    "named": r"&(?P<named>amp|lt|gt|quot|apos|nbsp);",
}


def _family(*names: str) -> re.Pattern[str]:
    return re.compile("|".join(_PIECES[n] for n in names))


# An encoder applies one family per layer, so each layer is also decoded one family
# at a time ("%00" inside a JSON-escaped secret must stay "%00"), besides all at once
# (a line mixing families).  Without the one-character escapes: a stray backslash
# just before an escape (a path's last one, then \xc3\xa9) would pair with it.
_ESCAPE = _family(*_PIECES)
_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("%", _family("pct")),
    ("\\", _family("hexbyte", "u16", "u32", "simple")),
    ("\\", _family("hexbyte", "u16", "u32")),
    ("&", _family("dec", "hexent", "named")),
    ("", _ESCAPE),
)
_SIMPLE = {"\\": "\\", '"': '"', "'": "'", "/": "/", "b": "\b", "f": "\f", "n": "\n",
           "r": "\r", "t": "\t"}
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'", "nbsp": "\u00a0"}
# Cheap test before any work: none of these, no escape.
_TRIGGERS = ("%", "\\", "&", "+")

Span = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class View:
    """``text`` decoded from a raw line; ``origin[i]`` is the raw span of ``text[i]``."""

    text: str
    origin: tuple[Span, ...]

    def raw_span(self, start: int, end: int) -> Span:
        return self.origin[start][0], self.origin[end - 1][1]


class _Layer:
    """One pass over a text, decoding each escape once (nested ones wait for the next)."""

    def __init__(self, text: str, pattern: re.Pattern[str] = _ESCAPE) -> None:
        self.text = text
        self.pattern = pattern
        self.out: list[str] = []
        self.origin: list[Span] = []
        self.pending: list[tuple[int, Span]] = []  # bytes of adjacent %XX / \xXX escapes
        self.high: tuple[int, int] | None = None  # a \uD8xx waiting for its low half

    def emit(self, char: str, span: Span) -> None:
        self.out.append(char)
        self.origin.append(span)

    def copy(self, start: int, end: int) -> None:
        self.flush()
        for i in range(start, end):
            self.emit(self.text[i], (i, i + 1))

    def flush_bytes(self) -> None:
        # Adjacent byte escapes are one UTF-8 sequence: é is %C3%A9, never two characters.
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        first = self.pending[0][1][0] if self.pending else 0
        for index, (byte, (_, end)) in enumerate(self.pending):
            chars = decoder.decode(bytes([byte]), final=index == len(self.pending) - 1)
            for char in chars:
                self.emit(char, (first, end))
            if chars:
                first = end
        self.pending.clear()

    def flush(self) -> None:
        self.flush_bytes()
        if self.high is not None:
            self.emit(chr(self.high[0]), (self.high[1], self.high[1] + 6))
            self.high = None

    def escape(self, match: re.Match[str]) -> None:
        groups = match.groupdict()  # a family's pattern has only its own groups
        byte = groups.get("pct") or groups.get("hexbyte")
        if byte is not None:
            if self.high is not None or (self.pending and self.pending[-1][1][1] != match.start()):
                self.flush()
            self.pending.append((int(byte, 16), match.span()))
            return
        self.flush_bytes()
        code = int(groups["u16"], 16) if groups.get("u16") is not None else None
        if code is not None and 0xDC00 <= code < 0xE000 and self.high is not None:
            combined = 0x10000 + ((self.high[0] - 0xD800) << 10) + (code - 0xDC00)
            self.emit(chr(combined), (self.high[1], match.end()))
            self.high = None
            return
        self.flush()
        if code is not None and 0xD800 <= code < 0xDC00:
            self.high = (code, match.start())
        else:
            self.emit(chr(code) if code is not None else _char_of(match), match.span())

    def run(self) -> tuple[str, list[Span]] | None:
        position = 0
        changed = False
        for match in self.pattern.finditer(self.text):
            if match.start() > position:
                self.copy(position, match.start())
            self.escape(match)
            changed = True
            position = match.end()
        self.copy(position, len(self.text))
        self.flush()
        return ("".join(self.out), self.origin) if changed else None


def _decode_once(
    text: str, pattern: re.Pattern[str] = _ESCAPE
) -> tuple[str, list[Span]] | None:
    """``text`` with one layer of escapes decoded, or None when it has none."""
    return _Layer(text, pattern).run()


def _char_of(match: re.Match[str]) -> str:
    groups = match.groupdict()  # a family's pattern has only its own groups
    if groups.get("u32") is not None:
        code = int(groups["u32"], 16)
    elif groups.get("simple") is not None:
        return _SIMPLE[groups["simple"]]
    elif groups.get("dec") is not None:
        code = int(groups["dec"])
    elif groups.get("hexent") is not None:
        code = int(groups["hexent"], 16)
    else:
        return _NAMED[groups["named"]]
    return chr(code) if 0 <= code <= 0x10FFFF else "\ufffd"


def decoded_views(text: str) -> list[View]:
    """Every plain reading of ``text`` worth searching; empty when it holds no escape.

    At each layer a ``+`` may be a form-encoded space (decoded *before* the
    percent escapes of that layer, where ``%2B`` is a real plus) or a plus.
    """
    if len(text) > MAX_TEXT_CHARS or not any(t in text for t in _TRIGGERS):
        return []
    views: dict[str, View] = {}
    seen: set[str] = {text}
    frontier: list[tuple[str, list[Span]]] = [(text, [(i, i + 1) for i in range(len(text))])]
    for _ in range(MAX_DEPTH):
        following: list[tuple[str, list[Span]]] = []
        for current, origin in frontier:
            readings = [current, current.replace("+", " ")] if "+" in current else [current]
            for reading in readings:
                if reading not in seen:
                    seen.add(reading)
                    views[reading] = View(reading, tuple(origin))
                for trigger, pattern in _FAMILIES:
                    if trigger not in reading:
                        continue
                    decoded = _decode_once(reading, pattern)
                    if decoded is None or decoded[0] in seen:
                        continue
                    layer_text, layer = decoded
                    seen.add(layer_text)
                    # Compose: a character of this layer came from a span of the previous one.
                    composed = [(origin[a][0], origin[b - 1][1]) for a, b in layer]
                    views[layer_text] = View(layer_text, tuple(composed))
                    following.append((layer_text, composed))
        frontier = following
    for current, origin in frontier:
        if "+" in current and (spaced := current.replace("+", " ")) not in seen:
            views[spaced] = View(spaced, tuple(origin))
    return list(views.values())


_HEX_RUN = re.compile(r"[0-9A-Fa-f]{6,}")
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{4,}={0,2}")


def _looks_encoded(run: str) -> bool:
    # Ordinary words ("provisioning", "Camera", "HTTP") are base64-alphabet runs too;
    # an encoding of text almost always mixes cases with digits or symbols.
    letters = run.rstrip("=")
    plain_word = letters.isupper() or letters.islower() or letters.istitle()
    return not (letters.isalpha() and plain_word)


def _text_of(raw: bytes) -> str:
    return raw.decode("utf-8", "ignore")


def _base64_texts(run: str) -> Iterator[str]:
    body = run.rstrip("=")
    alphabet = body.replace("-", "+").replace("_", "/")
    # A secret inside a longer blob may start at any of four offsets of a quantum.
    for skip in range(4):
        chunk = alphabet[skip:]
        chunk = chunk[: len(chunk) - len(chunk) % 4] if len(chunk) % 4 == 1 else chunk
        if len(chunk) < 4:
            continue
        try:
            yield _text_of(base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True))
        except (binascii.Error, ValueError):
            continue


def binary_runs(text: str) -> Iterator[tuple[Span, str]]:
    """(raw span, decoded text) of every hex or base64 run in ``text``."""
    if len(text) > MAX_TEXT_CHARS:
        return
    for match in _HEX_RUN.finditer(text):
        # A stray hex digit next to the run shifts which digit starts a byte: try both.
        for start in (0, 1):
            chunk = match.group(0)[start:]
            yield match.span(), _text_of(bytes.fromhex(chunk[: len(chunk) // 2 * 2]))
    for match in _B64_RUN.finditer(text):
        if _looks_encoded(match.group(0)):
            for decoded in _base64_texts(match.group(0)):
                yield match.span(), decoded
