"""The pump holds the MQTT window itself (paho's own limit is off, issue 12).

paho's ``max_inflight_messages`` rescans its whole message table on every
PUBACK; with it off, the pump keeps at most ``window`` QoS 1 messages on the
wire -- replies and status messages included, since the broker's receive
maximum counts them all -- and refills the window from its read-ahead queue
on the PUBACK thread, in queue order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent import cbor
from agent.minimise import OutgoingMessage, uuid4_text
from agent.outbox import Outbox
from agent.pump import Pump
from agent.purposes import Purpose
from tests.support.agent_harness import make_config, motion, spine_agent
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.pumprig import ListTransport

NOW = 1_800_000_000.0


def queue(outbox: Outbox, count: int) -> list[str]:
    items = []
    for _ in range(count):
        msg_id = uuid4_text()
        payload = cbor.dumps({"id": msg_id, "type": "device.status"})
        message = OutgoingMessage(
            msg_id, "device.status", Purpose.DEVICE_OPERATION, payload, NOW, None
        )
        items.append(("edge/d/events/device.status", message))
    outbox.put_many(items, NOW)
    return [m.msg_id for _, m in items]


def test_refills_go_out_in_queue_order_and_never_past_the_window(outbox: Outbox) -> None:
    ids = queue(outbox, 30)
    pump = Pump(outbox, window=5, batch=4, ahead=10)
    link = ListTransport()
    session = pump.on_connected()
    assert pump.tick(link, NOW) == 5
    for token in range(1, 26):
        pump.on_ack(session, token, 0)
        pump.refill(link)
        # One PUBACK frees one place: the wire never holds more than the window.
        assert len(link.sent) - token <= 5
        if token % 7 == 0:
            pump.tick(link, NOW)  # the loop reads ahead again now and then
    pump.tick(link, NOW)
    assert link.sent == ids  # every message once, in the order it was queued


def test_replies_and_status_messages_take_places_in_the_window(outbox: Outbox) -> None:
    queue(outbox, 10)
    pump = Pump(outbox, window=4, batch=10, ahead=4)
    link = ListTransport()
    session = pump.on_connected()
    pump.sent_elsewhere()  # the retained "online" status
    pump.sent_elsewhere()  # a command reply
    assert pump.tick(link, NOW) == 2
    pump.on_ack(session, 1001, 0)  # the status's PUBACK (a token the pump never gave)
    assert pump.refill(link) == 1 and len(link.sent) == 3


def test_the_brokers_receive_maximum_narrows_the_window(outbox: Outbox) -> None:
    queue(outbox, 100)
    pump = Pump(outbox, window=50, batch=100, ahead=0)
    link = ListTransport()
    pump.on_connected(receive_maximum=10)
    # A tenth of the broker's quota stays free for replies and status messages.
    assert pump.tick(link, NOW) == 9
    pump.on_connected(receive_maximum=None)
    assert pump.tick(link, NOW) == 50


def test_a_new_connection_drops_what_was_read_ahead(outbox: Outbox) -> None:
    ids = queue(outbox, 10)
    pump = Pump(outbox, window=2, batch=10, ahead=4)
    first = ListTransport()
    pump.on_connected()
    pump.tick(first, NOW)
    assert first.sent == ids[:2]
    session = pump.on_connected()
    # The new connection's PUBACKs refill from its own walk, which starts again.
    second = ListTransport()
    pump.tick(second, NOW)
    pump.on_ack(session, 1, 0)
    pump.refill(second)
    assert second.sent == ids[:3]


class RefusingTransport(ListTransport):
    """Refuses one message outright, as paho does a topic or payload it cannot send."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = refuse

    def publish_queued(
        self, topic: str, payload: bytes, purpose: str, msg_id: str, expires_in: int,
        *, json: object = None,
    ) -> int:
        if msg_id == self.refuse:
            raise ValueError("payload too large")
        return super().publish_queued(topic, payload, purpose, msg_id, expires_in)


def test_a_message_the_transport_refuses_does_not_stall_the_queue(outbox: Outbox) -> None:
    ids = queue(outbox, 6)
    pump = Pump(outbox, window=10, batch=10)
    link = RefusingTransport(ids[2])
    pump.on_connected()
    with pytest.raises(ValueError):
        pump.tick(link, NOW)  # the loop reports it (one line) and goes on
    pump.tick(link, NOW)
    assert link.sent == ids[:2] + ids[3:]


def test_through_a_broker_that_takes_ten_the_window_holds_and_order_is_kept(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path)
    broker.conf.write_text(
        broker.conf.read_text().replace("max_inflight_messages 0", "max_inflight_messages 10")
    )
    broker.start()
    state = tmp_path / "state"
    agent = spine_agent(make_config(state, broker.port))
    link = agent.link
    assert link is not None
    # Queued events on the wire, counted apart from the pump: sent, PUBACK not yet seen.
    lock = threading.Lock()
    on_wire: set[int] = set()
    early: set[int] = set()  # PUBACKs handled before publish() returned their mid
    most = [0]
    publish, on_publish = link.publish_queued, link._on_publish

    def counting_publish(*args: Any, **kwargs: Any) -> int:
        mid = publish(*args, **kwargs)
        with lock:
            if mid in early:
                early.discard(mid)
            else:
                on_wire.add(mid)
                most[0] = max(most[0], len(on_wire))
        return mid

    def counting_on_publish(client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        with lock:
            if mid in on_wire:
                on_wire.discard(mid)
            elif client is link._client:
                early.add(mid)
        on_publish(client, userdata, mid, *rest)

    link.publish_queued = counting_publish  # type: ignore[method-assign,assignment]
    link._on_publish = counting_on_publish  # type: ignore[method-assign,assignment]
    sub = Collector(broker.host, broker.port, f"{agent.topics.base}/events/#")
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        deadline = time.monotonic() + 10
        while not link.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        for k in range(3000):
            agent.emit(motion(k))
        assert sub.wait_for(
            lambda c: sum(1 for e in c.events() if e.get("type") == "motion") >= 3000, 60
        )
        assert link.connects == 1
    finally:
        agent.request_stop()
        thread.join(15)
        sub.close()
        broker.stop()
    assert not thread.is_alive()
    seqs = [int(e["seq"]) for e in sub.events() if e.get("type") == "motion"]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3000  # in order, each once
    # Receive maximum 10, a tenth kept for replies: nine events at most on the wire.
    assert 1 < most[0] <= 9, most
