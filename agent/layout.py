"""Every path under the state directory, in one place.

Erasure, export, withdrawal and retention all find a store by the path it
writes to; if two modules spelled a file name each on their own, renaming one
would silently leave the other's data behind.  So no module builds a path
under the state directory itself: it asks a :class:`StateLayout`
(``tests/core/test_state_layout.py`` scans the tree to keep it that way).
"""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class StateLayout:
    root: pathlib.Path

    # --- the spine -------------------------------------------------------------

    @property
    def database(self) -> pathlib.Path:
        """Consent ledger and outbox: one file, so a withdrawal and its purge are one commit."""
        return self.root / "agent.sqlite"

    @property
    def audit(self) -> pathlib.Path:
        return self.root / "audit.sqlite"

    @property
    def pseudonym_key(self) -> pathlib.Path:
        return self.root / "pseudonym.key"

    @property
    def rights_key(self) -> pathlib.Path:
        """Signs data-export and erasure replies."""
        return self.root / "rights.key"

    # --- camera, faces, plates ---------------------------------------------------

    @property
    def faces_dir(self) -> pathlib.Path:
        return self.root / "faces"

    @property
    def faces_manifest(self) -> pathlib.Path:
        """Names and labels of the enrolled people (the gallery's own index)."""
        return self.faces_dir / "manifest.json"

    @property
    def plates_db(self) -> pathlib.Path:
        return self.root / "plates.sqlite"

    def plates_files(self) -> list[pathlib.Path]:
        """The watch-list database with its WAL and shared-memory files, where present."""
        return sorted(self.root.glob(self.plates_db.name + "*"))

    @property
    def snapshots_dir(self) -> pathlib.Path:
        return self.root / "snapshots"

    # --- logs --------------------------------------------------------------------

    @property
    def logs_dir(self) -> pathlib.Path:
        return self.root / "logs"

    # --- provisioning ----------------------------------------------------------

    @property
    def provisioning_dir(self) -> pathlib.Path:
        return self.root / "provisioning"

    @property
    def binding(self) -> pathlib.Path:
        """Serial number and verification code: the device's identity, kept across erasure."""
        return self.provisioning_dir / "binding.json"

    @property
    def account(self) -> pathlib.Path:
        return self.provisioning_dir / "account.json"

    @property
    def used_tokens(self) -> pathlib.Path:
        return self.provisioning_dir / "used_tokens.json"

    @property
    def wifi_credentials(self) -> pathlib.Path:
        return self.provisioning_dir / "wifi.json"

    @property
    def account_files(self) -> tuple[pathlib.Path, ...]:
        """What an erasure of the cloud binding removes."""
        return (self.account, self.used_tokens)

    # --- discovery ---------------------------------------------------------------

    @property
    def discovery_instance_id(self) -> pathlib.Path:
        """WS-Discovery's boot counter (AppSequence InstanceId)."""
        return self.root / "discovery-instance-id"

    # --- upgrade -------------------------------------------------------------------

    @property
    def upgrade_dir(self) -> pathlib.Path:
        return self.root / "upgrade"

    @property
    def upgrade_state(self) -> pathlib.Path:
        return self.upgrade_dir / "state.json"

    @property
    def trusted_keys(self) -> pathlib.Path:
        return self.upgrade_dir / "trusted_keys.json"

    @property
    def simulated_slots(self) -> pathlib.Path:
        """The file-backed A/B slots of a development machine."""
        return self.upgrade_dir / "slots"
