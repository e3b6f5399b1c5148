"""Rebuild an unreadable upgrade state from the boot environment and the slots' contents.

What each slot holds is known only if the envelope saved for it still verifies
against the trusted keys *and* the slot's bytes hash to its digest; anything
less is treated as unknown.  The bootloader's view then decides the state:

* nothing pending: the running slot's release is the installed one;
* a trial boot of a known image: back to awaiting-reboot, so the usual
  start-up turns it into a trial and the health check decides;
* an armed (not yet booted) known image: awaiting-reboot, as before;
* the old slot armed while the new one runs (a health failure being rolled
  back): rolled-back, the new sequence barred;
* a trial of an image that cannot be identified: the trial is ended (the
  bootloader is pointed back at the other slot), since nothing can vouch for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from agent.errors import BadDataError
from agent.upgrade import machine
from agent.upgrade.envelope import verify_envelope
from agent.upgrade.keys import KeySet
from agent.upgrade.machine import State, UpgradeRecord
from agent.upgrade.manifest import Manifest
from agent.upgrade.ports import SLOTS, SlotDriver, StateStore, other_slot


@dataclasses.dataclass(frozen=True)
class SlotImage:
    manifest: Manifest
    envelope: bytes


def identify(
    slots: SlotDriver, store: StateStore, keys: KeySet, slot: str, max_manifest_bytes: int
) -> SlotImage | None:
    """The verified release ``slot`` holds, or None if it cannot be vouched for."""
    envelope = store.load_envelope(slot)
    if envelope is None:
        return None
    try:
        manifest = verify_envelope(envelope, keys, max_bytes=max_manifest_bytes).manifest
    except BadDataError:
        return None
    if manifest.image_size is None or manifest.image_digest is None:
        return None
    digest = hashlib.sha256()
    size = 0
    for chunk in slots.read(slot, manifest.image_size):
        digest.update(chunk)
        size += len(chunk)
    if size != manifest.image_size or not hmac.compare_digest(
        digest.digest(), manifest.image_digest
    ):
        return None
    return SlotImage(manifest, envelope)


def _release(record: UpgradeRecord, image: SlotImage, slot: str) -> UpgradeRecord:
    manifest = image.manifest
    assert manifest.image_size is not None and manifest.image_digest is not None
    return dataclasses.replace(
        record,
        sequence=manifest.sequence,
        version=manifest.software_version,
        target_slot=slot,
        received=manifest.image_size,
        total=manifest.image_size,
        envelope_hex=image.envelope.hex(),
        image_digest_hex=manifest.image_digest.hex(),
    )


def _installed(record: UpgradeRecord, image: SlotImage | None) -> UpgradeRecord:
    if image is None:
        return record
    assert image.manifest.image_digest is not None
    return dataclasses.replace(
        record,
        installed_sequence=image.manifest.sequence,
        installed_digest_hex=image.manifest.image_digest.hex(),
    )


def rebuild(
    slots: SlotDriver, store: StateStore, keys: KeySet, max_manifest_bytes: int, now: float
) -> tuple[UpgradeRecord, str]:
    """A record consistent with the bootloader and the slots, and a one-line summary.

    May end a trial that cannot be identified (writes the boot environment).
    """
    boot = slots.boot_status()
    booted, armed = boot.booted_slot, boot.next_slot
    image = {s: identify(slots, store, keys, s, max_manifest_bytes) for s in SLOTS}
    base = UpgradeRecord(updated_at=now)
    if not boot.trial and armed == booted:
        running = image[booted]
        if running is None:
            return base, f"slot {booted} runs; no verified release is recorded for it"
        record = _installed(_release(base, running, booted), running)
        record = dataclasses.replace(record, state=State.COMMITTED)
        return record, f"slot {booted} runs sequence {record.sequence}"
    if not boot.trial or image[armed] is None:
        # The old slot armed while the new one runs (a rollback under way), or a
        # trial nothing can vouch for: end it, and reboot if the rejected slot runs.
        if boot.trial:
            slots.rollback(booted if booted != armed else other_slot(armed))
        good = armed if not boot.trial else other_slot(booted) if booted == armed else booted
        record = _installed(base, image[good])
        if booted == good:
            return record, f"slot {armed} holds no verified release; its trial is ended"
        rejected = image[booted]
        if rejected is not None:
            record = _release(record, rejected, booted)
        record = dataclasses.replace(
            record, state=State.AWAITING_REBOOT, target_slot=booted, marked_boot_id=boot.boot_id
        )
        record = machine.rolled_back(record, "rolled back (state rebuilt)", now)
        return record, f"slot {booted} is rolled back; slot {good} boots next"
    candidate = image[armed]
    assert candidate is not None
    record = _installed(_release(base, candidate, armed), image[other_slot(armed)])
    # In the trial boot itself the boot id differs from the one recorded here, so the
    # start-up reconciliation turns this into a trial and the health check decides.
    marked = "" if booted == armed else boot.boot_id
    record = dataclasses.replace(record, state=State.AWAITING_REBOOT, marked_boot_id=marked)
    what = "on trial" if booted == armed else "armed for its trial boot"
    return record, f"slot {armed} with sequence {record.sequence} is {what}"
