"""The hub's camera credentials: the owner's users and passwords, sealed.

``camera.set_credentials`` stores them under the ``cameras`` data key
(:mod:`agent.keystore`) in one 0600 file written atomically.  RTSP digest and
ONVIF's PasswordDigest need the password itself, so it cannot be hashed.  The
passwords never reach a log line (the camera feature declares them secrets) nor
a data export; an erasure of the binding shreds the file and destroys its key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping

from agent.atomicfile import read_optional, shred, write_atomic
from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import DecodeError, EdgeAgentError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.purposes import CAMERAS_DOMAIN
from agent.sealing import KeyDestroyed

CONTEXT = b"edge-agent camera credentials v1"
MAX_FILE_BYTES = 64 * 1024


class CameraCredentialStore:
    """The owner's users and passwords of the hub's cameras, sealed; thread-safe."""

    def __init__(self, layout: StateLayout, keys: DataKeys) -> None:
        self.path = layout.camera_credentials
        self._keys = keys
        self._lock = threading.Lock()

    def load(self) -> dict[str, OnvifCredentials]:
        with self._lock:
            raw = read_optional(self.path, MAX_FILE_BYTES)
            if raw is None:
                return {}
            try:
                opened = self._keys.open(raw, CONTEXT)
            except KeyDestroyed:
                return {}  # erased with the binding: a copy of the file opens no more
            try:
                record = json.loads(opened)
                cameras = record["cameras"]
                return {
                    str(name): OnvifCredentials(str(entry["username"]), str(entry["password"]))
                    for name, entry in cameras.items()
                }
            except (ValueError, KeyError, TypeError, AttributeError):
                raise DecodeError(f"{self.path} is not a camera credentials record") from None

    def get(self, camera: str) -> OnvifCredentials | None:
        return self.load().get(camera)

    def save(self, camera: str, credentials: OnvifCredentials | None) -> None:
        """Set (or with None forget) one camera's user and password."""
        cameras = self.load()
        if credentials is None:
            cameras.pop(camera, None)
        else:
            cameras[camera] = credentials
        record = {
            "v": 1,
            "cameras": {
                name: {"username": c.username, "password": c.password}
                for name, c in sorted(cameras.items())
            },
        }
        blob = self._keys.seal(CAMERAS_DOMAIN, json.dumps(record).encode(), CONTEXT)
        with self._lock:
            write_atomic(self.path, blob, 0o600)

    def erase(self) -> int:
        with self._lock:
            removed = int(shred(self.path))
            self._keys.destroy(CAMERAS_DOMAIN)
        return removed


class CameraCredentialsHolder:
    """The camera users as held data: exported without passwords, erased with the binding."""

    name = "camera-credentials"

    def __init__(self, store: CameraCredentialStore) -> None:
        self._store = store

    def export_personal_data(self) -> Mapping[str, object]:
        try:
            cameras = self._store.load()
        except EdgeAgentError:
            return {}
        return {
            name: {"username": c.username, "password": "set (never exported)"}
            for name, c in cameras.items()
        }

    def erase_personal_data(self) -> int:
        return self._store.erase()

    def reseal_personal_data(self) -> int:
        cameras = self._store.load()
        for name, credentials in cameras.items():
            self._store.save(name, credentials)
        return len(cameras)
