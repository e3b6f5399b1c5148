"""Proof of possession of the verification code over the LAN API.

SPAKE2 (python-spake2): the installer is side A, the device side B, and the
password is the 8-digit verification code.  Neither message lets an observer
or an active peer test more than one code per session, and the code itself is
never sent.  From the shared key, HKDF-SHA256 derives (bound to the transcript)
two key-confirmation MAC keys and one AES-GCM key per direction.

Order: the installer proves first (``confirm_a``); the device answers with
``confirm_b`` only after checking it, so a wrong code learns nothing more than
"no".  Credentials, the owner binding and the replies to them are AES-GCM
sealed with a label and a sequence number in the associated data, so a
replayed, reordered or relabelled message fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.ed25519_basic import NotOnCurve
from spake2.spake2 import SPAKEError

from agent import cbor
from agent.errors import DecodeError, TooLargeError, VerificationError
from agent.provisioning.binding import check_account
from agent.provisioning.wifi import WifiCredentials

INSTALLER_ID = b"edge-agent/installer/v1"
_INFO = b"edge-agent LAN provisioning v1"
_NONCE = 12
MAX_SEALED = 1024
SPAKE2_MESSAGE_LEN = 33


def _frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


@dataclasses.dataclass(frozen=True)
class SessionKeys:
    confirm_installer: bytes = dataclasses.field(repr=False)
    confirm_device: bytes = dataclasses.field(repr=False)
    to_device: bytes = dataclasses.field(repr=False)
    to_installer: bytes = dataclasses.field(repr=False)
    transcript: bytes = dataclasses.field(repr=False)


def derive_keys(
    shared: bytes, serial: str, session_id: str, msg_a: bytes, msg_b: bytes
) -> SessionKeys:
    transcript = hashlib.sha256(
        _frame(INSTALLER_ID, serial.encode(), session_id.encode(), msg_a, msg_b)
    ).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=128, salt=transcript, info=_INFO).derive(shared)
    return SessionKeys(okm[:32], okm[32:64], okm[64:96], okm[96:], transcript)


def _mac(key: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.new(key, label + transcript, hashlib.sha256).digest()


def _status_tag(keys: SessionKeys, seq: int) -> bytes:
    return _mac(keys.confirm_installer, b"status" + struct.pack(">Q", seq), keys.transcript)


def _seal(key: bytes, label: bytes, session_id: str, seq: int, body: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    aad = _frame(label, session_id.encode(), struct.pack(">Q", seq))
    return nonce + AESGCM(key).encrypt(nonce, body, aad)


def _open(key: bytes, label: bytes, session_id: str, seq: int, sealed: bytes) -> bytes:
    if len(sealed) > MAX_SEALED:
        raise TooLargeError(f"sealed message larger than {MAX_SEALED} bytes")
    if len(sealed) < _NONCE + 16:
        raise DecodeError("sealed message too short")
    aad = _frame(label, session_id.encode(), struct.pack(">Q", seq))
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
    except InvalidTag as exc:
        raise VerificationError("sealed message did not authenticate") from exc


def encode_credentials(credentials: WifiCredentials) -> bytes:
    return json.dumps(
        {
            "ssid": credentials.ssid,
            "passphrase": credentials.passphrase,
            "hidden": credentials.hidden,
        }
    ).encode()


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_credentials(body: bytes) -> WifiCredentials:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("credentials are not JSON") from exc
    if not isinstance(data, dict) or set(data) != {"ssid", "passphrase", "hidden"}:
        raise DecodeError("credentials need ssid, passphrase and hidden")
    ssid, passphrase, hidden = data["ssid"], data["passphrase"], data["hidden"]
    if any(isinstance(v, str) and not _is_unicode(v) for v in (ssid, passphrase)):
        raise DecodeError("credentials contain lone surrogates")
    if not isinstance(ssid, str) or not 1 <= len(ssid.encode()) <= 32:
        raise DecodeError("SSID must be 1..32 bytes")
    if passphrase is not None and (not isinstance(passphrase, str) or len(passphrase) > 64):
        raise DecodeError("passphrase must be a string of at most 64 characters")
    if not isinstance(hidden, bool):
        raise DecodeError("hidden must be true or false")
    return WifiCredentials(ssid=ssid, passphrase=passphrase, hidden=hidden)


@dataclasses.dataclass(frozen=True)
class OwnerBinding:
    """The ``bind`` step: the account and the owner's raw Ed25519 public key."""

    account: str
    owner_key: bytes


OWNER_KEY_BYTES = 32
_BIND_LABEL = b"bind"
_BOUND_LABEL = b"bound"


def encode_owner_binding(request: OwnerBinding) -> bytes:
    # CBOR, not the credentials' JSON: the key is bytes and stays bytes.
    return cbor.dumps({"account": request.account, "owner_key": request.owner_key})


def decode_owner_binding(body: bytes) -> OwnerBinding:
    data = cbor.loads_untrusted(body, max_bytes=MAX_SEALED, max_depth=2)
    if not isinstance(data, dict) or set(data) != {"account", "owner_key"}:
        raise DecodeError("binding needs exactly account and owner_key")
    account, owner_key = data["account"], data["owner_key"]
    account = check_account(account)
    if not isinstance(owner_key, bytes) or len(owner_key) != OWNER_KEY_BYTES:
        raise DecodeError("owner_key must be the raw 32-byte Ed25519 public key")
    return OwnerBinding(account, owner_key)


def _decode_bound(body: bytes) -> str:
    data = cbor.loads_untrusted(body, max_bytes=MAX_SEALED, max_depth=2)
    device_id = data.get("device_id") if isinstance(data, dict) else None
    if not isinstance(device_id, str) or not device_id:
        raise DecodeError("the device sent no device id")
    return device_id


def _finish(side: SPAKE2_A | SPAKE2_B, message: bytes) -> bytes:
    if len(message) != SPAKE2_MESSAGE_LEN:
        raise DecodeError("SPAKE2 message has the wrong length")
    try:
        shared: bytes = side.finish(message)
    except (SPAKEError, NotOnCurve, ValueError) as exc:
        raise DecodeError("SPAKE2 message rejected") from exc
    return shared


class DevicePake:
    """Device side (SPAKE2 B) of one session."""

    def __init__(self, code: str, serial: str, session_id: str) -> None:
        self._spake = SPAKE2_B(code.encode(), idA=INSTALLER_ID, idB=serial.encode())
        self._serial = serial
        self.session_id = session_id
        self._keys: SessionKeys | None = None
        self.confirmed = False

    def respond(self, msg_a: bytes) -> bytes:
        msg_b: bytes = self._spake.start()
        shared = _finish(self._spake, msg_a)
        self._keys = derive_keys(shared, self._serial, self.session_id, msg_a, msg_b)
        return msg_b

    def check_confirmation(self, confirm_a: bytes) -> bytes:
        """Verify the installer's proof; only then return the device's proof."""
        keys = self._require_keys()
        if self.confirmed:
            raise VerificationError("session is already confirmed")
        expected = _mac(keys.confirm_installer, b"installer", keys.transcript)
        if not hmac.compare_digest(expected, confirm_a):
            raise VerificationError("verification failed")
        self.confirmed = True
        return _mac(keys.confirm_device, b"device", keys.transcript)

    def open_credentials(self, sealed: bytes, seq: int) -> WifiCredentials:
        if not self.confirmed:
            raise VerificationError("session is not confirmed")
        body = _open(self._require_keys().to_device, b"credentials", self.session_id, seq, sealed)
        return decode_credentials(body)

    def open_owner_binding(self, sealed: bytes, seq: int) -> OwnerBinding:
        if not self.confirmed:
            raise VerificationError("session is not confirmed")
        body = _open(self._require_keys().to_device, _BIND_LABEL, self.session_id, seq, sealed)
        return decode_owner_binding(body)

    def seal_bound(self, device_id: str, seq: int) -> bytes:
        """The answer to ``bind``: the device id that names the owner's topics from now on."""
        body = cbor.dumps({"device_id": device_id})
        return _seal(self._require_keys().to_installer, _BOUND_LABEL, self.session_id, seq, body)

    def check_status_request(self, seq: int, tag: bytes) -> None:
        """Status polls are MACed so nobody else can burn the installer's sequence."""
        keys = self._require_keys()
        if not self.confirmed:
            raise VerificationError("session is not confirmed")
        expected = _status_tag(keys, seq)
        if not hmac.compare_digest(expected, tag):
            raise VerificationError("status request did not authenticate")

    def seal_status(self, status: dict[str, object], seq: int) -> bytes:
        body = json.dumps(status).encode()
        return _seal(self._require_keys().to_installer, b"status", self.session_id, seq, body)

    def _require_keys(self) -> SessionKeys:
        if self._keys is None:
            raise VerificationError("session has no key yet")
        return self._keys


class InstallerPake:
    """Installer side (SPAKE2 A)."""

    def __init__(self, code: str, serial: str) -> None:
        self._spake = SPAKE2_A(code.encode(), idA=INSTALLER_ID, idB=serial.encode())
        self._serial = serial
        self._keys: SessionKeys | None = None
        self.session_id = ""
        self._seq = 0

    def next_seq(self) -> int:
        """Sequence numbers for sealed messages; the device refuses any it saw."""
        self._seq += 1
        return self._seq

    def start(self) -> bytes:
        msg_a: bytes = self._spake.start()
        self.msg_a = msg_a
        return msg_a

    def finish(self, session_id: str, msg_b: bytes) -> bytes:
        shared = _finish(self._spake, msg_b)
        self.session_id = session_id
        self._keys = derive_keys(shared, self._serial, session_id, self.msg_a, msg_b)
        return _mac(self._keys.confirm_installer, b"installer", self._keys.transcript)

    def verify_device(self, confirm_b: bytes) -> None:
        keys = self._require_keys()
        expected = _mac(keys.confirm_device, b"device", keys.transcript)
        if not hmac.compare_digest(expected, confirm_b):
            raise VerificationError("the device did not prove knowledge of the code")

    def seal_credentials(self, credentials: WifiCredentials, seq: int) -> bytes:
        keys = self._require_keys()
        return _seal(
            keys.to_device, b"credentials", self.session_id, seq, encode_credentials(credentials)
        )

    def seal_owner_binding(self, request: OwnerBinding, seq: int) -> bytes:
        keys = self._require_keys()
        return _seal(
            keys.to_device, _BIND_LABEL, self.session_id, seq, encode_owner_binding(request)
        )

    def open_bound(self, sealed: bytes, seq: int) -> str:
        """The device id from the device's sealed answer to ``bind``."""
        body = _open(self._require_keys().to_installer, _BOUND_LABEL, self.session_id, seq, sealed)
        return _decode_bound(body)

    def status_request_tag(self, seq: int) -> bytes:
        return _status_tag(self._require_keys(), seq)

    def open_status(self, sealed: bytes, seq: int) -> dict[str, object]:
        body = _open(self._require_keys().to_installer, b"status", self.session_id, seq, sealed)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise DecodeError("status is not JSON") from exc
        if not isinstance(data, dict):
            raise DecodeError("status must be a JSON object")
        return data

    def _require_keys(self) -> SessionKeys:
        if self._keys is None:
            raise VerificationError("session has no key yet")
        return self._keys
