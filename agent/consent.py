"""Per-purpose consent ledger.

Everything is off until the owner grants it.  Every grant and withdrawal is
recorded with its time, the privacy-policy version it was given under and
where it came from.  Withdrawing a purpose purges everything stored for it:
the queued outbox messages in the same SQLite transaction as the withdrawal
itself, then the files of the stores that registered a hook (gallery,
watch-list, snapshots).  The purpose's pseudonym key generation is bumped, so
pseudonyms issued before and after a withdrawal cannot be linked.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agent.database import Database
from agent.errors import DecodeError
from agent.minimise import strip_image
from agent.ports import AuditSink
from agent.purposes import CONSENTABLE, Purpose
from agent.sealing import MAGIC as SEALED_MAGIC

if TYPE_CHECKING:
    from agent.keystore import DataKeys

log = logging.getLogger(__name__)

SqlPurger = Callable[[sqlite3.Connection, Purpose], int]
WithdrawalHook = Callable[[], int | None]


@dataclasses.dataclass(frozen=True)
class ConsentChange:
    purpose: Purpose
    granted: bool
    changed: bool
    purged: Mapping[str, int]


class ConsentLedger:
    name = "consent"

    def __init__(
        self,
        db: Database,
        policy_version: str,
        audit: AuditSink | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        self.db = db
        # Withdrawal destroys the purpose's data key before anything else (crypto-erase).
        self.keys = keys
        self.policy_version = policy_version
        self.audit = audit
        self._sql_purgers: dict[str, SqlPurger] = {"outbox": _purge_outbox}
        self._hooks: dict[Purpose, list[tuple[str, WithdrawalHook]]] = {}
        self._cache: dict[Purpose, bool] = {}
        self._generations: dict[Purpose, int] = {}
        self._cache_version: int | None = None

    @classmethod
    def open(cls, state_dir: pathlib.Path, policy_version: str = "unversioned") -> ConsentLedger:
        return cls(Database.in_state_dir(state_dir), policy_version)

    def add_withdrawal_hook(self, purpose: Purpose, store: str, hook: WithdrawalHook) -> None:
        """``hook()`` erases ``store`` after a withdrawal of ``purpose`` has been committed.

        A store registers once per purpose: a second registration would mean two
        owners of one store, one of which the erasure silently skipped before.
        """
        hooks = self._hooks.setdefault(purpose, [])
        if any(name == store for name, _ in hooks):
            raise ValueError(f"withdrawal hook for {store!r} on {purpose.value} registered twice")
        hooks.append((store, hook))

    def withdrawal_hooks(self, purpose: Purpose) -> list[str]:
        return [name for name, _ in self._hooks.get(purpose, [])]

    def add_sql_purger(self, store: str, purger: SqlPurger) -> None:
        """``purger(conn, purpose)`` runs inside the withdrawal transaction."""
        self._sql_purgers[store] = purger

    # --- reading -----------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the ledger if anyone (this process or the CLI) committed since last time.

        ``is_granted`` answers from memory, because it sits on the per-event path;
        the runtime calls this once per loop pass, so a withdrawal made by another
        process is seen within one pass.  The outbox checks consent again inside
        its own insert transaction (the one door), so nothing withdrawn meanwhile
        is ever committed.
        """
        # data_version changes whenever another connection commits.
        with self.db.lock:
            version = int(self.db.conn.execute("PRAGMA data_version").fetchone()[0])
            if version == self._cache_version and self._cache:
                return
            rows = self.db.conn.execute(
                "SELECT purpose, granted, key_generation FROM consent_state"
            ).fetchall()
        state = {p: False for p in CONSENTABLE}
        generations: dict[Purpose, int] = {}
        for purpose_text, granted, generation in rows:
            try:
                purpose = Purpose.parse(purpose_text)
            except DecodeError:
                log.warning("ignoring unknown purpose %r in the consent ledger", purpose_text)
                continue
            state[purpose] = bool(granted)
            generations[purpose] = int(generation)
        self._cache, self._generations = state, generations
        self._cache_version = version

    def _known(self) -> dict[Purpose, bool]:
        if self._cache_version is None:
            self.refresh()
        return self._cache

    def is_granted(self, purpose: Purpose) -> bool:
        if not purpose.needs_consent:
            return True
        return self._known().get(purpose, False)

    def snapshot(self) -> dict[str, bool]:
        self.refresh()
        return {p.value: self._cache.get(p, False) for p in CONSENTABLE}

    def key_generation(self, purpose: Purpose) -> int:
        self._known()
        return self._generations.get(purpose, 0)

    def generations(self) -> dict[str, int]:
        """The key generation of every purpose ever set (the ones pseudonyms may exist under)."""
        self.refresh()
        return {p.value: g for p, g in self._generations.items()}

    def history(self) -> list[dict[str, object]]:
        rows = self.db.query(
            "SELECT purpose, action, at, policy_version, source, purged "
            "FROM consent_history ORDER BY id"
        )
        keys = ("purpose", "action", "at", "policy_version", "source", "purged")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- changing ----------------------------------------------------------

    def set(self, purpose: Purpose, granted: bool, now: float, source: str) -> ConsentChange:
        if not purpose.needs_consent:
            raise DecodeError(f"{purpose.value} needs no consent and cannot be changed")
        was = self.is_granted(purpose)
        purged: dict[str, int] = {}
        retired = -1
        intent: dict[str, object] = {"withdraw": purpose.value}
        if not granted and self.keys is not None:
            # First the intent (a kill from here on is finished at the next start),
            # then the key: every copy of the purpose's data, wherever SQLite or the
            # file system left it, is unreadable before any purge begins.
            self.keys.begin(intent)
            purged["data_keys"] = self.keys.destroy(purpose.value)
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO consent_state (purpose, granted, changed_at, policy_version) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(purpose) DO UPDATE SET "
                "granted = excluded.granted, changed_at = excluded.changed_at, "
                "policy_version = excluded.policy_version",
                (purpose.value, int(granted), now, self.policy_version),
            )
            if not granted:
                conn.execute(
                    "UPDATE consent_state SET key_generation = key_generation + 1 "
                    "WHERE purpose = ?",
                    (purpose.value,),
                )
                # For the tombstone notice: receivers drop what that generation named.
                retired = int(conn.execute(
                    "SELECT key_generation FROM consent_state WHERE purpose = ?",
                    (purpose.value,),
                ).fetchone()[0]) - 1
                for store, purger in self._sql_purgers.items():
                    purged[store] = purger(conn, purpose)
            conn.execute(
                "INSERT INTO consent_history (purpose, action, at, policy_version, source, purged)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    purpose.value,
                    "grant" if granted else "withdraw",
                    now,
                    self.policy_version,
                    source[:64],
                    sum(purged.values()),
                ),
            )
        self._cache_version = None
        if not granted:
            for store, hook in self._hooks.get(purpose, []):
                try:
                    purged[store] = int(hook() or 0)
                except Exception:
                    # A failing store must not undo the withdrawal; it retries on start.
                    log.exception("purging %s after withdrawal of %s failed", store, purpose.value)
            self._truncate_wal()
            if self.keys is not None:
                self.keys.settle(intent)
        if self.audit is not None:
            self.audit.record(
                "consent.grant" if granted else "consent.withdraw",
                {"purpose": purpose.value, "source": source[:64], "purged": dict(purged),
                 **({} if granted else {"retired_generation": retired})},
                now,
            )
        return ConsentChange(purpose, granted, was != granted, purged)

    def grant(self, purpose: Purpose, now: float, source: str = "local") -> ConsentChange:
        return self.set(purpose, True, now, source)

    def withdraw(self, purpose: Purpose, now: float, source: str = "local") -> ConsentChange:
        return self.set(purpose, False, now, source)

    def _truncate_wal(self) -> None:
        try:
            self.db.checkpoint("TRUNCATE")
        except Exception as exc:  # a busy reader: the next checkpoint empties it
            log.warning("checkpoint after a withdrawal failed: %s", exc)

    def resume_withdrawals(self, now: float) -> int:
        """At start: finish every withdrawal a kill interrupted after its intent was recorded."""
        if self.keys is None:
            return 0
        resumed = 0
        for intent in self.keys.intents():
            value = intent.get("withdraw")
            if not isinstance(value, str):
                continue
            try:
                purpose = Purpose.parse(value)
            except DecodeError:
                self.keys.settle(intent)
                continue
            log.warning("finishing the interrupted withdrawal of %s", purpose.value)
            if self.is_granted(purpose):
                self.set(purpose, False, now, "resumed-after-restart")
            else:
                self.keys.destroy(purpose.value)
                self._truncate_wal()
                self.keys.settle(intent)
            resumed += 1
        return resumed

    def reapply_withdrawals(self) -> None:
        """At start-up: re-run file purges for every withdrawn purpose (crash between steps)."""
        for purpose in CONSENTABLE:
            if not self.is_granted(purpose):
                for store, hook in self._hooks.get(purpose, []):
                    try:
                        hook()
                    except Exception:
                        log.exception("purging %s for %s at start-up failed", store, purpose.value)

    # --- data-subject rights -------------------------------------------------

    def export_personal_data(self) -> Mapping[str, object]:
        return {"state": self.snapshot(), "history": self.history()}

    def erase_personal_data(self) -> int:
        with self.db.transaction() as conn:
            count = int(conn.execute("SELECT COUNT(*) FROM consent_history").fetchone()[0])
            conn.execute("DELETE FROM consent_history")
            conn.execute(
                "UPDATE consent_state SET granted = 0, key_generation = key_generation + 1"
            )
            for purpose in CONSENTABLE:
                for purger in self._sql_purgers.values():
                    count += purger(conn, purpose)
        self._cache_version = None
        self.db.scrub()
        return count


def _purge_outbox(conn: sqlite3.Connection, purpose: Purpose) -> int:
    purged = int(conn.execute("DELETE FROM outbox WHERE purpose = ?", (purpose.value,)).rowcount)
    if purpose is Purpose.EVENT_SNAPSHOTS:
        # Snapshots ride with other purposes' events, sealed apart under the
        # event_snapshots key (already destroyed): drop them from the queue too.
        purged += int(
            conn.execute("UPDATE outbox SET image = NULL WHERE image IS NOT NULL").rowcount
        )
        # Rows queued before images were sealed apart carry theirs inside the payload.
        rows = conn.execute(
            "SELECT seq, payload FROM outbox WHERE purpose != ? AND substr(payload, 1, 4) != ?",
            (Purpose.DEVICE_OPERATION.value, SEALED_MAGIC),
        ).fetchall()
        for seq, payload in rows:
            stripped = strip_image(bytes(payload))
            if stripped is not None:
                conn.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (stripped, seq))
                purged += 1
    return purged
