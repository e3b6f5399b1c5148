"""Where the ONVIF user lives: sealed in the state directory, or a file the image provides.

WS-Security PasswordDigest is ``SHA-1(nonce + created + password)``: the
device must hold the password itself, a hash would not do.  So the owner's
credentials are sealed (AES-256-GCM under a data key of their own domain,
wrapped by the device key: :mod:`agent.keystore`) in a 0600 file written
atomically; the password never reaches a log line (the feature declares it a
secret) nor a data export.  An erasure of the binding (account cancellation)
shreds the file and destroys its key.

``[discovery] onvif_credentials_file`` names instead a ``username:password``
file the device image provides; it must not be readable by group or others.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
import threading
from collections.abc import Mapping

from agent.atomicfile import read_optional, shred, write_atomic
from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import DecodeError, EdgeAgentError, PolicyError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.ports import Clock
from agent.purposes import ONVIF_DOMAIN

log = logging.getLogger(__name__)

DOMAIN = ONVIF_DOMAIN
CONTEXT = b"edge-agent onvif credentials v1"
MAX_FILE_BYTES = 4096
MAX_USERNAME = 32
MIN_PASSWORD = 8
MAX_PASSWORD = 64
GENERATED_PASSWORD_BYTES = 15  # 20 base64url characters, 120 bits


def check_username(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_USERNAME
        or not value.isascii()
        or not value.isprintable()
        or any(c.isspace() or c == ":" for c in value)
    ):
        raise DecodeError(
            f"username must be 1 to {MAX_USERNAME} printable ASCII characters, "
            "no spaces or colons"
        )
    return value


def check_password(value: object) -> str:
    if (
        not isinstance(value, str)
        or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD
        or not value.isprintable()
    ):
        raise DecodeError(
            f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} printable characters"
        )
    return value


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


class OnvifCredentialStore:
    """Thread-safe: the HTTP threads read, the command handler writes."""

    def __init__(
        self, layout: StateLayout, keys: DataKeys, file_source: pathlib.Path | None = None
    ) -> None:
        self.path = file_source or layout.onvif_credentials
        self.external = file_source is not None
        self._keys = keys
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._cached: OnvifCredentials | None = None
        self._reported: str | None = None

    def load(self) -> OnvifCredentials | None:
        """The current user, re-read when the file changed; None if unset or unusable."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            with self._lock:
                self._stamp, self._cached = None, None
            return None
        except OSError as exc:
            self._report(f"cannot read {self.path}: {exc.strerror}")
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return self._cached
            try:
                if info.st_mode & 0o077:
                    raise PolicyError(f"{self.path} is readable by others; make it mode 0600")
                self._cached = self._read()
            except EdgeAgentError as exc:
                self._report(str(exc))
                self._cached = None
            self._stamp = stamp
            return self._cached

    def _report(self, problem: str) -> None:
        # Once per distinct problem: the HTTP threads ask on every request.
        if problem != self._reported:
            self._reported = problem
            log.error("ONVIF user unavailable (every ONVIF request is refused): %s", problem)

    def _read(self) -> OnvifCredentials | None:
        raw = read_optional(self.path, MAX_FILE_BYTES)
        if raw is None:
            return None
        if len(raw) > MAX_FILE_BYTES:
            raise DecodeError(f"{self.path} is larger than {MAX_FILE_BYTES} bytes")
        if self.external:
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DecodeError(f"{self.path} is not UTF-8") from None
            username, sep, password = line.partition(":")
            if not sep:
                raise DecodeError(f"{self.path} must hold username:password")
            return OnvifCredentials(check_username(username), check_password(password))
        try:
            record = json.loads(self._keys.open(raw, CONTEXT))
        except ValueError:
            raise DecodeError(f"{self.path} is not a credentials record") from None
        if not isinstance(record, dict):
            raise DecodeError(f"{self.path} is not a credentials record")
        return OnvifCredentials(
            check_username(record.get("username")), check_password(record.get("password"))
        )

    def save(self, credentials: OnvifCredentials, now: float) -> None:
        if self.external:
            raise PolicyError(
                f"the ONVIF user comes from {self.path} ([discovery] onvif_credentials_file)"
            )
        record = {
            "v": 1,
            "username": credentials.username,
            "password": credentials.password,
            "set_at": now,
        }
        blob = self._keys.seal(DOMAIN, json.dumps(record).encode(), CONTEXT)
        with self._lock:
            write_atomic(self.path, blob, 0o600)
            self._stamp, self._cached = None, None

    def erase(self) -> int:
        """Shred the sealed file and destroy its key (never an image-provided file)."""
        if self.external:
            return 0
        with self._lock:
            removed = int(shred(self.path))
            self._keys.destroy(DOMAIN)
            self._stamp, self._cached = None, None
        return removed


class OnvifCredentialsHolder:
    """The owner's ONVIF user as held data: exported without the password, erased with
    the binding (a cancelled account must not keep watching the camera over ONVIF)."""

    name = "onvif-credentials"

    def __init__(self, store: OnvifCredentialStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def export_personal_data(self) -> Mapping[str, object]:
        if self._store.external:
            return {}
        credentials = self._store.load()
        if credentials is None:
            return {}
        return {"username": credentials.username, "password": "set (never exported)"}

    def erase_personal_data(self) -> int:
        return self._store.erase()

    def reseal_personal_data(self) -> int:
        """Key rotation: the record again, under the onvif domain's current key."""
        if self._store.external:
            return 0
        credentials = self._store.load()
        if credentials is None:
            return 0
        self._store.save(credentials, self._clock.now())
        return 1
