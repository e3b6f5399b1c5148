"""Provisioning state on disk: binding, the Wi-Fi network (never its key), used tokens, account.

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
from collections.abc import Callable, Mapping

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DecodeError, DeviceIOError, PolicyError
from agent.layout import StateLayout
from agent.provisioning.binding import Binding, generate_verification_code, is_trivial_code
from agent.provisioning.wifi import WifiCredentials
from drivers.logs.files import FileHolder

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
        """Remember which network the device joined -- never its passphrase.

        The backend (wpa_supplicant, NetworkManager, the ESP-AT module) saved the
        network it confirmed and rejoins it by itself; the agent needs only the
        name, to know it is provisioned, to export it and to find the network when
        the account is erased.  A key kept here too would only be a second copy.
        """
        body = {
            "v": 2,
            "ssid": credentials.ssid,
            "hidden": credentials.hidden,
            "secured": bool(credentials.passphrase),
        }
        write_private(self.credentials_path, json.dumps(body).encode())

    def has_credentials(self) -> bool:
        return self.credentials_path.is_file()

    def _saved(self) -> dict[str, object] | None:
        data = read_json(self.credentials_path)
        if data is not None and not isinstance(data.get("ssid"), str):
            raise DecodeError(f"{self.credentials_path} is malformed")
        return data

    def load_credentials(self) -> WifiCredentials | None:
        """The saved network, without a passphrase (none is kept)."""
        data = self._saved()
        if data is None:
            return None
        return WifiCredentials(ssid=str(data["ssid"]), hidden=data.get("hidden") is True)

    def saved_secured(self) -> bool:
        """Whether the saved network needs a passphrase (which the backend keeps)."""
        data = self._saved()
        return data is not None and bool(data.get("secured") or data.get("passphrase"))

    def drop_stored_passphrase(self) -> bool:
        """Rewrite a wifi.json from before version 2 without its passphrase; True if it had one."""
        data = self._saved()
        if data is None or "passphrase" not in data:
            return False
        self.save_credentials(
            WifiCredentials(
                ssid=str(data["ssid"]),
                passphrase=data["passphrase"] if isinstance(data["passphrase"], str) else None,
                hidden=data.get("hidden") is True,
            )
        )
        return True

    def save_account(self, account: str) -> None:
        write_private(self._layout.account, json.dumps({"v": 1, "account": account}).encode())

    def load_account(self) -> str | None:
        data = read_json(self._layout.account)
        account = None if data is None else data.get("account")
        return account if isinstance(account, str) else None


class WifiCredentialsHolder(FileHolder):
    """The saved Wi-Fi network as personal data: exported without its passphrase.

    A copy of one's data names the network; the passphrase is a key to the
    owner's LAN, and an export travels further than the device, so it stays here.
    Erasing it also removes the network from the Wi-Fi backend (``forget``, given
    the saved SSID) -- first, so a backend that cannot be reached leaves wifi.json
    in place for the retry that still needs to know which network to remove.
    """

    def __init__(
        self, store: FileProvisioningStore, forget: Callable[[str | None], int] | None = None
    ) -> None:
        super().__init__("wifi_credentials", store.credentials_path)
        self._store = store
        self._forget = forget

    def export_personal_data(self) -> Mapping[str, object]:
        saved = self._store.load_credentials()
        if saved is None:
            return {}
        return {
            "ssid": saved.ssid,
            "hidden": saved.hidden,
            "passphrase": (
                "set, kept by the Wi-Fi system only" if self._store.saved_secured() else "none"
            ),
        }

    def erase_personal_data(self) -> int:
        removed = 0
        if self._forget is not None:
            try:
                saved = self._store.load_credentials()
            except DecodeError:
                saved = None  # unreadable: the backend still removes what it can find
            removed = self._forget(None if saved is None else saved.ssid)
        return removed + super().erase_personal_data()


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
