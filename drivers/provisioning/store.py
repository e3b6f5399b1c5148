"""Provisioning state on disk: binding, Wi-Fi credentials, used tokens, account.

Every file lives in ``<state_dir>/provisioning/``, is mode 0600, and is
written crash-safely (temp file, fsync, os.replace, fsync of the directory,
via :func:`drivers.upgrade.statefile.write_atomic`), so power loss leaves
either the old or the new content.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import threading
from collections.abc import Callable

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DecodeError, DeviceIOError, PolicyError
from agent.layout import StateLayout
from agent.provisioning.binding import Binding, generate_verification_code, is_trivial_code
from agent.provisioning.wifi import WifiCredentials

MAX_STATE_FILE = 1024 * 1024
MAX_LEDGER_ENTRIES = 10_000


def provisioning_dir(state_dir: pathlib.Path) -> pathlib.Path:
    return StateLayout(state_dir).provisioning_dir


def write_private(path: pathlib.Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (0600) in a 0700 directory."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceIOError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    write_atomic(path, data)


def read_json(path: pathlib.Path) -> dict[str, object] | None:
    """The JSON object in ``path``, or None if the file does not exist."""
    raw = read_optional(path, MAX_STATE_FILE)
    if raw is None:
        return None
    if len(raw) > MAX_STATE_FILE:
        raise DecodeError(f"{path} is larger than {MAX_STATE_FILE} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DecodeError(f"{path} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise DecodeError(f"{path} does not hold a JSON object")
    return data


def load_or_create_binding(
    state_dir: pathlib.Path,
    serial_number: str,
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> Binding:
    """The device's verification code, generated and saved at first boot."""
    path = StateLayout(state_dir).binding
    data = read_json(path)
    if data is not None:
        code = data.get("verification_code")
        if not isinstance(code, str) or is_trivial_code(code):
            raise DecodeError(f"{path} holds no valid verification code")
        return Binding(serial_number, code)
    code = generate_verification_code(randbelow)
    write_private(path, json.dumps({"v": 1, "verification_code": code}).encode())
    return Binding(serial_number, code)


class FileProvisioningStore:
    def __init__(self, state_dir: pathlib.Path) -> None:
        self._layout = StateLayout(state_dir)

    @property
    def credentials_path(self) -> pathlib.Path:
        return self._layout.wifi_credentials

    def save_credentials(self, credentials: WifiCredentials) -> None:
        body = {
            "v": 1,
            "ssid": credentials.ssid,
            "passphrase": credentials.passphrase,
            "hidden": credentials.hidden,
        }
        write_private(self.credentials_path, json.dumps(body).encode())

    def has_credentials(self) -> bool:
        return self.credentials_path.is_file()

    def load_credentials(self) -> WifiCredentials | None:
        data = read_json(self.credentials_path)
        if data is None:
            return None
        ssid, passphrase, hidden = data.get("ssid"), data.get("passphrase"), data.get("hidden")
        if not isinstance(ssid, str) or not (passphrase is None or isinstance(passphrase, str)):
            raise DecodeError(f"{self.credentials_path} is malformed")
        return WifiCredentials(ssid=ssid, passphrase=passphrase, hidden=hidden is True)

    def save_account(self, account: str) -> None:
        write_private(self._layout.account, json.dumps({"v": 1, "account": account}).encode())

    def load_account(self) -> str | None:
        data = read_json(self._layout.account)
        account = None if data is None else data.get("account")
        return account if isinstance(account, str) else None


class FileTokenLedger:
    """Digests of used binding tokens with their expiry; expired ones are pruned."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        self._path = StateLayout(state_dir).used_tokens
        self._lock = threading.Lock()

    def _load(self) -> dict[str, int]:
        data = read_json(self._path)
        if data is None:
            return {}
        tokens = data.get("tokens")
        if not isinstance(tokens, dict):
            raise DecodeError(f"{self._path} is malformed")
        return {str(k): int(v) for k, v in tokens.items() if isinstance(v, int)}

    def claim(self, digest: str, expires_at: int, now: float) -> bool:
        with self._lock:
            tokens = {k: v for k, v in self._load().items() if v > now}
            if digest in tokens:
                return False
            if len(tokens) >= MAX_LEDGER_ENTRIES:
                raise PolicyError("too many unexpired binding tokens recorded")
            tokens[digest] = expires_at
            write_private(self._path, json.dumps({"v": 1, "tokens": tokens}).encode())
            return True
