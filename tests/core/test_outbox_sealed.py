"""Queued events at rest: nothing in clear that names the event, the person or the image."""

from __future__ import annotations

import pathlib

from agent import cbor
from agent.feature import Mode
from agent.purposes import Purpose
from drivers.compose import compose
from tests.core.crypto_rig import IMAGE, MARKER, PER_PURPOSE, readable, rig_config, seed


def _raw_state(state: pathlib.Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file())


def test_no_msg_id_topic_payload_or_image_in_clear(tmp_path: pathlib.Path) -> None:
    seed(tmp_path)
    raw = _raw_state(tmp_path)
    for secret in (MARKER, IMAGE[4:20], b"cloud_events-0", b"edge/test/cloud_events"):
        assert secret not in raw, secret


def test_what_goes_out_is_whole_again(tmp_path: pathlib.Path) -> None:
    seed(tmp_path)
    composition = compose(rig_config(tmp_path), Mode.CLI, builders=())
    try:
        batch = composition.outbox.batch_after(0, 100, composition.clock.now())
        cloud = [m for m in batch if m.purpose == Purpose.CLOUD_EVENTS.value]
        assert [m.msg_id for m in cloud] == [f"cloud_events-{i}" for i in range(PER_PURPOSE)]
        assert {m.topic for m in cloud} == {"edge/test/cloud_events"}
        body = cbor.loads_untrusted(cloud[0].payload, max_bytes=1 << 20)
        assert isinstance(body, dict) and body["img"] == IMAGE and body["seq"] == cloud[0].seq
        # Acks go by the row's key (a tag for sealed rows), never by a value kept in clear.
        assert cloud[0].ack_key != cloud[0].msg_id
        assert composition.outbox.contains(cloud[0].msg_id)
        assert composition.outbox.ack_many([m.ack_key for m in cloud]) == PER_PURPOSE
        assert not composition.outbox.contains(cloud[0].msg_id)
    finally:
        composition.close()


def test_withdrawing_snapshots_keeps_the_events_without_images(tmp_path: pathlib.Path) -> None:
    seed(tmp_path)
    composition = compose(rig_config(tmp_path), Mode.CLI, builders=())
    try:
        composition.ledger.withdraw(Purpose.EVENT_SNAPSHOTS, composition.clock.now())
    finally:
        composition.close()
    seen = readable(tmp_path)
    assert seen["events"] == {"cloud_events": PER_PURPOSE, "usage_statistics": PER_PURPOSE}
    assert seen["images"] == 0
    assert IMAGE[4:20] not in _raw_state(tmp_path)


def test_rows_queued_before_sealing_still_go_out(tmp_path: pathlib.Path) -> None:
    """A state directory from before crypto-erase: plaintext rows, image inside the payload."""
    composition = compose(rig_config(tmp_path), Mode.CLI, builders=())
    try:
        with composition.db.transaction() as conn:
            conn.execute(
                "INSERT INTO outbox (msg_id, topic, payload, purpose, created_at, expires_at) "
                "VALUES ('old-1', 'edge/old', ?, 'cloud_events', 1, 9e12)",
                (cbor.dumps({"marker": MARKER.decode(), "img": IMAGE, "seq": 1}),),
            )
        (message,) = composition.outbox.batch_after(0, 10, composition.clock.now())
        assert (message.msg_id, message.topic, message.ack_key) == ("old-1", "edge/old", "old-1")
        assert composition.outbox.reseal_personal_data() == 0  # plaintext is left to drain
    finally:
        composition.close()
