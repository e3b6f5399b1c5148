"""Device binding: the verification code on the sticker and the account QR.

The verification code is generated once at first boot from :mod:`secrets` and
is the SPAKE2 password of the LAN API; trivial codes (few distinct digits,
runs, short repeats) are rejected and drawn again.  The binding QR
(``{"v":1,"account":..,"token":..,"exp":..}``) carries a single-use token: the
ledger records it before the binding is acted on, so a crash can only burn a
token, never let it be used twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import secrets
import urllib.parse
from collections.abc import Callable
from typing import Protocol

from agent.errors import DecodeError, PolicyError, TooLargeError

CODE_DIGITS = 8
LABEL_SCHEME = "edge-agent:provision"
MAX_BINDING_TEXT = 1024
MAX_JSON_DEPTH = 4
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")
_BINDING_KEYS = frozenset({"v", "account", "token", "exp"})


@dataclasses.dataclass(frozen=True)
class Binding:
    serial_number: str
    verification_code: str = dataclasses.field(repr=False)


def is_trivial_code(code: str) -> bool:
    """True for codes a person might guess first (see module docstring)."""
    if len(code) != CODE_DIGITS or not (code.isascii() and code.isdigit()):
        return True
    if len(set(code)) <= 3:
        return True
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(code)}
    if steps in ({1}, {9}):
        return True
    return any(code == code[:period] * (CODE_DIGITS // period) for period in (2, 4))


def generate_verification_code(randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    while True:
        code = "".join(str(randbelow(10)) for _ in range(CODE_DIGITS))
        if not is_trivial_code(code):
            return code


def check_verification_code(code: str) -> str:
    cleaned = code.replace("-", "").replace(" ", "")
    if len(cleaned) != CODE_DIGITS or not (cleaned.isascii() and cleaned.isdigit()):
        raise DecodeError(f"verification code must be {CODE_DIGITS} digits")
    return cleaned


def label_payload(binding: Binding) -> str:
    """Text for the sticker's QR code: serial number and verification code."""
    query = urllib.parse.urlencode(
        {"v": "1", "sn": binding.serial_number, "code": binding.verification_code}
    )
    return f"{LABEL_SCHEME}?{query}"


def parse_label(text: str) -> Binding:
    if len(text) > 256:
        raise TooLargeError("label payload longer than 256 characters")
    scheme, sep, query = text.partition("?")
    if scheme != LABEL_SCHEME or not sep:
        raise DecodeError("not an edge-agent label")
    try:
        fields = urllib.parse.parse_qs(query, strict_parsing=True, max_num_fields=4)
    except ValueError as exc:
        raise DecodeError(f"bad label query: {exc}") from exc
    if fields.get("v") != ["1"] or len(fields.get("sn", ())) != 1:
        raise DecodeError("label needs v=1 and one serial number")
    code = check_verification_code(fields.get("code", [""])[0])
    return Binding(fields["sn"][0], code)


# --- account binding QR ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BindingRequest:
    account: str
    token: str = dataclasses.field(repr=False)
    expires_at: int

    @property
    def token_digest(self) -> str:
        return token_digest(self.token)


def token_digest(token: str) -> str:
    """What the ledger stores: a digest, so a leaked ledger reveals no token."""
    return hashlib.sha256(b"edge-agent binding token\x00" + token.encode()).hexdigest()


def _json_depth(text: str) -> int:
    """Bracket nesting depth, counted before json.loads can recurse on it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_binding_payload(text: str, now: float) -> BindingRequest:
    if len(text) > MAX_BINDING_TEXT:
        raise TooLargeError(f"binding payload longer than {MAX_BINDING_TEXT} characters")
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise TooLargeError("binding payload nested too deeply")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("binding payload is not JSON") from exc
    if not isinstance(data, dict):
        raise DecodeError("binding payload must be a JSON object")
    if set(data) != _BINDING_KEYS:
        raise DecodeError(f"binding payload needs exactly the keys {sorted(_BINDING_KEYS)}")
    version, account, token, exp = data["v"], data["account"], data["token"], data["exp"]
    if version != 1 or isinstance(version, bool):
        raise DecodeError("unsupported binding payload version")
    if not isinstance(account, str) or not _ACCOUNT_RE.fullmatch(account):
        raise DecodeError("binding account is malformed")
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise DecodeError("binding token is malformed")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise DecodeError("binding expiry must be an integer")
    if exp <= now:
        raise PolicyError("binding payload has expired")
    return BindingRequest(account=account, token=token, expires_at=exp)


class TokenLedger(Protocol):
    def claim(self, digest: str, expires_at: int, now: float) -> bool:
        """Record ``digest`` as used, durably; False if it was already used."""
        ...


def redeem(request: BindingRequest, ledger: TokenLedger, now: float) -> BindingRequest:
    """Consume the request's token; a token seen before raises PolicyError."""
    if not ledger.claim(request.token_digest, request.expires_at, now):
        raise PolicyError("binding token was already used")
    return request
