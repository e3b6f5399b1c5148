"""Receivers are told: tombstones after withdrawal and erasure, broker expiry within retention,
the audit head published -- the real agent against a real mosquitto."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.audit import AuditLog
from agent.config import AgentConfig, PrivacySettings
from agent.events import Event
from agent.layout import StateLayout
from agent.logs.settings import RetentionSettings
from agent.purposes import Purpose
from agent.rights.notices import NoticeService
from drivers.camera import build_camera
from drivers.runtime import Agent
from drivers.vision.feature import build_faces
from tests.support.agent_harness import device_base, make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector, decode_payload
from tests.support.owner import Signer
from tests.support.process import REPO

DAY = 86400


class Running:
    """The real agent (spine, camera and faces declarations) on a thread."""

    def __init__(self, config: AgentConfig) -> None:
        self.agent = Agent.build(config, builders=(build_camera, build_faces), environ={})
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.request_stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


@dataclasses.dataclass
class Rig:
    broker: Broker
    state: pathlib.Path
    config: AgentConfig
    owner: Signer
    base: str
    sub: Collector

    def start(self) -> Running:
        running = Running(self.config)
        assert self.sub.wait_for(lambda c: b"online" in [m.payload for m in c.messages], 20)
        return running

    def consent(self, purpose: Purpose, granted: bool) -> Any:
        args = {"purpose": purpose.value, "granted": granted}
        reply = self.sub.request(f"{self.base}/cmd/consent.set", args, signer=self.owner)
        assert reply["ok"], reply
        return reply["result"]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sub.events() if e["type"] == kind]

    def messages_on(self, topic: str) -> list[Any]:
        return [m for m in list(self.sub.messages) if m.topic == topic]


@pytest.fixture
def rig(broker: Broker, tmp_path: pathlib.Path) -> Iterator[Rig]:
    state = tmp_path / "state"
    owner = Signer()
    owner.enrol_in_state(state)
    base = device_base(state)
    config = dataclasses.replace(
        make_config(state, broker.port),
        retention=RetentionSettings(events_days=3, snapshots_days=2),
        privacy=PrivacySettings(audit_head_interval_seconds=1),
    )
    sub = Collector(broker.host, broker.port, f"{base}/#")
    try:
        yield Rig(broker, state, config, owner, base, sub)
    finally:
        sub.close()


def face_match(person: str = "id-0123456789abcdef") -> Event:
    return Event(
        "face.match",
        occurred_at=time.time(),
        fields={"score": 0.93, "known": True, "track_id": 1, "camera": "cam0"},
        identifiers={"person_id": person},
    )


def test_withdrawal_over_mqtt_publishes_a_tombstone_naming_the_retired_generation(
    rig: Rig,
) -> None:
    running = rig.start()
    try:
        rig.consent(Purpose.FACE_RECOGNITION, True)
        running.agent.emit(face_match())
        assert rig.sub.wait_for(lambda c: rig.of_type("face.match"), 10)
        [match] = rig.of_type("face.match")
        rig.consent(Purpose.FACE_RECOGNITION, False)
        assert rig.sub.wait_for(lambda c: rig.of_type("privacy.tombstone"), 10)
        [tombstone] = rig.of_type("privacy.tombstone")
        # A notice needs no consent of its own: it passed the door of device operation.
        assert tombstone["purpose"] == "device_operation"
        fields = tombstone["f"]
        assert fields["data_purpose"] == "face_recognition"
        assert fields["reason"] == "withdrawal" and fields["scope"] == ["purpose"]
        assert fields["generation"] == 0
        # What the receiver matches its stored records against: their "dev" pseudonym.
        assert fields["retired_dev"] == match["dev"]
        assert fields["at"].endswith("Z") and fields["at"][:2] == "20"
        # Retained per purpose: a receiver subscribing later still learns of it.
        topic = f"{rig.base}/tombstones/face_recognition"
        assert rig.sub.wait_for(lambda c: rig.messages_on(topic), 10)
        late = Collector(rig.broker.host, rig.broker.port, topic)
        try:
            assert late.wait_for(lambda c: c.messages, 10)
            retained = late.messages[0]
            assert retained.retain
            body = decode_payload(retained.payload)
            assert body["type"] == "privacy.tombstone" and body["id"] == fields["notice"]
            assert body["f"] == fields
        finally:
            late.close()
        # After re-granting, events carry a new generation's pseudonyms.
        rig.consent(Purpose.FACE_RECOGNITION, True)
        running.agent.emit(face_match())
        assert rig.sub.wait_for(lambda c: len(rig.of_type("face.match")) == 2, 10)
        assert rig.of_type("face.match")[1]["dev"] != match["dev"]
    finally:
        running.stop()


def test_a_cli_withdrawal_and_an_erasure_are_noticed_and_not_repeated_after_a_restart(
    rig: Rig,
) -> None:
    running = rig.start()
    try:
        rig.consent(Purpose.PLATE_RECOGNITION, True)
        # The CLI, another process, withdraws while the agent runs.
        cli = [sys.executable, "-m", "drivers", "consent", "withdraw", "plate_recognition",
               "--state-dir", str(rig.state)]
        subprocess.run(cli, cwd=REPO, check=True, capture_output=True, timeout=60)
        assert rig.sub.wait_for(lambda c: rig.of_type("privacy.tombstone"), 10)
        [notice] = rig.of_type("privacy.tombstone")
        assert notice["f"]["data_purpose"] == "plate_recognition"
        assert notice["f"]["generation"] == 0
        reply = rig.sub.request(f"{rig.base}/cmd/data.erase", {}, signer=rig.owner)
        assert reply["ok"], reply
        purposes = {"face_recognition", "plate_recognition", "event_snapshots",
                    "usage_statistics", "troubleshooting_logs", "cloud_events"}
        assert rig.sub.wait_for(lambda c: len(rig.of_type("privacy.tombstone")) == 7, 10)
        erasure = [t["f"] for t in rig.of_type("privacy.tombstone")[1:]]
        assert {f["data_purpose"] for f in erasure} == purposes
        assert {f["reason"] for f in erasure} == {"erasure"}
        assert all(f["scope"] == ["personal"] for f in erasure)
        by_purpose = {f["data_purpose"]: f for f in erasure}
        # plate_recognition was at generation 1 after the withdrawal; never-used ones: none.
        assert by_purpose["plate_recognition"]["generation"] == 1
        assert by_purpose["cloud_events"]["generation"] is None
        time.sleep(0.5)  # a few more ticks: the notice mark moves past these
    finally:
        running.stop()
    seen = len(rig.of_type("privacy.tombstone"))
    running = rig.start()
    try:
        time.sleep(1.0)
        assert len(rig.of_type("privacy.tombstone")) == seen
    finally:
        running.stop()


def test_broker_copies_expire_within_the_retention_of_their_purpose(rig: Rig) -> None:
    running = rig.start()
    try:
        rig.consent(Purpose.FACE_RECOGNITION, True)
        rig.consent(Purpose.CLOUD_EVENTS, True)
        running.agent.emit(face_match())
        running.agent.emit(Event("motion", time.time(), fields={"camera": "cam0", "area": 5}))
        assert rig.sub.wait_for(lambda c: rig.of_type("face.match") and rig.of_type("motion"), 10)
        expiry = {
            decode_payload(m.payload)["type"]: m.properties.MessageExpiryInterval
            for m in list(rig.sub.messages) if "/events/" in m.topic
        }
        # The outbox would keep them 7 days; retention allows 3 (2 where a snapshot may ride).
        assert 2 * DAY - 60 <= expiry["face.match"] <= 2 * DAY
        assert 2 * DAY - 60 <= expiry["motion"] <= 2 * DAY
        assert expiry["device.status"] > 3 * DAY  # not personal: the outbox default
    finally:
        running.stop()


def test_the_audit_head_is_published_and_checks_the_chain_off_the_device(rig: Rig) -> None:
    running = rig.start()
    try:
        rig.consent(Purpose.CLOUD_EVENTS, True)
        rig.consent(Purpose.CLOUD_EVENTS, False)
        head = running.agent.composition.audit.head()
        assert rig.sub.wait_for(
            lambda c: any(e["f"]["index"] >= head.index for e in rig.of_type("audit.head")), 10
        )
        published = rig.of_type("audit.head")[-1]["f"]
        assert published["chain"] == "hmac-sha256"
        assert published["entries"] == published["index"] + 1
    finally:
        running.stop()
    state = ["--state-dir", str(rig.state)]
    verify = [sys.executable, "-m", "drivers", "audit", "verify", *state, "--json",
              "--index", str(published["index"]), "--head", published["head"]]
    result = subprocess.run(verify, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"verdict": "intact"' in result.stdout


def test_notices_repeat_after_a_crash_but_not_after_they_were_queued(
    tmp_path: pathlib.Path,
) -> None:
    """The mark moves only on the tick after the events went to the outbox."""
    audit = AuditLog.in_state_dir(tmp_path)
    path = StateLayout(tmp_path).privacy_notices
    try:
        for i in range(300):  # a flood of entries that are not notices
            audit.record("command.refused", {"n": i}, 100.0 + i)
        audit.record("consent.withdraw", {"purpose": "cloud_events", "retired_generation": 2}, 500)
        first = NoticeService(audit, path)
        first.start()
        [event] = first.tick(501.0)
        assert event.fields["generation"] == 2 and event.fields["retired_dev"] is None
        # Killed before the next tick: the notice comes again, with the same id.
        again = NoticeService(audit, path)
        again.start()
        [repeat] = again.tick(502.0)
        assert repeat.fields["notice"] == event.fields["notice"]
        assert again.tick(503.0) == []  # the mark moved past it and was saved
        assert b"retained" in path.read_bytes()
        later = NoticeService(audit, path)
        later.start()
        assert later.tick(504.0) == []
        assert list(later.retained_messages()) == ["tombstones/cloud_events"]
    finally:
        audit.close()
