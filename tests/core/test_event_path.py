"""The fast event path keeps its promises: wire format, durable order, batched acks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import cbor
from agent.config import PayloadFormat
from agent.errors import DeviceIOError
from agent.minimise import OutgoingMessage, Pseudonymiser, uuid4_text
from agent.outbox import Outbox
from agent.pump import Pump
from agent.purposes import Purpose
from drivers.mqttwire import EventProperties, PackedProperties
from tests.support.agent_harness import RunningAgent, device_base, make_config, motion
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.pumprig import ListTransport

NOW = 1_800_000_000.0


def paho_packed(purpose: str, msg_id: str, expires_in: int) -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/cbor"
    props.MessageExpiryInterval = expires_in
    props.UserProperty = [("purpose", purpose), ("msg_id", msg_id)]
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    return packed


@pytest.mark.parametrize(
    ("purpose", "msg_id", "expires_in"),
    [
        ("cloud_events", str(uuid.uuid4()), 604_800),
        ("device_operation", "x", 1),
        ("usage_statistics", "é-ü-日本", 0xFFFFFFFF),
        ("face_recognition", "m" * 200, 86_400),  # a property block past 127 bytes
    ],
)
def test_packed_properties_are_byte_for_byte_what_paho_packs(
    purpose: str, msg_id: str, expires_in: int
) -> None:
    ours = EventProperties()(purpose, msg_id, expires_in)
    assert isinstance(ours, Properties)
    assert ours.pack() == paho_packed(purpose, msg_id, expires_in)
    decoded = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    decoded.unpack(ours.pack()[:])  # type: ignore[no-untyped-call]
    user = decoded.UserProperty  # type: ignore[attr-defined]
    assert user == [("purpose", purpose), ("msg_id", msg_id)]


def test_expiry_is_clamped_to_what_mqtt_can_carry() -> None:
    pack = EventProperties().pack
    assert pack("p", "m", 0) == paho_packed("p", "m", 1)
    assert pack("p", "m", 1 << 40) == paho_packed("p", "m", 0xFFFFFFFF)
    assert str(PackedProperties(b"\x00")) == "PackedProperties(1 bytes)"


def test_a_subscriber_sees_every_property_of_a_queued_event(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    sub = Collector(broker.host, broker.port, f"{device_base(state)}/events/#")
    running = RunningAgent(make_config(state, broker.port, payload_format=PayloadFormat.CBOR))
    try:
        running.agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        running.agent.emit(motion(7))
        assert sub.wait_for(lambda c: any(m.topic.endswith("/motion") for m in c.messages), 20)
    finally:
        running.stop()
        sub.close()
    message = next(m for m in sub.messages if m.topic.endswith("/motion"))
    body = cbor.loads_untrusted(message.payload, max_bytes=4096)
    props = message.properties
    assert props.ContentType == "application/cbor"
    assert 0 < props.MessageExpiryInterval <= 7 * 86_400
    assert dict(props.UserProperty) == {"purpose": "cloud_events", "msg_id": body["id"]}


def test_uuid4_text_is_a_random_version_4_uuid() -> None:
    seen = set()
    for _ in range(2000):
        text = uuid4_text()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 2000


def test_the_device_pseudonym_is_memoised_per_key_generation() -> None:
    generation = {Purpose.CLOUD_EVENTS: 0}
    pseudonyms = Pseudonymiser(b"s" * 32, lambda p: generation.get(p, 0))
    fresh = Pseudonymiser(b"s" * 32, lambda p: generation.get(p, 0))
    first = pseudonyms.pseudonym(Purpose.CLOUD_EVENTS, "device", "SER1")
    assert pseudonyms.pseudonym(Purpose.CLOUD_EVENTS, "device", "SER1") == first
    assert fresh.pseudonym(Purpose.CLOUD_EVENTS, "device", "SER1") == first
    generation[Purpose.CLOUD_EVENTS] = 1  # a withdrawal: a new key, a new pseudonym
    assert pseudonyms.pseudonym(Purpose.CLOUD_EVENTS, "device", "SER1") != first
    assert pseudonyms.pseudonym(Purpose.CLOUD_EVENTS, "person", "alice") != first


# --- the pump: acks are batched, never lost, never cause a deliberate repeat --------


def queue(outbox: Outbox, count: int) -> None:
    items = []
    for _ in range(count):
        msg_id = uuid4_text()
        payload = cbor.dumps({"id": msg_id, "type": "device.status"})
        message = OutgoingMessage(
            msg_id, "device.status", Purpose.DEVICE_OPERATION, payload, NOW, None
        )
        items.append(("edge/d/events/device.status", message))
    outbox.put_many(items, NOW)


def ack(pump: Pump, session: int, tokens: range) -> list[bool]:
    return [pump.on_ack(session, token, 0) for token in tokens]


def test_acks_are_deleted_in_batches_while_messages_are_in_flight(outbox: Outbox) -> None:
    queue(outbox, 30)
    pump = Pump(outbox, window=10, batch=10, ahead=0, ack_batch=8, ack_delay=60.0)
    link = ListTransport()
    session = pump.on_connected()
    assert pump.tick(link, NOW) == 10
    ack(pump, session, range(1, 6))
    assert pump.tick(link, NOW) == 5
    # Five acknowledged, fewer than ack_batch and younger than ack_delay: not yet deleted.
    assert pump.pending_acks == 5 and len(outbox) == 30
    assert all(outbox.contains(m) for m in link.sent[:5])
    ack(pump, session, range(6, 9))
    pump.tick(link, NOW)
    assert pump.pending_acks == 0 and len(outbox) == 22  # eight reached ack_batch
    # Nothing is offered twice within the connection while deletes wait.
    assert len(set(link.sent)) == len(link.sent)


def test_pending_acks_are_committed_after_ack_delay(outbox: Outbox) -> None:
    queue(outbox, 20)
    pump = Pump(outbox, window=10, batch=10, ack_batch=1000, ack_delay=0.5)
    link = ListTransport()
    session = pump.on_connected()
    pump.tick(link, NOW)
    ack(pump, session, range(1, 3))
    pump.tick(link, NOW)
    assert pump.pending_acks == 2
    pump.tick(link, NOW + 0.4)
    assert pump.pending_acks == 2
    pump.tick(link, NOW + 0.6)
    assert pump.pending_acks == 0 and len(outbox) == 18
    # A clock stepped backwards commits rather than waiting for ever.
    ack(pump, session, range(3, 4))
    pump.tick(link, NOW + 0.6)
    pump.tick(link, NOW - 100)
    assert pump.pending_acks == 0


def test_a_quiet_link_deletes_acknowledged_messages_at_once(outbox: Outbox) -> None:
    queue(outbox, 3)
    pump = Pump(outbox, window=10, batch=10, ack_batch=1000, ack_delay=60.0)
    link = ListTransport()
    session = pump.on_connected()
    assert pump.tick(link, NOW) == 3
    assert any(ack(pump, session, range(1, 4)))
    pump.tick(link, NOW)
    assert pump.pending_acks == 0 and len(outbox) == 0


def test_the_loop_is_woken_per_quarter_window_not_per_puback(outbox: Outbox) -> None:
    queue(outbox, 40)
    pump = Pump(outbox, window=40, batch=40, ahead=0)
    session = pump.on_connected()
    link = ListTransport()
    pump.tick(link, NOW)
    # Once, at the tenth of forty; not again until the loop has drained them.
    assert ack(pump, session, range(1, 21)) == [k == 9 for k in range(20)]
    pump.tick(link, NOW)
    assert ack(pump, session, range(21, 41)) == [k == 9 for k in range(20)]
    pump.tick(link, NOW)
    assert len(outbox) == 0
    # The last few in flight wake it too, however few they are.
    queue(outbox, 3)
    pump.tick(link, NOW)
    assert ack(pump, session, range(41, 44)) == [False, False, True]


def test_a_new_connection_commits_pending_acks_before_walking_again(outbox: Outbox) -> None:
    queue(outbox, 6)
    pump = Pump(outbox, window=10, batch=10, ack_batch=1000, ack_delay=60.0)
    first = ListTransport()
    session = pump.on_connected()
    pump.tick(first, NOW)
    ack(pump, session, range(1, 4))
    pump.tick(first, NOW)
    assert pump.pending_acks == 3
    pump.on_connected()
    second = ListTransport()
    pump.tick(second, NOW)
    assert second.sent == first.sent[3:]


def test_a_failed_ack_commit_keeps_the_acks_for_the_next_pass(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue(outbox, 4)
    pump = Pump(outbox, window=10, batch=10, ack_batch=1, ack_delay=60.0)
    link = ListTransport()
    session = pump.on_connected()
    pump.tick(link, NOW)
    ack(pump, session, range(1, 3))

    def broken(ids: object) -> int:
        raise DeviceIOError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(outbox, "ack_many", broken)
        with pytest.raises(DeviceIOError):
            pump.tick(link, NOW)
    assert pump.pending_acks == 2 and len(outbox) == 4
    pump.tick(link, NOW)
    assert pump.pending_acks == 0 and len(outbox) == 2


def test_the_pump_holds_the_window_and_reads_a_window_ahead(outbox: Outbox) -> None:
    queue(outbox, 20)
    pump = Pump(outbox, window=4, batch=3)
    link = ListTransport()
    session = pump.on_connected()
    # Four on the wire, four read ahead for the transport's thread to send.
    assert pump.tick(link, NOW) == 4 and pump.inflight == 4
    assert pump.tick(link, NOW) == 0
    ack(pump, session, range(1, 4))
    # Each PUBACK's place goes to the next message read ahead, without the main loop.
    assert pump.refill(link) == 3 and len(link.sent) == 7
    assert pump.refill(link) == 0
    assert pump.tick(link, NOW) == 0 and pump.inflight == 4
    assert len(set(link.sent)) == 7
