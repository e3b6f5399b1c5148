"""The keys this device obeys, in the agent database.

A principal is an Ed25519 public key with one role.  The owner's key arrives
at binding (the LAN API, inside the SPAKE2 session that proves the installer
holds the verification code) or from root on the device itself
(``edge-agent auth enrol``); further keys are granted by the owner with the
signed ``auth.grant`` command.  Beside them: the highest command counter seen
per key (replay protection that survives restarts: advanced and committed
before a command runs) and the per-binding device id that names the device's
topics instead of its serial number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import sqlite3
from typing import TYPE_CHECKING

from agent.auth.roles import Role
from agent.database import Database
from agent.errors import DecodeError, DeviceIOError, PolicyError
from agent.purposes import BINDING_DOMAIN
from agent.sealing import KeyDestroyed, is_sealed

if TYPE_CHECKING:
    from agent.keystore import DataKeys

KEY_BYTES = 32
MAX_PRINCIPALS = 64
MAX_LABEL = 64
LABEL_CONTEXT = b"principals:label"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    kid BLOB PRIMARY KEY,
    role TEXT NOT NULL,
    public_key BLOB NOT NULL,
    label TEXT NOT NULL,
    added_at REAL NOT NULL,
    added_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS command_counters (
    kid BLOB PRIMARY KEY,
    counter INTEGER NOT NULL
);
"""


def key_id(public_key: bytes) -> bytes:
    """16 bytes naming a key in a COSE header (SHA-256 of the raw key)."""
    return hashlib.sha256(public_key).digest()[:16]


def check_public_key(public_key: object) -> bytes:
    if not isinstance(public_key, bytes) or len(public_key) != KEY_BYTES:
        raise DecodeError(f"a principal key is a raw {KEY_BYTES}-byte Ed25519 public key")
    return public_key


def new_device_id() -> str:
    # A topic segment that links nothing to the serial number or an earlier binding.
    return "d" + secrets.token_hex(8)


@dataclasses.dataclass(frozen=True)
class Principal:
    kid: bytes
    role: Role
    public_key: bytes
    label: str
    added_at: float
    added_by: str

    def describe(self) -> dict[str, object]:
        return {
            "kid": self.kid.hex(),
            "role": self.role.value,
            "label": self.label,
            "added_at": int(self.added_at),
            "added_by": self.added_by,
        }


class PrincipalStore:
    """Also a personal-data holder (scope: binding): labels name the account."""

    name = "principals"

    def __init__(self, db: Database, keys: DataKeys | None = None) -> None:
        self.db = db
        # Labels name the account: sealed under the binding key, which an account
        # cancellation destroys first (None: plaintext, for tests of the store alone).
        self.keys = keys
        try:
            with db.lock:
                db.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise DeviceIOError(f"cannot open the principal store: {exc}") from exc
        self._device_id: str | None = None

    # --- device id ------------------------------------------------------------

    @property
    def device_id(self) -> str:
        if self._device_id is None:
            rows = self.db.query("SELECT value FROM meta WHERE key = 'device_id'")
            if rows:
                self._device_id = str(rows[0][0])
            else:
                with self.db.transaction() as conn:
                    conn.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('device_id', ?)",
                        (new_device_id(),),
                    )
                self._device_id = None
                return self.device_id
        return self._device_id

    def _rotate(self, conn: sqlite3.Connection) -> str:
        fresh = new_device_id()
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('device_id', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (fresh,),
        )
        return fresh

    def reload(self) -> str:
        """Re-read the device id (a binding in another process may have rotated it)."""
        self._device_id = None
        return self.device_id

    # --- principals -------------------------------------------------------------

    def principals(self) -> list[Principal]:
        rows = self.db.query(
            "SELECT kid, role, public_key, label, added_at, added_by FROM principals "
            "ORDER BY added_at, kid"
        )
        return [self._principal(row) for row in rows]

    def get(self, kid: bytes) -> Principal | None:
        rows = self.db.query(
            "SELECT kid, role, public_key, label, added_at, added_by FROM principals WHERE kid = ?",
            (kid,),
        )
        return self._principal(rows[0]) if rows else None

    def owner(self) -> Principal | None:
        return next((p for p in self.principals() if p.role is Role.OWNER), None)

    def add(
        self, role: Role, public_key: bytes, label: str, now: float, *, added_by: str
    ) -> Principal:
        """Trust ``public_key`` for ``role``; a second owner is refused (bind replaces)."""
        public_key = check_public_key(public_key)
        label = label[:MAX_LABEL]
        kid = key_id(public_key)
        with self.db.transaction() as conn:
            count = conn.execute("SELECT COUNT(*) FROM principals").fetchone()[0]
            if count >= MAX_PRINCIPALS:
                raise PolicyError(f"at most {MAX_PRINCIPALS} keys may be trusted")
            if (
                role is Role.OWNER
                and conn.execute(
                    "SELECT 1 FROM principals WHERE role = 'owner' AND kid != ?", (kid,)
                ).fetchone()
            ):
                raise PolicyError("the device already has an owner")
            conn.execute(
                "INSERT INTO principals (kid, role, public_key, label, added_at, added_by) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(kid) DO UPDATE SET role = excluded.role, "
                "label = excluded.label",
                (kid, role.value, public_key, self._sealed(label), now, added_by),
            )
        principal = self.get(kid)
        assert principal is not None
        return principal

    def remove(self, kid: bytes) -> bool:
        with self.db.transaction() as conn:
            gone = conn.execute("DELETE FROM principals WHERE kid = ?", (kid,)).rowcount
        return bool(gone)

    def bind_owner(self, public_key: bytes, label: str, now: float, *, source: str) -> str:
        """A new binding: the owner's key, no other key, a fresh device id.

        Refused while an owner is bound -- a second installer with the sticker's
        code must not take a device over; the owner unbinds first (``auth.unbind``)
        or root resets it on the device.
        """
        public_key = check_public_key(public_key)
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM principals WHERE role = 'owner'").fetchone():
                raise PolicyError("the device is already bound to an owner")
            conn.execute("DELETE FROM principals")
            conn.execute(
                "INSERT INTO principals (kid, role, public_key, label, added_at, added_by) "
                "VALUES (?, 'owner', ?, ?, ?, ?)",
                (key_id(public_key), public_key, self._sealed(label[:MAX_LABEL]), now, source),
            )
            fresh = self._rotate(conn)
        self._device_id = fresh
        return fresh

    def unbind(self) -> str:
        """Forget every key (counters stay: a key bound again cannot replay old commands)."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM principals")
            fresh = self._rotate(conn)
        self._device_id = fresh
        return fresh

    # --- personal data (an account cancellation forgets the keys) -------------------

    def export_personal_data(self) -> dict[str, object]:
        return {"keys": [p.describe() for p in self.principals()]}

    def erase_personal_data(self) -> int:
        count = len(self.principals())
        if count:
            self.unbind()
        return count

    def reseal_personal_data(self) -> int:
        """Labels to the binding domain's current key (key rotation); plaintext ones too."""
        if self.keys is None:
            return 0
        rows = self.db.query("SELECT kid, label FROM principals")
        updates = []
        for kid, label in rows:
            if isinstance(label, bytes) and is_sealed(label) and self.keys.is_current(label):
                continue
            updates.append((self._sealed(self._label(label)), kid))
        if updates:
            with self.db.transaction() as conn:
                conn.executemany("UPDATE principals SET label = ? WHERE kid = ?", updates)
        return len(updates)

    def _sealed(self, label: str) -> str | bytes:
        if self.keys is None:
            return label
        return self.keys.seal(BINDING_DOMAIN, label.encode(), LABEL_CONTEXT)

    def _label(self, value: object) -> str:
        if isinstance(value, bytes) and is_sealed(value) and self.keys is not None:
            try:
                return self.keys.open(value, LABEL_CONTEXT).decode("utf-8", "replace")
            except (KeyDestroyed, DecodeError):
                return ""  # the account was erased: the key is gone with its name
        return str(value)

    def _principal(self, row: tuple[object, ...]) -> Principal:
        kid, role, public_key, label, added_at, added_by = row
        assert isinstance(kid, bytes) and isinstance(public_key, bytes)
        return Principal(
            kid, Role(str(role)), public_key, self._label(label), float(str(added_at)),
            str(added_by),
        )

    # --- replay protection --------------------------------------------------------

    def advance_counter(self, kid: bytes, counter: int) -> bool:
        """Record ``counter`` for ``kid`` if it is higher than any seen; committed on return."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT counter FROM command_counters WHERE kid = ?", (kid,)
            ).fetchone()
            if row is not None and int(row[0]) >= counter:
                return False
            conn.execute(
                "INSERT INTO command_counters (kid, counter) VALUES (?, ?) "
                "ON CONFLICT(kid) DO UPDATE SET counter = excluded.counter",
                (kid, counter),
            )
        return True

    def last_counter(self, kid: bytes) -> int | None:
        rows = self.db.query("SELECT counter FROM command_counters WHERE kid = ?", (kid,))
        return int(str(rows[0][0])) if rows else None



