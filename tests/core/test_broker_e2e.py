"""The spine end to end against a real mosquitto: outbox, minimiser, consent, commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest

from agent.config import PayloadFormat
from agent.events import Event
from agent.outbox import Outbox
from agent.purposes import Purpose
from drivers.mqtt import REPLY_EXPIRY_SECONDS
from tests.support.agent_harness import RunningAgent, device_base, make_config, motion
from tests.support.broker import Broker, free_port
from tests.support.mqtt import Collector
from tests.support.owner import Signer

REPO = Path(__file__).resolve().parents[2]


def motion_areas(collector: Collector) -> list[int]:
    return [e["f"]["area"] for e in collector.events() if e["type"] == "motion"]


def queued_motion_areas(outbox: Outbox) -> list[int]:
    """The motion events committed to the outbox, in queue order."""
    queued = outbox.batch_after(0, 100_000, time.time())
    return [
        cbor2.loads(m.payload)["f"]["area"] for m in queued if m.topic.endswith("/events/motion")
    ]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def sentinel_status() -> Event:
    """A device-operation event: it takes the same path as every event (sink, outbox,
    pump, broker) but needs no consent, so it arrives even after a withdrawal."""
    return Event("device.status", occurred_at=time.time(), fields={"state": "sentinel"})


def sentinel_arrived(collector: Collector) -> bool:
    return any(
        e["type"] == "device.status" and e["f"].get("state") == "sentinel"
        for e in collector.events()
    )


def test_events_reach_subscriber_as_cbor_with_only_allowed_fields(
    broker: Broker, tmp_path: Path
) -> None:
    DEVICE_TOPIC = device_base(tmp_path / "state")
    sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/#")
    cbor_config = make_config(tmp_path / "state", broker.port, payload_format=PayloadFormat.CBOR)
    running = RunningAgent(cbor_config)
    try:
        running.agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        running.agent.emit(motion(7))
        assert sub.wait_for(lambda c: motion_areas(c) == [7])
        message = next(m for m in sub.messages if m.topic.endswith("/events/motion"))
        assert message.properties.ContentType == "application/cbor"
        assert ("purpose", "cloud_events") in message.properties.UserProperty
        assert message.properties.MessageExpiryInterval > 0
        event = cbor2.loads(message.payload)
        assert set(event["f"]) == {"camera", "area", "duration"}
        assert "secret_extra" not in message.payload.decode("latin-1")
        # No snapshot consent: the image never leaves.
        assert "img" not in event and b"JPEG-BYTES" not in message.payload
        assert event["v"] == 1 and event["purpose"] == "cloud_events"
        assert "EA-SAMPLE-0001" not in str(event)  # device id only as a pseudonym
        assert sub.wait_for(lambda c: f"{DEVICE_TOPIC}/status" in c.topics())
    finally:
        running.stop()
        sub.close()


def test_nothing_of_a_withdrawn_purpose_is_published_even_if_queued_before(
    broker: Broker, tmp_path: Path
) -> None:
    DEVICE_TOPIC = device_base(tmp_path / "state")
    state = tmp_path / "state"
    broker.stop()  # queue while the broker is away
    running = RunningAgent(make_config(state, broker.port))
    try:
        agent = running.agent
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        agent.ledger.grant(Purpose.USAGE_STATISTICS, time.time())
        for k in range(50):
            agent.emit(motion(k))
        # Every event is committed to the outbox, once and in order, while the broker is away.
        wait_until(lambda: len(queued_motion_areas(agent.outbox)) >= 50)
        assert queued_motion_areas(agent.outbox) == list(range(50))
        change = agent.ledger.withdraw(Purpose.CLOUD_EVENTS, time.time(), source="test")
        assert change.purged["outbox"] == 50
        assert queued_motion_areas(agent.outbox) == []
        agent.emit(motion(999))  # refused at the door
        broker.start()
        sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/#")
        # Device-operation messages still flow, proving the link is up.
        agent.emit(motion(1000))
        assert sub.wait_for(lambda c: f"{DEVICE_TOPIC}/status" in c.topics())
        # Sentinel: emitted after the refused events, it must arrive; had any motion event
        # been let through, it would have been published before it.
        agent.emit(sentinel_status())
        assert sub.wait_for(sentinel_arrived)
        assert motion_areas(sub) == []
        assert all(e["purpose"] != "cloud_events" for e in sub.events())
        history = agent.ledger.history()
        assert [h["action"] for h in history][-1] == "withdraw"
        assert history[-1]["policy_version"] == agent.config.privacy.policy_version
        sub.close()
    finally:
        running.stop()


def test_broker_outage_then_every_event_arrives_exactly_once_after_dedupe(
    tmp_path: Path,
) -> None:
    DEVICE_TOPIC = device_base(tmp_path / "state")
    # The receiver keeps a persistent session on a broker that stores to disk, as a
    # real backend does: whatever the agent publishes the moment the broker is back,
    # before this test's subscriber reconnects, is queued for it rather than lost.
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", persistent=True)
    broker.start()
    receiver = f"receiver-{uuid.uuid4().hex[:8]}"
    sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/events/#", session=receiver)
    running = RunningAgent(make_config(tmp_path / "state", broker.port))
    try:
        agent = running.agent
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        for k in range(100):
            agent.emit(motion(k))
        assert sub.wait_for(lambda c: len(set(motion_areas(c))) == 100)
        sub.close()
        broker.stop()
        for k in range(100, 300):
            agent.emit(motion(k))
        # Held on disk while the broker is away: all 200, once each, in order.
        wait_until(lambda: len([a for a in queued_motion_areas(agent.outbox) if a >= 100]) >= 200)
        assert [a for a in queued_motion_areas(agent.outbox) if a >= 100] == list(range(100, 300))
        broker.start()
        sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/events/#", session=receiver)
        assert sub.wait_for(lambda c: set(range(100, 300)) <= set(motion_areas(c)), 30)
        ids = {e["id"]: e["f"]["area"] for e in sub.events() if e["type"] == "motion"}
        assert sorted(set(ids.values()) & set(range(100, 300))) == list(range(100, 300))
        assert len(ids) == len(set(ids.values()))  # one id per event
        deadline = time.monotonic() + 10
        while len(agent.outbox) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(agent.outbox) == 0  # everything acknowledged, nothing left behind
        sub.close()
    finally:
        running.stop()
        broker.stop()


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_loses_no_committed_event(
    broker: Broker, tmp_path: Path
) -> None:
    DEVICE_TOPIC = device_base(tmp_path / "state")
    state = tmp_path / "state"
    from agent.consent import ConsentLedger

    ConsentLedger.open(state).grant(Purpose.CLOUD_EVENTS, time.time())
    sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/events/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.agent_proc", str(state), str(broker.port), "5000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    committed = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        committed = int(line.split()[1])
        if committed >= 1500:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert committed >= 1500
    running = RunningAgent(make_config(state, broker.port))
    try:
        wanted = set(range(committed + 1))
        assert sub.wait_for(lambda c: wanted <= set(motion_areas(c)), 60), (
            f"missing {sorted(wanted - set(motion_areas(sub)))[:20]}"
        )
    finally:
        running.stop()
        sub.close()


def test_outbox_cap_drops_oldest_and_counts(broker: Broker, tmp_path: Path) -> None:
    DEVICE_TOPIC = device_base(tmp_path / "state")
    state = tmp_path / "state"
    nowhere = free_port()  # nothing listens: everything stays queued
    running = RunningAgent(make_config(state, nowhere, max_messages=20))
    try:
        agent = running.agent
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        for k in range(50):
            agent.emit(motion(k))
        deadline = time.monotonic() + 5
        while agent.outbox.stats()["dropped_overflow"] < 31 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = agent.outbox.stats()
        assert stats["queued"] == 20
        assert stats["dropped_overflow"] == 31  # 50 motion + 1 start-up status - 20 kept
    finally:
        running.stop()
    sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/events/#")
    running = RunningAgent(make_config(state, broker.port, max_messages=1000))
    try:
        assert sub.wait_for(lambda c: len(motion_areas(c)) >= 20, 20)
        assert sorted(set(motion_areas(sub))) == list(range(30, 50))  # the newest survive
    finally:
        running.stop()
        sub.close()


def test_commands_consent_set_get_and_status_over_mqtt(broker: Broker, tmp_path: Path) -> None:
    owner = Signer()
    owner.enrol_in_state(tmp_path / "state")
    DEVICE_TOPIC = device_base(tmp_path / "state")
    running = RunningAgent(make_config(tmp_path / "state", broker.port))
    sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/status")
    try:
        assert sub.wait_for(lambda c: bool(c.messages))
        cmd = f"{DEVICE_TOPIC}/cmd"
        grant = {"purpose": "cloud_events", "granted": True}
        reply = sub.request(f"{cmd}/consent.set", grant, signer=owner)
        assert reply["ok"] and reply["result"]["granted"] is True
        assert running.agent.ledger.is_granted(Purpose.CLOUD_EVENTS)
        reply = sub.request(f"{cmd}/consent.get", {}, signer=owner)
        assert reply["result"]["consent"]["cloud_events"] is True
        assert reply["result"]["consent"]["face_recognition"] is False
        status = sub.request(f"{cmd}/status", {})
        assert status["ok"] and status["result"]["broker_connected"] is True
        # A broker holds a reply for an absent requester only briefly (a bundle, an export).
        expiry = sub.last_reply_properties.MessageExpiryInterval
        assert 0 < expiry <= REPLY_EXPIRY_SECONDS
    finally:
        running.stop()
        sub.close()


@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        ("consent.set", b"\xff\xfe garbage", "bad_request"),
        ("consent.set", cbor2.dumps([1, 2, 3]), "bad_request"),
        ("consent.set", {"purpose": "telepathy", "granted": True}, "bad_request"),
        ("consent.set", {"purpose": "cloud_events", "granted": "yes"}, "bad_request"),
        ("consent.set", cbor2.dumps({"purpose": "cloud_events", "granted": True}), "unauthorized"),
        ("consent.set", b"\x81" * 5000 + b"\x00", "bad_request"),
        ("consent.set", b"\x40" * 70_000, "too_large"),
        ("no.such.command", cbor2.dumps({}), "unknown_command"),
    ],
    ids=[
        "garbage",
        "not-a-map",
        "unknown-purpose",
        "wrong-type",
        "unsigned",
        "deep-nesting",
        "oversized",
        "unknown-command",
    ],
)
def test_bad_commands_get_error_replies_and_the_agent_keeps_going(
    broker: Broker, tmp_path: Path, name: str, payload: bytes | dict[str, object], code: str
) -> None:
    owner = Signer()
    owner.enrol_in_state(tmp_path / "state")
    DEVICE_TOPIC = device_base(tmp_path / "state")
    running = RunningAgent(make_config(tmp_path / "state", broker.port))
    sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/status")
    try:
        assert sub.wait_for(lambda c: bool(c.messages))
        if isinstance(payload, dict):
            reply = sub.request(f"{DEVICE_TOPIC}/cmd/{name}", payload, signer=owner)
        else:
            reply = sub.request(f"{DEVICE_TOPIC}/cmd/{name}", None, raw=payload)
        assert reply["ok"] is False and reply["error"]["code"] == code
        assert sub.request(f"{DEVICE_TOPIC}/cmd/status", {})["ok"] is True
    finally:
        running.stop()
        sub.close()


def test_lwt_marks_device_offline_when_killed(broker: Broker, tmp_path: Path) -> None:
    DEVICE_TOPIC = device_base(tmp_path / "state")
    state = tmp_path / "state"
    sub = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/status")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.agent_proc", str(state), str(broker.port), "10"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.wait_for(lambda c: any(m.payload == b"online" for m in c.messages))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # keepalive 30 s is too slow for a test; the broker notices the closed socket at once.
        assert sub.wait_for(lambda c: c.messages[-1].payload == b"offline", 20)
        # The will is retained: a subscriber arriving later is told the device is offline.
        late = Collector(broker.host, broker.port, f"{DEVICE_TOPIC}/status")
        try:
            assert late.wait_for(lambda c: bool(c.messages))
            assert [(m.payload, m.retain) for m in late.messages] == [(b"offline", True)]
        finally:
            late.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
