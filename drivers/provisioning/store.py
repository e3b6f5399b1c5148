"""Provisioning state on disk: binding, the Wi-Fi network (never its key), used tokens, account.

Every file lives in ``<state_dir>/provisioning/``, is mode 0600, and is
written crash-safely (temp file, fsync, os.replace, fsync of the directory,
via :func:`agent.atomicfile.write_atomic`), so power loss leaves either the
old or the new content.  The saved Wi-Fi network (``wifi.json``) is sealed
under the ``wifi`` data key (:mod:`agent.sealing`): an erasure that destroys
the key leaves no readable SSID in any copy.  A clear one from an older
version is read, and sealed at the next start (or key rotation).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DecodeError, DeviceIOError, EdgeAgentError, PolicyError
from agent.layout import StateLayout
from agent.provisioning.binding import Binding, generate_verification_code, is_trivial_code
from agent.provisioning.wifi import WifiCredentials
from agent.purposes import WIFI_DOMAIN
from agent.sealing import KeyDestroyed, is_sealed, read_header
from drivers.logs.files import FileHolder, replace_shredding_old

if TYPE_CHECKING:
    from agent.keystore import DataKeys

MAX_STATE_FILE = 1024 * 1024
MAX_LEDGER_ENTRIES = 10_000
WIFI_CONTEXT = b"provisioning:wifi"


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


# What each process last read or wrote of the saved network, by file: an erasure
# destroys the wifi key before it purges, and must still tell the Wi-Fi backend
# which network to remove (wpa_supplicant finds it by SSID).  Shared by every
# store of the process (the feature's and the provisioning service's).
_remembered: dict[pathlib.Path, dict[str, object]] = {}
_remembered_lock = threading.Lock()


class FileProvisioningStore:
    """Provisioning state files; ``wifi.json`` is sealed under the ``wifi`` data key."""

    def __init__(self, state_dir: pathlib.Path, *, keys: DataKeys) -> None:
        self._layout = StateLayout(state_dir)
        self.keys = keys

    @property
    def credentials_path(self) -> pathlib.Path:
        return self._layout.wifi_credentials

    def _remember(self, record: dict[str, object] | None) -> None:
        with _remembered_lock:
            if record is None:
                _remembered.pop(self.credentials_path, None)
            else:
                _remembered[self.credentials_path] = dict(record)

    def remembered_ssid(self) -> str | None:
        """The SSID this process last saw saved, even if its key was destroyed since."""
        with _remembered_lock:
            record = _remembered.get(self.credentials_path)
        ssid = None if record is None else record.get("ssid")
        return ssid if isinstance(ssid, str) else None

    def _write_record(self, record: dict[str, object], *, shred_old: bool = False) -> None:
        sealed = self.keys.seal(WIFI_DOMAIN, json.dumps(record).encode(), WIFI_CONTEXT)
        if shred_old:
            replace_shredding_old(self.credentials_path, sealed)
        else:
            write_private(self.credentials_path, sealed)
        self._remember(record)

    def save_credentials(self, credentials: WifiCredentials) -> None:
        """Remember which network the device joined -- never its passphrase.

        The backend (wpa_supplicant, NetworkManager, the ESP-AT module) saved the
        network it confirmed and rejoins it by itself; the agent needs only the
        name, to know it is provisioned, to export it and to find the network when
        the account is erased.  A key kept here too would only be a second copy.
        The name is sealed under the ``wifi`` data key, so an erasure that
        destroys the key leaves no readable copy of it anywhere.
        """
        self._write_record(_record(credentials))

    def has_credentials(self) -> bool:
        return self.credentials_path.is_file()

    def _raw(self) -> bytes | None:
        raw = read_optional(self.credentials_path, MAX_STATE_FILE)
        if raw is not None and len(raw) > MAX_STATE_FILE:
            raise DecodeError(f"{self.credentials_path} is larger than {MAX_STATE_FILE} bytes")
        return raw

    def _saved(self) -> dict[str, object] | None:
        """The saved record; None if there is none or its key was destroyed.

        A file whose key is gone is erased data: the erasure that destroyed the
        key shreds it right after (and a kill in between is resumed at start).
        """
        raw = self._raw()
        if raw is None:
            return None
        if is_sealed(raw):
            try:
                raw = self.keys.open(raw, WIFI_CONTEXT)
            except KeyDestroyed:
                return None
        data = _parse(self.credentials_path, raw)
        if not isinstance(data.get("ssid"), str):
            raise DecodeError(f"{self.credentials_path} is malformed")
        self._remember({k: v for k, v in data.items() if k != "passphrase"})
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
        """Seal a wifi.json from before sealing, without any passphrase; True if it had one.

        The clear file is replaced first and then overwritten, so neither its
        passphrase (before version 2) nor its SSID lingers on the disk.
        """
        raw = self._raw()
        if raw is None or is_sealed(raw):
            return False
        data = self._saved()
        if data is None:
            return False
        passphrase = data.get("passphrase")
        credentials = WifiCredentials(
            ssid=str(data["ssid"]),
            passphrase=passphrase if isinstance(passphrase, str) else None,
            hidden=data.get("hidden") is True,
        )
        record = _record(credentials)
        if "passphrase" not in data and "secured" in data:
            record["secured"] = bool(data["secured"])
        self._write_record(record, shred_old=True)
        return "passphrase" in data

    def reseal_credentials(self) -> int:
        """Seal wifi.json under the current ``wifi`` key (1 if it was rewritten)."""
        raw = self._raw()
        if raw is None:
            return 0
        if not is_sealed(raw):
            self.drop_stored_passphrase()
            return 1
        current = self.keys.current(WIFI_DOMAIN).number
        if read_header(raw).number == current:
            return 0
        data = self._saved()
        if data is None:
            return 0
        self._write_record(data)
        return 1

    def restore_remembered(self) -> bool:
        """Write back the network this process remembers, if wifi.json no longer reads.

        After an erasure destroyed the key but the backend could not remove the
        network: a retry must still know which network to remove.
        """
        with _remembered_lock:
            record = _remembered.get(self.credentials_path)
        if record is None or self._saved() is not None:
            return False
        self._write_record(record)
        return True

    def forget_remembered(self) -> None:
        self._remember(None)

    def save_account(self, account: str) -> None:
        write_private(self._layout.account, json.dumps({"v": 1, "account": account}).encode())

    def load_account(self) -> str | None:
        data = read_json(self._layout.account)
        account = None if data is None else data.get("account")
        return account if isinstance(account, str) else None


def _record(credentials: WifiCredentials) -> dict[str, object]:
    return {
        "v": 2,
        "ssid": credentials.ssid,
        "hidden": credentials.hidden,
        "secured": bool(credentials.passphrase),
    }


def _parse(path: pathlib.Path, raw: bytes) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DecodeError(f"{path} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise DecodeError(f"{path} does not hold a JSON object")
    return data


class WifiCredentialsHolder(FileHolder):
    """The saved Wi-Fi network as personal data: exported without its passphrase.

    A copy of one's data names the network; the passphrase is a key to the
    owner's LAN, and an export travels further than the device, so it stays here.
    Erasing it also removes the network from the Wi-Fi backend (``forget``, given
    the saved SSID).  The erasure destroys the ``wifi`` key first, so the SSID
    comes from what this process read before (the holder reads it when it is
    made); should the backend fail, the network is written back, sealed under a
    new key, for the retry that still needs to know which network to remove.
    """

    def __init__(
        self, store: FileProvisioningStore, forget: Callable[[str | None], int] | None = None
    ) -> None:
        super().__init__("wifi_credentials", store.credentials_path)
        self._store = store
        self._forget = forget
        if forget is not None:
            with contextlib.suppress(EdgeAgentError):
                store.load_credentials()  # remembered, for an erasure that comes later

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
            ssid = saved.ssid if saved is not None else self._store.remembered_ssid()
            try:
                removed = self._forget(ssid)
            except EdgeAgentError:
                self._store.restore_remembered()
                raise
        erased = removed + super().erase_personal_data()
        self._store.forget_remembered()
        return erased

    def reseal_personal_data(self) -> int:
        return self._store.reseal_credentials()

    def prepare_erasure(self) -> None:
        """Read the SSID while its key still exists: the backend needs it to forget the network."""
        if self._forget is not None:
            with contextlib.suppress(EdgeAgentError):
                self._store.load_credentials()


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
