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
    def database_wal(self) -> pathlib.Path:
        """SQLite's write-ahead log of the database (named by SQLite; bounded by [storage])."""
        return self.root / "agent.sqlite-wal"

    @property
    def database_shm(self) -> pathlib.Path:
        return self.root / "agent.sqlite-shm"

    @property
    def damaged_dir(self) -> pathlib.Path:
        """Damaged databases moved aside, one folder per salvage (kept for forensics)."""
        return self.root / "damaged"

    def damaged_copy(self, stamp: str) -> pathlib.Path:
        """Where a damaged database goes (its -wal beside it) before its rows are salvaged."""
        return self.damaged_dir / stamp / self.database.name

    def damaged_copies(self) -> list[pathlib.Path]:
        """The salvage folders, oldest first."""
        if not self.damaged_dir.is_dir():
            return []
        return sorted(p for p in self.damaged_dir.iterdir() if p.is_dir())

    @property
    def salvage_scratch(self) -> pathlib.Path:
        """The fresh database a salvage fills before it replaces the damaged one."""
        return self.root / "agent.sqlite.salvage"

    @property
    def outbox_high_water(self) -> pathlib.Path:
        """The last event sequence number known committed, fsync'd beside the database.

        A separate small file, so that a database that lost committed rows (a cut
        WAL, a salvage) can be told apart from one that never had them.
        """
        return self.root / "outbox-seq"

    @property
    def storage_reserve(self) -> pathlib.Path:
        """Pre-allocated space, released when the disk fills so the agent can record its state."""
        return self.root / "storage-reserve"

    @property
    def audit(self) -> pathlib.Path:
        return self.root / "audit.sqlite"

    @property
    def audit_key(self) -> pathlib.Path:
        """The HMAC key of the audit chain (0600): without it a rewritten chain cannot verify."""
        return self.root / "audit.key"

    @property
    def privacy_notices(self) -> pathlib.Path:
        """How far the audit trail was turned into tombstones, and the latest per purpose."""
        return self.root / "privacy-notices.json"

    @property
    def pseudonym_key(self) -> pathlib.Path:
        return self.root / "pseudonym.key"

    @property
    def rights_key(self) -> pathlib.Path:
        """Signs data-export and erasure replies."""
        return self.root / "rights.key"

    # --- data keys (agent.keystore): crypto-erase ---------------------------------

    @property
    def keys_dir(self) -> pathlib.Path:
        return self.root / "keys"

    @property
    def device_key(self) -> pathlib.Path:
        """Wraps every data key (0600; the file form of the key-store protocol)."""
        return self.keys_dir / "device.key"

    def data_key(self, domain: str, number: int) -> pathlib.Path:
        """One wrapped data key: written once, destroyed in place, never replaced."""
        return self.keys_dir / f"{domain}.{number}.key"

    def data_key_files(self, domain: str) -> list[pathlib.Path]:
        if not self.keys_dir.is_dir():
            return []
        return sorted(self.keys_dir.glob(f"{domain}.*.key"))

    def destroyed_keys(self, domain: str) -> pathlib.Path:
        """The highest key number of ``domain`` ever destroyed (numbers are never reused)."""
        return self.keys_dir / f"{domain}.destroyed"

    @property
    def sealing_key(self) -> pathlib.Path:
        """The device's X25519 key for sealed command parameters, wrapped by the device key."""
        return self.keys_dir / "sealing-x25519.wrapped"

    @property
    def key_rotation_requests(self) -> pathlib.Path:
        """Domains to rotate because one item was removed (its old copies die with the key)."""
        return self.keys_dir / "rotate.json"

    @property
    def key_intents(self) -> pathlib.Path:
        """Withdrawals and erasures begun and not yet finished (redone at start)."""
        return self.keys_dir / "pending.json"

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

    # --- attempt limits and windows (agent.limitstate) --------------------------

    @property
    def limits_dir(self) -> pathlib.Path:
        """Lockouts and windows that must outlive a restart.

        Not personal data, and apart from every store an erasure empties: no
        erasure or retention purge may hand an attacker a fresh set of guesses.
        """
        return self.root / "limits"

    @property
    def provisioning_window(self) -> pathlib.Path:
        return self.limits_dir / "provisioning-window.json"

    @property
    def provisioning_lan_limits(self) -> pathlib.Path:
        """Failed SPAKE2 proofs and lockouts of the LAN provisioning API."""
        return self.limits_dir / "provisioning-lan.json"

    @property
    def logs_auth_limits(self) -> pathlib.Path:
        """Failed technician logins, shared by the serial console and the LAN log endpoint."""
        return self.limits_dir / "logs-auth.json"

    @property
    def onvif_auth_limits(self) -> pathlib.Path:
        """Failed ONVIF UsernameToken digests and lockouts of the ONVIF device service."""
        return self.limits_dir / "onvif-auth.json"

    # --- discovery ---------------------------------------------------------------

    @property
    def discovery_instance_id(self) -> pathlib.Path:
        """WS-Discovery's boot counter (AppSequence InstanceId)."""
        return self.root / "discovery-instance-id"

    @property
    def onvif_credentials(self) -> pathlib.Path:
        """The ONVIF user the owner set (0600, sealed: PasswordDigest needs the password)."""
        return self.root / "onvif-credentials.sealed"

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

    def upgrade_state_damaged(self, stamp: str) -> pathlib.Path:
        """An unreadable upgrade state file, moved aside (``stamp``: UTC time) and kept."""
        return self.upgrade_dir / f"state.json.damaged-{stamp}"

    def upgrade_slot_envelope(self, slot: str) -> pathlib.Path:
        """The signed envelope of the image last verified into ``slot`` (rebuilds the state)."""
        return self.upgrade_dir / f"slot-{slot}.suit"

    @property
    def upgrade_hawkbit_action(self) -> pathlib.Path:
        """The hawkBit action being worked on and the feedback already sent for it."""
        return self.upgrade_dir / "hawkbit-action.json"

    @property
    def adopted_cameras(self) -> pathlib.Path:
        """Cameras the hub adopted from WS-Discovery: endpoint, address, stable name."""
        return self.root / "adopted-cameras.json"

    @property
    def camera_credentials(self) -> pathlib.Path:
        """The hub's camera users and passwords, sealed under the ``cameras`` key."""
        return self.root / "camera-credentials.sealed"
