"""A key that signs commands the way an owner's app does, for tests."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.auth.cose import raw_public
from agent.auth.envelope import sign_command
from agent.auth.principals import PrincipalStore, key_id
from agent.auth.roles import Role
from agent.database import Database
from agent.keystore import FileDeviceKey
from agent.layout import StateLayout
from agent.sealedparams import SEALED, Binding, SealingKey, seal_params


def sealing_key_in_state(state_dir: Path) -> bytes:
    """The device's sealing public key, read where ``auth device-id --json`` reads it."""
    layout = StateLayout(state_dir)
    layout.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SealingKey(layout.sealing_key, FileDeviceKey(layout.device_key)).public_key()


class Signer:
    def __init__(self, role: Role = Role.OWNER) -> None:
        self.role = role
        self.private_key = ed25519.Ed25519PrivateKey.generate()
        self.public_key = raw_public(self.private_key.public_key())
        self.kid = key_id(self.public_key)
        self._last = 0

    def next_counter(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last

    def sign(
        self,
        device_id: str,
        name: str,
        args: Mapping[str, object],
        *,
        counter: int | None = None,
        now: float | None = None,
        secrets: Mapping[str, object] | None = None,
        sealing_key: bytes | None = None,
        sealed_for: Binding | None = None,
    ) -> bytes:
        """``secrets`` go sealed to ``sealing_key`` (``args["sealed"]``, as the CLI sends them).

        ``sealed_for``: bind the blob to another command than the one signed (attacks).
        """
        counter = self.next_counter() if counter is None else counter
        now = time.time() if now is None else now
        if secrets is not None:
            assert sealing_key is not None, "secrets need the device's sealing key"
            binding = sealed_for or Binding(device_id, name, counter, int(now))
            args = {**args, SEALED: seal_params(sealing_key, secrets, binding)}
        return sign_command(self.private_key, device_id, name, args, counter=counter, now=now)

    def enrol(self, store: PrincipalStore) -> None:
        if self.role is Role.OWNER:
            store.bind_owner(self.public_key, "test owner", time.time(), source="test")
        else:
            store.add(
                self.role, self.public_key, f"test {self.role.value}", time.time(), added_by="test"
            )

    def enrol_in_state(self, state_dir: Path) -> str:
        """Trust this key in a state directory no agent has open; returns the device id."""
        db = Database.in_state_dir(state_dir)
        try:
            store = PrincipalStore(db)
            self.enrol(store)
            return store.device_id
        finally:
            db.close()
