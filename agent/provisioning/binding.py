"""Device binding: the verification code on the sticker and the account QR.

The verification code is generated once at first boot from :mod:`secrets` and
is the SPAKE2 password of the LAN API; trivial codes (few distinct digits,
runs, short repeats) are rejected and drawn again.

The binding QR the owner's app shows to the camera is, in version 2::

    {"v": 2, "account": .., "token": .., "exp": .., "key": .., "pop": ..}

``key`` is the owner's raw Ed25519 public key and ``pop`` an HMAC-SHA256,
keyed with the sticker's verification code, over the serial number and every
other field (:func:`binding_proof`): only someone who read the sticker can
make a QR that binds this device, and nobody can swap the key in a QR they
photographed.  ``token`` is single-use: the ledger records it before the
binding is acted on, so a crash can only burn a token, never let it be used
twice.  Version 1 (no key, no proof) bound an account without any proof and
is refused.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import itertools
import json
import re
import secrets
import struct
import urllib.parse
from collections.abc import Callable
from typing import Protocol

from agent.errors import DecodeError, PolicyError, TooLargeError, VerificationError
from agent.jsonform import json_depth

CODE_DIGITS = 8
LABEL_SCHEME = "edge-agent:provision"
MAX_BINDING_TEXT = 1024
MAX_JSON_DEPTH = 4
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")
BINDING_VERSION = 2
OWNER_KEY_BYTES = 32
_LEGACY_BINDING_KEYS = frozenset({"v", "account", "token", "exp"})
_BINDING_KEYS = _LEGACY_BINDING_KEYS | {"key", "pop"}
# 32 bytes in unpadded base64url; one spelling only (see _b64url_decode).
_B64URL_32_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_PROOF_LABEL = b"edge-agent binding QR proof v2"
MAX_EXPIRY = 2**40


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
    owner_key: bytes
    proof: bytes = dataclasses.field(repr=False)

    @property
    def token_digest(self) -> str:
        return token_digest(self.token)


def token_digest(token: str) -> str:
    """What the ledger stores: a digest, so a leaked ledger reveals no token."""
    return hashlib.sha256(b"edge-agent binding token\x00" + token.encode()).hexdigest()


def check_account(value: object) -> str:
    """An account name as every binding channel accepts it (letters, digits, ``_.@+-``)."""
    if not isinstance(value, str) or not _ACCOUNT_RE.fullmatch(value):
        raise DecodeError("binding account is malformed (1..128 of A-Z a-z 0-9 _ . @ + -)")
    return value


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_32(value: object, name: str) -> bytes:
    # The regex first: urlsafe_b64decode silently drops characters outside its
    # alphabet.  The round trip then refuses the second spelling a 43-character
    # text can have (non-zero padding bits), so one key has one QR text.
    if not isinstance(value, str) or not _B64URL_32_RE.fullmatch(value):
        raise DecodeError(f"binding {name} must be 32 bytes in unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(value + "=")
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"binding {name} is not base64url") from exc
    if len(raw) != OWNER_KEY_BYTES or _b64url(raw) != value:
        raise DecodeError(f"binding {name} must be 32 bytes in unpadded base64url")
    return raw


def _proof_message(serial: str, account: str, token: str, exp: int, owner_key: bytes) -> bytes:
    # Length-prefixed fields after a domain label: no two field tuples share a
    # byte string, and the proof means nothing to any other HMAC user of the code.
    parts = (_PROOF_LABEL, serial.encode(), account.encode(), token.encode())
    framed = b"".join(struct.pack(">I", len(p)) + p for p in parts)
    return framed + struct.pack(">Q", exp) + struct.pack(">I", len(owner_key)) + owner_key


def binding_proof(device: Binding, account: str, token: str, exp: int, owner_key: bytes) -> bytes:
    """HMAC-SHA256 keyed with the verification code over the QR's fields and the serial.

    An 8-digit code is a weak HMAC key: whoever photographs a binding QR can
    find the code offline (10**8 HMACs).  Accepted because the QR is shown to
    the very device whose sticker carries the code; the token it carries is
    spent at once either way.
    """
    message = _proof_message(device.serial_number, account, token, exp, owner_key)
    return hmac.new(device.verification_code.encode(), message, hashlib.sha256).digest()


def build_binding_payload(
    device: Binding, account: str, token: str, exp: int, owner_key: bytes
) -> str:
    """The text of a version-2 binding QR for ``device`` (what the owner's app shows)."""
    check_account(account)
    if not _TOKEN_RE.fullmatch(token):
        raise DecodeError("binding token is malformed")
    if len(owner_key) != OWNER_KEY_BYTES:
        raise DecodeError("the owner's key is a raw 32-byte Ed25519 public key")
    if not 0 < exp < MAX_EXPIRY:
        raise DecodeError("binding expiry out of range")
    proof = binding_proof(device, account, token, exp, owner_key)
    body = {
        "v": BINDING_VERSION,
        "account": account,
        "token": token,
        "exp": exp,
        "key": _b64url(owner_key),
        "pop": _b64url(proof),
    }
    return json.dumps(body, separators=(",", ":"))


def parse_binding_payload(text: str, now: float) -> BindingRequest:
    """Parse a binding QR; the proof is checked by :func:`verify_binding_proof`."""
    if len(text) > MAX_BINDING_TEXT:
        raise TooLargeError(f"binding payload longer than {MAX_BINDING_TEXT} characters")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise TooLargeError("binding payload nested too deeply")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("binding payload is not JSON") from exc
    if not isinstance(data, dict):
        raise DecodeError("binding payload must be a JSON object")
    version = data.get("v")
    if set(data) == _LEGACY_BINDING_KEYS and version == 1 and not isinstance(version, bool):
        raise PolicyError("binding QR lacks the owner's key; update the app")
    if set(data) != _BINDING_KEYS:
        raise DecodeError(f"binding payload needs exactly the keys {sorted(_BINDING_KEYS)}")
    account, token, exp = data["account"], data["token"], data["exp"]
    if version != BINDING_VERSION or isinstance(version, bool):
        raise DecodeError("unsupported binding payload version")
    account = check_account(account)
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise DecodeError("binding token is malformed")
    if not isinstance(exp, int) or isinstance(exp, bool) or not 0 < exp < MAX_EXPIRY:
        raise DecodeError("binding expiry must be a positive integer")
    owner_key = _b64url_32(data["key"], "key")
    proof = _b64url_32(data["pop"], "pop")
    if exp <= now:
        raise PolicyError("binding payload has expired")
    return BindingRequest(account, token, exp, owner_key, proof)


def verify_binding_proof(request: BindingRequest, device: Binding) -> None:
    """Raise VerificationError unless the QR was made with this device's code."""
    expected = binding_proof(
        device, request.account, request.token, request.expires_at, request.owner_key
    )
    if not hmac.compare_digest(expected, request.proof):
        raise VerificationError("binding QR was not made for this device (proof does not match)")


class TokenLedger(Protocol):
    def claim(self, digest: str, expires_at: int, now: float) -> bool:
        """Record ``digest`` as used, durably; False if it was already used."""
        ...


def redeem(request: BindingRequest, ledger: TokenLedger, now: float) -> BindingRequest:
    """Consume the request's token; a token seen before raises PolicyError."""
    if not ledger.claim(request.token_digest, request.expires_at, now):
        raise PolicyError("binding token was already used")
    return request
