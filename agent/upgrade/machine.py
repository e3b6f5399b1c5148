"""The upgrade state machine: pure transitions over a persisted :class:`UpgradeRecord`.

Drivers call a transition, persist the returned record, then act; every step
is idempotent on restart, so a kill at any point resumes (download,
verification) or resolves (commit, rollback) from what was persisted.

    idle -> downloading -> installing -> awaiting-reboot -> trial -> committed
                 |              |                 |            `-> rolled-back
                 `--------------+-> failed        `-> rolled-back (bootloader fell back)
"""

from __future__ import annotations

import dataclasses
import enum
import json

from agent.errors import PolicyError
from agent.upgrade.errors import StateFileError
from agent.upgrade.ports import BootStatus

MAX_STATE_BYTES = 256 * 1024
# Sequences that failed verification or their trial, newest kept; never auto-installed again.
MAX_FAILED_SEQUENCES = 32


class State(enum.Enum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    AWAITING_REBOOT = "awaiting-reboot"
    TRIAL = "trial"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


RESTING = frozenset({State.IDLE, State.COMMITTED, State.ROLLED_BACK, State.FAILED})


@dataclasses.dataclass(frozen=True)
class UpgradeRecord:
    state: State = State.IDLE
    sequence: int = -1
    version: str = ""
    target_slot: str = ""
    received: int = 0
    total: int = 0
    reason: str = ""
    envelope_hex: str = ""
    image_digest_hex: str = ""
    marked_boot_id: str = ""
    trial_since: float = 0.0
    installed_sequence: int = -1
    installed_digest_hex: str = ""
    deferred_until: float = 0.0
    updated_at: float = 0.0
    failed_sequences: tuple[int, ...] = ()
    # Where the image is fetched from when not the manifest's URI (a hawkBit artifact link).
    image_uri: str = ""

    def to_bytes(self) -> bytes:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> UpgradeRecord:
        if len(raw) > MAX_STATE_BYTES:
            raise StateFileError("upgrade state file is too large")
        try:
            data = json.loads(raw)
            data["state"] = State(data["state"])
            data["failed_sequences"] = tuple(int(s) for s in data.get("failed_sequences", ()))
            fields = {f.name: f.default for f in dataclasses.fields(cls)}
            for name, default in fields.items():
                if name in data and not _same_kind(data[name], default):
                    raise TypeError(f"{name} is {type(data[name]).__name__}")
            record = cls(**{k: v for k, v in data.items() if k in fields})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(f"upgrade state file is unreadable: {exc}") from exc
        return record

    @property
    def busy(self) -> bool:
        return self.state not in RESTING

    def failure_of(self, sequence: int) -> str | None:
        """Why ``sequence`` failed here before ("" if the reason is gone), or None."""
        if sequence not in self.failed_sequences:
            return None
        return self.reason if sequence == self.sequence else ""


def _same_kind(value: object, default: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _with_failure(record: UpgradeRecord) -> tuple[int, ...]:
    """``failed_sequences`` plus the record's own sequence (if it has one)."""
    own = {record.sequence} if record.sequence >= 0 else set()
    return tuple(sorted({*record.failed_sequences, *own}))[-MAX_FAILED_SEQUENCES:]


def _require(record: UpgradeRecord, *allowed: State) -> None:
    if record.state not in allowed:
        raise PolicyError(f"upgrade is {record.state.value}; cannot do that now")


def kept_bytes(record: UpgradeRecord, *, target_slot: str, total: int, digest: bytes) -> int:
    """Bytes of this very image an earlier, stopped download left in ``target_slot``.

    A download that ran out of attempts (a long outage) ends FAILED with its
    progress recorded; asking for the same image again resumes there instead of
    discarding what the slot holds.  The installer re-hashes those bytes from the
    slot, and the signed digest still decides at the end.
    """
    same_image = (
        record.state == State.FAILED
        and record.target_slot == target_slot
        and record.total == total
        and record.image_digest_hex == digest.hex()
    )
    return record.received if same_image and record.received < total else 0


def begin(
    record: UpgradeRecord,
    *,
    sequence: int,
    version: str,
    target_slot: str,
    total: int,
    envelope: bytes,
    image_digest: bytes,
    now: float,
    image_uri: str = "",
) -> UpgradeRecord:
    _require(record, *RESTING)
    return dataclasses.replace(
        record,
        state=State.DOWNLOADING,
        sequence=sequence,
        version=version,
        target_slot=target_slot,
        received=kept_bytes(record, target_slot=target_slot, total=total, digest=image_digest),
        total=total,
        reason="",
        envelope_hex=envelope.hex(),
        image_digest_hex=image_digest.hex(),
        marked_boot_id="",
        trial_since=0.0,
        updated_at=now,
        image_uri=image_uri,
    )


def progress(record: UpgradeRecord, received: int, now: float) -> UpgradeRecord:
    _require(record, State.DOWNLOADING)
    return dataclasses.replace(record, received=min(received, record.total), updated_at=now)


def downloaded(record: UpgradeRecord, now: float) -> UpgradeRecord:
    _require(record, State.DOWNLOADING)
    return dataclasses.replace(
        record, state=State.INSTALLING, received=record.total, updated_at=now
    )


def marked(record: UpgradeRecord, boot_id: str, now: float) -> UpgradeRecord:
    _require(record, State.INSTALLING)
    return dataclasses.replace(
        record, state=State.AWAITING_REBOOT, marked_boot_id=boot_id, updated_at=now
    )


def failed(
    record: UpgradeRecord, reason: str, now: float, *, release_fault: bool = False
) -> UpgradeRecord:
    """The install stopped; ``release_fault`` (bad image, bad envelope) bars the sequence."""
    _require(record, State.DOWNLOADING, State.INSTALLING)
    return dataclasses.replace(
        record,
        state=State.FAILED,
        reason=reason[:200],
        updated_at=now,
        failed_sequences=_with_failure(record) if release_fault else record.failed_sequences,
    )


def committed(record: UpgradeRecord, now: float) -> UpgradeRecord:
    _require(record, State.TRIAL)
    return dataclasses.replace(
        record,
        state=State.COMMITTED,
        installed_sequence=record.sequence,
        installed_digest_hex=record.image_digest_hex,
        reason="",
        updated_at=now,
        failed_sequences=tuple(s for s in record.failed_sequences if s > record.sequence),
    )


def rolled_back(record: UpgradeRecord, reason: str, now: float) -> UpgradeRecord:
    """The trial failed (health, or the bootloader fell back): the sequence is barred."""
    _require(record, State.AWAITING_REBOOT, State.TRIAL)
    return dataclasses.replace(
        record,
        state=State.ROLLED_BACK,
        reason=reason[:200],
        updated_at=now,
        failed_sequences=_with_failure(record),
    )


def deferred(record: UpgradeRecord, until: float) -> UpgradeRecord:
    return dataclasses.replace(record, deferred_until=until)


class Decision(enum.Enum):
    NOTHING = "nothing"
    RESUME_DOWNLOAD = "resume-download"
    VERIFY_SLOT = "verify-slot"
    WAIT_REBOOT = "wait-reboot"
    CHECK_HEALTH = "check-health"
    COMMIT = "commit"
    ROLLBACK = "rollback"


def after_start(
    record: UpgradeRecord, boot: BootStatus, now: float
) -> tuple[UpgradeRecord, Decision]:
    """Reconcile the persisted record with what the bootloader did; say what to do next."""
    target = record.target_slot
    if record.state == State.DOWNLOADING:
        return record, Decision.RESUME_DOWNLOAD
    if record.state == State.INSTALLING:
        return record, Decision.VERIFY_SLOT
    if record.state == State.AWAITING_REBOOT:
        if boot.boot_id == record.marked_boot_id:
            return record, Decision.WAIT_REBOOT
        if boot.booted_slot == target and boot.trial:
            trial = dataclasses.replace(record, state=State.TRIAL, trial_since=now, updated_at=now)
            return trial, Decision.CHECK_HEALTH
        reason = f"bootloader fell back to slot {boot.booted_slot} (boot count {boot.bootcount})"
        return rolled_back(record, reason, now), Decision.NOTHING
    if record.state == State.TRIAL:
        if boot.booted_slot != target:
            return rolled_back(record, "rebooted out of the trial slot", now), Decision.NOTHING
        if boot.trial and boot.next_slot == target:
            return record, Decision.CHECK_HEALTH
        if boot.next_slot == target:
            return committed(record, now), Decision.NOTHING  # committed, then killed
        return rolled_back(record, "health check failed", now), Decision.NOTHING
    return record, Decision.NOTHING


def health_decision(
    record: UpgradeRecord, healthy: bool, now: float, grace_seconds: float
) -> Decision:
    _require(record, State.TRIAL)
    if healthy:
        return Decision.COMMIT
    if now - record.trial_since >= grace_seconds:
        return Decision.ROLLBACK
    return Decision.CHECK_HEALTH
