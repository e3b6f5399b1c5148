"""Drives the pure upgrade state machine: verify, download into the inactive slot, mark, commit.

Every transition is persisted (atomically) before the action it enables, and
every action is idempotent, so killing the process anywhere and calling
:meth:`Installer.resume` either finishes the step or rolls it back.

At each step boundary the installer calls its ``checkpoint`` callback with
the boundary's name (:data:`CHECKPOINTS`); the default does nothing, the
kill-point tests park the process there and SIGKILL it.  Time comes from one
injected :class:`agent.ports.Clock`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from agent.errors import (
    BadDataError,
    ConnectionLostError,
    PolicyError,
    TransportError,
    VerificationError,
)
from agent.events import Event
from agent.ports import AuditSink, Clock, EventSink
from agent.upgrade import machine
from agent.upgrade.envelope import VerifiedManifest, verify_envelope
from agent.upgrade.errors import (
    DeadlineExceededError,
    ExtraDataError,
    ImageMismatchError,
    ServerBusyError,
    StateFileError,
)
from agent.upgrade.image import ImageHasher, ThroughputGuard
from agent.upgrade.machine import Decision, State, UpgradeRecord
from agent.upgrade.policy import DeviceIdentity, InstalledImage, check_manifest, check_not_failed
from agent.upgrade.ports import ImageSource, SlotDriver, StateStore, other_slot
from agent.upgrade.settings import UpgradeSettings
from drivers.clock import SystemClock
from drivers.upgrade.keystore import KeyStore
from drivers.upgrade.recovery import rebuild

CHUNK = 256 * 1024
PERSIST_EVERY = 4 * 1024 * 1024
PERSIST_SECONDS = 1.0  # ... or this often on a slow link, whichever comes first
Progress = Callable[[int, int], None]
Checkpoint = Callable[[str], None]
# The named points at which ``Installer.checkpoint`` is called, in the order they are reached.
CHECKPOINTS = (
    "downloading",  # the install is recorded; nothing written to the slot yet
    "mid-download",  # a progress record is saved (PERSIST_EVERY bytes or PERSIST_SECONDS)
    "installing",  # the image is downloaded and its digest checked
    "marked",  # the bootloader has the slot on trial; the record does not know yet
    "awaiting-reboot",  # the record says so too
    "committing",  # the bootloader has committed the slot; the record does not know yet
    "rolling-back",  # the bootloader boots the old slot next; the record does not know yet
)


log = logging.getLogger(__name__)


class DownloadInterruptedError(TransportError):
    """The download was stopped on request; the persisted state resumes it later."""


def no_checkpoint(name: str) -> None:
    """The default ``Installer.checkpoint``: carry on."""


@dataclasses.dataclass
class Installer:
    settings: UpgradeSettings
    device: DeviceIdentity
    keys: KeyStore
    slots: SlotDriver
    source: ImageSource
    store: StateStore
    sink: EventSink | None = None
    audit: AuditSink | None = None
    clock: Clock = dataclasses.field(default_factory=SystemClock)
    sleep: Callable[[float], None] = time.sleep
    on_progress: Progress | None = None
    # Polled between chunks: a stopping agent leaves the download resumable, not failed.
    should_stop: Callable[[], bool] = lambda: False
    # Called with each name in CHECKPOINTS as the install reaches it.
    checkpoint: Checkpoint = no_checkpoint
    # A verification failure bars the sequence from automatic installs; not for an
    # image from a local file, where the file rather than the release is suspect.
    bar_failed_images: bool = True

    # --- persistence & reporting ------------------------------------------

    def record(self) -> UpgradeRecord:
        raw = self.store.load()
        if raw is None:
            return UpgradeRecord()
        try:
            return UpgradeRecord.from_bytes(raw)
        except StateFileError as exc:
            return self._recover(str(exc))

    def _recover(self, problem: str) -> UpgradeRecord:
        """Rebuild the state from the bootloader and the slots, then move the bad file aside.

        Rebuilt first: if the boot environment cannot be read either, the bad file
        stays where it is and the next call tries again.
        """
        record, summary = rebuild(
            self.slots,
            self.store,
            self.keys.load(),
            self.settings.max_manifest_bytes,
            self.clock.now(),
        )
        moved = self.store.set_aside(self.clock.now())
        if moved is None:  # another process (the daemon, the CLI) recovered it first
            raw = self.store.load()
            return UpgradeRecord() if raw is None else UpgradeRecord.from_bytes(raw)
        self._save(record, emit=False)
        log.warning(
            "upgrade state was unreadable (%s): moved to %s and rebuilt from the boot "
            "environment and the slots: %s",
            problem,
            moved,
            summary,
        )
        return record

    def clean_up(self) -> None:
        """At start: remove temp files that killed atomic writes left behind."""
        removed = self.store.clean_stale()
        if removed:
            log.info("removed %d stale temp file(s) of interrupted writes", len(removed))

    def _save(self, record: UpgradeRecord, *, emit: bool = True) -> UpgradeRecord:
        self.store.save(record.to_bytes())
        if emit:
            self._emit(record)
        return record

    def _emit(self, record: UpgradeRecord) -> None:
        if self.sink is None:
            return
        fields = {
            "state": record.state.value,
            "version": record.version,
            "sequence": record.sequence,
            "received": record.received,
            "total": record.total,
            "reason": record.reason,
        }
        self.sink.emit(Event(type="upgrade.state", occurred_at=self.clock.now(), fields=fields))

    def _audit(self, kind: str, record: UpgradeRecord) -> None:
        if self.audit is not None:
            self.audit.record(
                kind,
                {
                    "state": record.state.value,
                    "sequence": record.sequence,
                    "version": record.version,
                    "reason": record.reason,
                },
                self.clock.now(),
            )

    # --- verification -----------------------------------------------------

    def verify(self, envelope: bytes, *, force: bool = False) -> VerifiedManifest:
        """Authenticate ``envelope`` and apply the install policy; raises BadDataError.

        A sequence that failed here before is refused unless ``force``.
        """
        verified = verify_envelope(
            envelope, self.keys.load(), max_bytes=self.settings.max_manifest_bytes
        )
        record = self.record()
        installed = InstalledImage(
            record.installed_sequence,
            bytes.fromhex(record.installed_digest_hex) if record.installed_digest_hex else None,
        )
        check_manifest(
            verified.manifest, self.device, installed, self.clock.now(),
            fetches_uri=self.source.fetches_uri,
        )
        sequence = verified.manifest.sequence
        check_not_failed(sequence, record.failure_of(sequence), force=force)
        size = verified.manifest.image_size or 0
        if size > self.settings.max_image_bytes:
            raise PolicyError(f"image of {size} bytes exceeds upgrade.max_image_bytes")
        if verified.manifest.new_keys:
            self.keys.rotate(verified.keys, verified.manifest.sequence)
        return verified

    # --- install ----------------------------------------------------------

    def install(
        self, envelope: bytes, *, force: bool = False, image_uri: str = ""
    ) -> UpgradeRecord:
        """Verify, download into the inactive slot, re-verify it and mark it for trial boot.

        ``force`` installs a sequence that failed here before (an explicit request);
        ``image_uri`` fetches the image from there instead of the manifest's URI (a
        fleet server's artifact link: the signed digest still decides).
        """
        record = self.record()
        if record.busy:
            raise PolicyError(f"an upgrade is already {record.state.value}")
        verified = self.verify(envelope, force=force)
        boot = self.slots.boot_status()
        if boot.trial or boot.next_slot != boot.booted_slot:
            raise PolicyError("the bootloader still has a pending slot; reboot first")
        manifest = verified.manifest
        assert manifest.image_digest is not None and manifest.image_size is not None
        record = self._save(
            machine.begin(
                record,
                sequence=manifest.sequence,
                version=manifest.software_version,
                target_slot=other_slot(boot.booted_slot),
                total=manifest.image_size,
                envelope=envelope,
                image_digest=manifest.image_digest,
                now=self.clock.now(),
                image_uri=image_uri,
            )
        )
        self._audit("upgrade.started", record)
        self.store.save_envelope(record.target_slot, None)  # the slot no longer holds it
        self.checkpoint("downloading")
        return self._continue(record)

    def _continue(self, record: UpgradeRecord) -> UpgradeRecord:
        try:
            if record.state == State.DOWNLOADING:
                record = self._download(record)
            if record.state == State.INSTALLING:
                record = self._verify_and_mark(record)
        except DownloadInterruptedError:
            raise
        except (BadDataError, TransportError) as exc:
            # A verification failure (image, envelope) bars the sequence; a transport
            # fault (cut download, missing file) does not.
            record = self._save(
                machine.failed(
                    self.record(),
                    str(exc),
                    self.clock.now(),
                    release_fault=self.bar_failed_images and isinstance(exc, VerificationError),
                )
            )
            self._audit("upgrade.failed", record)
            raise
        return record

    def _manifest_of(self, record: UpgradeRecord) -> VerifiedManifest:
        # Re-authenticated on resume: the persisted copy is not trusted blindly.
        return verify_envelope(
            bytes.fromhex(record.envelope_hex),
            self.keys.load(),
            max_bytes=self.settings.max_manifest_bytes,
        )

    def _hasher_from_slot(self, record: UpgradeRecord) -> ImageHasher:
        """Resume hashing from what the slot holds (synced before progress was saved)."""
        digest = bytes.fromhex(record.image_digest_hex)
        hasher = ImageHasher(record.total, digest)
        for chunk in self.slots.read(record.target_slot, record.received):
            hasher.accept(chunk)
        if hasher.received != record.received:
            return ImageHasher(record.total, digest)  # the slot is shorter: start over
        return hasher

    def _download(self, record: UpgradeRecord) -> UpgradeRecord:
        manifest = self._manifest_of(record).manifest
        assert manifest.uri is not None
        hasher = self._hasher_from_slot(record)
        resumed_from = hasher.received
        guard = ThroughputGuard(
            self.clock.monotonic(),
            min_bytes_per_second=self.settings.min_throughput_bytes_per_second,
            grace_seconds=self.settings.throughput_grace_seconds,
            deadline_seconds=self.settings.download_deadline_seconds,
        )
        attempt = 0  # consecutive attempts without a byte of progress
        while True:
            before = hasher.received
            try:
                record = self._fetch_once(record, record.image_uri or manifest.uri, hasher, guard)
                break
            except (DeadlineExceededError, DownloadInterruptedError):
                raise
            except TransportError as exc:
                if hasher.received > before:
                    attempt = 0  # progress: a link that drops every N bytes still gets there
                attempt += 1
                if attempt >= self.settings.download_attempts:
                    raise
                self.sleep(self._retry_delay(exc, attempt, guard))
        try:
            hasher.finish()
        except ImageMismatchError:
            if not resumed_from:
                raise
            # The kept prefix is not what the signed digest says (a flash error, a file
            # changed on the server): one whole download before calling the release bad.
            log.warning(
                "image digest wrong after resuming at byte %d; downloading it whole again",
                resumed_from,
            )
            return self._download(self._save(machine.progress(record, 0, self.clock.now())))
        record = self._save(machine.downloaded(record, self.clock.now()))
        self.checkpoint("installing")
        return record

    def _retry_delay(self, exc: TransportError, attempt: int, guard: ThroughputGuard) -> float:
        """The server's Retry-After if it gave one (within the deadline), else a backoff."""
        if isinstance(exc, ServerBusyError) and exc.retry_after is not None:
            left = guard.remaining(self.clock.monotonic())
            if exc.retry_after > left:
                raise DeadlineExceededError(
                    f"server asks to retry in {exc.retry_after:.0f} s, past the download "
                    f"deadline ({max(left, 0):.0f} s left)"
                ) from exc
            log.info("image server busy; retrying in %.1f s as it asked", exc.retry_after)
            return exc.retry_after
        return min(0.05 * 2.0**attempt, 5.0)

    def _fetch_once(
        self, record: UpgradeRecord, uri: str, hasher: ImageHasher, guard: ThroughputGuard
    ) -> UpgradeRecord:
        offset = hasher.received
        stream = self.source.open(uri, offset)
        writer = self.slots.open_writer(record.target_slot, offset)
        guard.restart_window(self.clock.monotonic())
        last_saved, saved_at = offset, self.clock.monotonic()
        try:
            skip = offset - stream.start  # the server ignored our Range: discard the prefix
            if skip < 0:
                raise ConnectionLostError("server resumed past the requested offset")
            if stream.length is not None and stream.length - skip > hasher.remaining:
                raise ExtraDataError(
                    f"server announces {stream.length} bytes; signed size is {hasher.expected_size}"
                )
            while True:
                want = CHUNK if skip else min(CHUNK, hasher.remaining) or 1
                if self.should_stop():
                    raise DownloadInterruptedError("agent is stopping; download will resume")
                chunk = stream.read(min(want, skip) if skip else want)
                guard.check(self.clock.monotonic(), len(chunk))
                if not chunk:
                    break
                if skip:
                    skip -= len(chunk)
                    continue
                if len(chunk) > hasher.remaining:
                    raise ExtraDataError(
                        f"image is longer than the signed {hasher.expected_size} bytes"
                    )
                writer.write(chunk)  # written, then hashed: a failed write is not counted
                hasher.accept(chunk)
                unsaved = hasher.received - last_saved
                if unsaved >= PERSIST_EVERY or (
                    unsaved and self.clock.monotonic() - saved_at >= PERSIST_SECONDS
                ):
                    writer.sync()  # what progress claims is on disk: a restart resumes there
                    record = self._progress(record, hasher.received)
                    last_saved, saved_at = hasher.received, self.clock.monotonic()
                    self.checkpoint("mid-download")
        except DownloadInterruptedError:
            writer.sync()  # what progress claims must be on disk first
            self._progress(record, hasher.received)
            raise
        finally:
            try:
                writer.sync()
            finally:
                writer.close()
                stream.close()
        record = self._progress(record, hasher.received)
        if hasher.remaining:
            raise ConnectionLostError(f"download cut at {hasher.received} of {record.total}")
        return record

    def _progress(self, record: UpgradeRecord, received: int) -> UpgradeRecord:
        before = record.received * 10 // max(record.total, 1)
        record = machine.progress(record, received, self.clock.now())
        self._save(record, emit=received * 10 // max(record.total, 1) != before)
        if self.on_progress is not None:
            self.on_progress(received, record.total)
        return record

    def _verify_and_mark(self, record: UpgradeRecord) -> UpgradeRecord:
        # TOCTOU: what boots is what is in the slot, so hash the slot itself again.
        hasher = ImageHasher(record.total, bytes.fromhex(record.image_digest_hex))
        for chunk in self.slots.read(record.target_slot, record.total):
            hasher.accept(chunk)
        hasher.finish()
        self.store.save_envelope(record.target_slot, bytes.fromhex(record.envelope_hex))
        self.slots.mark_trial(record.target_slot)
        self.checkpoint("marked")
        record = self._save(
            machine.marked(record, self.slots.boot_status().boot_id, self.clock.now())
        )
        self._audit("upgrade.installed", record)
        self.checkpoint("awaiting-reboot")
        return record

    # --- after a (re)start --------------------------------------------------

    def resume(self) -> tuple[UpgradeRecord, Decision]:
        """Reconcile with the bootloader after a start; finish interrupted work."""
        record = self.record()
        boot = self.slots.boot_status()
        updated, decision = machine.after_start(record, boot, self.clock.now())
        if updated != record:
            if (
                updated.state == State.ROLLED_BACK
                and boot.booted_slot != record.target_slot
                and (boot.trial or boot.next_slot != boot.booted_slot)
            ):
                # The old slot runs (a fall-back entry, a manual pick) while the
                # bootloader still has the new one armed: end the trial first.
                self.slots.rollback(boot.booted_slot)
            self._save(updated)
            if updated.state == State.ROLLED_BACK:
                self._audit("upgrade.rolled_back", updated)
            if updated.state == State.COMMITTED:
                self._audit("upgrade.committed", updated)
        if decision in (Decision.RESUME_DOWNLOAD, Decision.VERIFY_SLOT):
            updated = self._continue(updated)
            decision = Decision.WAIT_REBOOT
        return updated, decision

    def health(self, healthy: bool) -> tuple[UpgradeRecord, Decision]:
        """In a trial boot: commit when healthy, roll back after the grace period."""
        record = self.record()
        decision = machine.health_decision(
            record, healthy, self.clock.now(), self.settings.health_grace_seconds
        )
        if decision == Decision.COMMIT:
            self.slots.commit(record.target_slot)
            self.checkpoint("committing")
            record = self._save(machine.committed(record, self.clock.now()))
            self._audit("upgrade.committed", record)
        elif decision == Decision.ROLLBACK:
            self.slots.rollback(other_slot(record.target_slot))
            self.checkpoint("rolling-back")
            record = self._save(
                machine.rolled_back(record, "health check failed", self.clock.now())
            )
            self._audit("upgrade.rolled_back", record)
        return record, decision

    def status(self) -> dict[str, object]:
        """The persisted record plus what the bootloader will do (CLI and MQTT reply)."""
        record = self.record()
        boot = self.slots.boot_status()
        return {
            "state": record.state.value,
            "sequence": record.sequence,
            "version": record.version,
            "received": record.received,
            "total": record.total,
            "reason": record.reason,
            "installed_sequence": record.installed_sequence,
            "target_slot": record.target_slot,
            "deferred_until": record.deferred_until,
            "booted_slot": boot.booted_slot,
            "next_slot": boot.next_slot,
            "trial": boot.trial,
        }

    def abandon(self, reason: str) -> UpgradeRecord:
        """Give up an interrupted download (cancelled by a fleet server); not a release fault."""
        record = self.record()
        if record.state != State.DOWNLOADING:
            return record
        record = self._save(machine.failed(record, reason, self.clock.now()))
        self._audit("upgrade.failed", record)
        return record

    def defer(self, until: float) -> UpgradeRecord:
        return self._save(machine.deferred(self.record(), until), emit=False)
