from __future__ import annotations

import time
from pathlib import Path

import cbor2
import pytest

from agent.camera.events import MOTION
from agent.consent import ConsentLedger
from agent.database import Database
from agent.errors import DecodeError, TooLargeError
from agent.events import DEVICE_STATUS, Event, SchemaCatalogue
from agent.matching.events import FACE_MATCH
from agent.minimise import Minimiser, Pseudonymiser, load_or_create_secret
from agent.outbox import Outbox
from agent.purposes import CONSENTABLE, Purpose
from agent.sink import OutboxSink
from agent.stats import STATS
from agent.topics import Topics

T0 = 1_790_000_000.0


def build(tmp_path: Path, **kw: object) -> tuple[ConsentLedger, Minimiser, Outbox]:
    db = Database.in_state_dir(tmp_path)
    ledger = ConsentLedger(db, "2026-11")
    pseudo = Pseudonymiser(load_or_create_secret(tmp_path), ledger.key_generation)
    minimiser = Minimiser(
        device_id="SN1",
        schemas=SchemaCatalogue([FACE_MATCH, MOTION, STATS, DEVICE_STATUS]),
        is_granted=ledger.is_granted,
        pseudonymiser=pseudo,
        **kw,  # type: ignore[arg-type]
    )
    return ledger, minimiser, Outbox(db, max_messages=1000, default_expiry_seconds=60)


def face(person: str = "alice-id", image: bytes | None = b"IMG") -> Event:
    return Event(
        "face.match",
        occurred_at=T0 + 59.7,
        fields={"score": 0.93, "label": "Alice", "bbox": [1, 2, 3, 4], "embedding": [0.1] * 8},
        identifiers={"person_id": person, "phone": "+44 7700 900123"},
        image=image,
    )


def test_everything_is_off_by_default(tmp_path: Path) -> None:
    ledger, minimiser, _ = build(tmp_path)
    assert all(not ledger.is_granted(p) for p in CONSENTABLE)
    assert ledger.is_granted(Purpose.DEVICE_OPERATION)
    assert minimiser.minimise(face()) is None


def test_minimiser_keeps_allowed_fields_and_pseudonymises(tmp_path: Path) -> None:
    ledger, minimiser, _ = build(tmp_path, timestamp_precision="minute")
    ledger.grant(Purpose.FACE_RECOGNITION, T0)
    out = minimiser.minimise(face())
    assert out is not None
    body = cbor2.loads(out.payload)
    assert set(body["f"]) == {"score", "label"}
    assert set(body["ids"]) == {"person_id"}  # undeclared identifiers are dropped
    assert "alice-id" not in str(body) and "SN1" not in str(body)
    assert body["ts"] == T0 + 59.7 - (T0 + 59.7) % 60
    assert "img" not in body  # snapshots not consented
    again = cbor2.loads(minimiser.minimise(face()).payload)  # type: ignore[union-attr]
    assert again["ids"] == body["ids"] and again["id"] != body["id"]


def test_image_only_with_snapshot_consent_and_dropped_when_too_big(tmp_path: Path) -> None:
    ledger, minimiser, _ = build(tmp_path, max_event_bytes=2048)
    ledger.grant(Purpose.FACE_RECOGNITION, T0)
    ledger.grant(Purpose.EVENT_SNAPSHOTS, T0)
    assert cbor2.loads(minimiser.minimise(face()).payload)["img"] == b"IMG"  # type: ignore[union-attr]
    big = cbor2.loads(minimiser.minimise(face(image=b"x" * 5000)).payload)  # type: ignore[union-attr]
    assert "img" not in big and big["img_dropped"] is True
    stats = Event("stats", T0, fields={"counts": {"x": 1}}, image=b"IMG")
    ledger.grant(Purpose.USAGE_STATISTICS, T0)
    assert "img" not in cbor2.loads(minimiser.minimise(stats).payload)  # type: ignore[union-attr]
    huge = Event("stats", T0, fields={"counts": {str(i): i for i in range(2000)}})
    with pytest.raises(TooLargeError):
        minimiser.minimise(huge)
    with pytest.raises(DecodeError):
        minimiser.minimise(Event("no.such.type", T0))


def test_withdrawal_purges_outbox_in_same_transaction_and_rotates_pseudonyms(
    tmp_path: Path,
) -> None:
    ledger, minimiser, outbox = build(tmp_path)
    ledger.grant(Purpose.FACE_RECOGNITION, T0)
    ledger.grant(Purpose.CLOUD_EVENTS, T0)
    first = minimiser.minimise(face())
    assert first is not None
    outbox.put_many([("t/face", first)] * 1, T0)
    motion = minimiser.minimise(Event("motion", T0, fields={"area": 1}))
    assert motion is not None
    outbox.put("t/motion", motion, T0)
    purged_files: list[str] = []
    ledger.add_withdrawal_hook(
        Purpose.FACE_RECOGNITION, "gallery", lambda: purged_files.append("gallery") or 3
    )
    ledger.add_withdrawal_hook(
        Purpose.PLATE_RECOGNITION, "plates", lambda: purged_files.append("plates") or 5
    )
    change = ledger.withdraw(Purpose.FACE_RECOGNITION, T0 + 5, source="test")
    assert change.purged == {"outbox": 1, "gallery": 3}
    assert len(outbox) == 1 and not outbox.contains(first.msg_id)
    assert purged_files == ["gallery"]  # only the withdrawn purpose's stores
    ledger.grant(Purpose.FACE_RECOGNITION, T0 + 10)
    later = cbor2.loads(minimiser.minimise(face()).payload)  # type: ignore[union-attr]
    assert later["ids"] != cbor2.loads(first.payload)["ids"]  # unlinkable across withdrawal
    history = ledger.history()
    assert [(h["purpose"], h["action"]) for h in history] == [
        ("face_recognition", "grant"),
        ("cloud_events", "grant"),
        ("face_recognition", "withdraw"),
        ("face_recognition", "grant"),
    ]
    assert all(h["policy_version"] == "2026-11" for h in history)


def test_ledger_sees_changes_made_by_another_process_on_refresh(tmp_path: Path) -> None:
    ledger, minimiser, outbox = build(tmp_path)
    other = ConsentLedger.open(tmp_path, "2026-11")
    assert not ledger.is_granted(Purpose.CLOUD_EVENTS)
    other.grant(Purpose.CLOUD_EVENTS, time.time(), source="cli")
    ledger.refresh()
    assert ledger.is_granted(Purpose.CLOUD_EVENTS)
    # A withdrawal by the CLI is honoured at the outbox's door even before the loop refreshes.
    sink = OutboxSink(minimiser, outbox, Topics("edge", "SN1"))
    assert sink.emit(Event("motion", T0, fields={"area": 1}))
    other.withdraw(Purpose.CLOUD_EVENTS, time.time(), source="cli")
    assert ledger.is_granted(Purpose.CLOUD_EVENTS)  # not re-read yet
    assert sink.flush(T0) == 0 and len(outbox) == 0


def test_outbox_survives_reopen_expires_and_acks(tmp_path: Path) -> None:
    ledger, minimiser, outbox = build(tmp_path)
    ledger.grant(Purpose.CLOUD_EVENTS, T0)
    messages = [minimiser.minimise(Event("motion", T0, fields={"area": k})) for k in range(5)]
    outbox.put_many([("t", m) for m in messages if m], T0)
    outbox.db.close()
    reopened = Outbox(Database.in_state_dir(tmp_path), max_messages=1000, default_expiry_seconds=60)
    batch = reopened.batch_after(0, 10, T0 + 1)
    assert [cbor2.loads(m.payload)["f"]["area"] for m in batch] == [0, 1, 2, 3, 4]
    assert reopened.ack_many([batch[0].msg_id, batch[0].msg_id, "unknown"]) == 1
    assert reopened.batch_after(0, 10, T0 + 61) == []  # expired messages are not offered
    assert reopened.expire(T0 + 61) == 4
    assert reopened.stats()["dropped_expired"] == 4 and reopened.stats()["acked"] == 1


def test_withdrawing_snapshots_strips_queued_images_in_the_same_transaction(
    tmp_path: Path,
) -> None:
    ledger, minimiser, outbox = build(tmp_path)
    ledger.grant(Purpose.FACE_RECOGNITION, T0)
    ledger.grant(Purpose.EVENT_SNAPSHOTS, T0)
    message = minimiser.minimise(face())
    assert message is not None and "img" in cbor2.loads(message.payload)
    outbox.put("t/face", message, T0)
    change = ledger.withdraw(Purpose.EVENT_SNAPSHOTS, T0 + 1)
    assert change.purged["outbox"] == 1
    queued = outbox.batch_after(0, 10, T0 + 2)
    assert len(queued) == 1  # the consented event itself stays
    body = cbor2.loads(queued[0].payload)
    assert "img" not in body and body["f"]["score"] == 0.93


def test_flush_strips_images_when_snapshots_withdrawn_after_emit(tmp_path: Path) -> None:
    ledger, minimiser, outbox = build(tmp_path)
    ledger.grant(Purpose.FACE_RECOGNITION, T0)
    ledger.grant(Purpose.EVENT_SNAPSHOTS, T0)
    sink = OutboxSink(minimiser, outbox, Topics("site", "SN1"))
    assert sink.emit(face())
    ledger.withdraw(Purpose.EVENT_SNAPSHOTS, T0 + 1)
    assert sink.flush(T0 + 1) == 1
    (queued,) = outbox.batch_after(0, 10, T0 + 2)
    assert "img" not in cbor2.loads(queued.payload)


def test_a_store_registers_once_per_purpose(tmp_path: Path) -> None:
    """Two owners of one store: the second would silently have been skipped before."""
    ledger, _, _ = build(tmp_path)
    ledger.add_withdrawal_hook(Purpose.FACE_RECOGNITION, "gallery", lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        ledger.add_withdrawal_hook(Purpose.FACE_RECOGNITION, "gallery", lambda: 2)
    ledger.add_withdrawal_hook(Purpose.EVENT_SNAPSHOTS, "gallery", lambda: 3)  # another purpose
    assert ledger.withdrawal_hooks(Purpose.FACE_RECOGNITION) == ["gallery"]


def test_the_outbox_door_refuses_a_purpose_withdrawn_inside_its_own_transaction(
    tmp_path: Path,
) -> None:
    """A message minimised while consent held is not committed once consent is gone."""
    ledger, minimiser, outbox = build(tmp_path)
    ledger.grant(Purpose.CLOUD_EVENTS, T0)
    ledger.grant(Purpose.FACE_RECOGNITION, T0)
    motion = minimiser.minimise(Event("motion", T0, fields={"area": 1}))
    kept = minimiser.minimise(face(image=None))
    assert motion is not None and kept is not None
    ConsentLedger.open(tmp_path, "2026-11").withdraw(Purpose.CLOUD_EVENTS, T0 + 1, "cli")
    result = outbox.put_many([("t/motion", motion), ("t/face", kept)], T0 + 1)
    assert (result.queued, result.refused) == (1, 1)
    assert [m.msg_id for m in outbox.batch_after(0, 10, T0 + 2)] == [kept.msg_id]
