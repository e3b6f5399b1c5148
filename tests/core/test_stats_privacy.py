"""Statistics count only what is consented when it happens, and never a count below k."""

from __future__ import annotations

import dataclasses
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.camera.events import MOTION
from agent.config import PrivacySettings
from agent.consent import ConsentLedger
from agent.database import Database
from agent.events import DEVICE_STATUS, Event, SchemaCatalogue
from agent.matching.events import FACE_MATCH, PLATE_MATCH
from agent.purposes import Purpose
from agent.stats import STATS, StatisticsAggregator, purposes_from
from drivers.camera import build_camera
from drivers.runtime import Agent
from drivers.vision.feature import build_faces, build_plates
from tests.support.agent_harness import device_base, make_config
from tests.support.broker import Broker
from tests.support.clock import ManualClock
from tests.support.mqtt import Collector

T0 = 1_800_000_000.0
HOUR = 3600


@pytest.fixture
def ledger(tmp_path: pathlib.Path) -> Iterator[ConsentLedger]:
    db = Database.in_state_dir(tmp_path)
    try:
        yield ConsentLedger(db, "test")
    finally:
        db.close()


def aggregator(ledger: ConsentLedger, min_count: int = 5) -> StatisticsAggregator:
    schemas = SchemaCatalogue([DEVICE_STATUS, STATS, MOTION, FACE_MATCH, PLATE_MATCH])
    return StatisticsAggregator(
        HOUR, T0, is_granted=ledger.is_granted, purpose_of=purposes_from(schemas),
        min_count=min_count,
    )


def emit(stats: StatisticsAggregator, kind: str, times: int) -> None:
    for _ in range(times):
        stats.observe(Event(kind, T0 + 1))


def counts(stats: StatisticsAggregator, now: float = T0 + HOUR) -> Any:
    [summary] = stats.tick(now)
    return summary.fields["counts"]


def test_nothing_is_counted_without_usage_statistics_consent(ledger: ConsentLedger) -> None:
    ledger.grant(Purpose.CLOUD_EVENTS, T0)
    stats = aggregator(ledger)
    emit(stats, "motion", 8)
    ledger.grant(Purpose.USAGE_STATISTICS, T0)
    emit(stats, "motion", 6)
    assert counts(stats) == {"motion": 6}


def test_events_of_a_purpose_without_consent_are_not_counted(ledger: ConsentLedger) -> None:
    ledger.grant(Purpose.USAGE_STATISTICS, T0)
    ledger.grant(Purpose.CLOUD_EVENTS, T0)
    stats = aggregator(ledger)
    emit(stats, "face.match", 9)  # face_recognition never granted
    emit(stats, "motion", 7)
    emit(stats, "no.such.type", 9)
    assert counts(stats) == {"motion": 7}


def test_counts_of_a_purpose_withdrawn_before_the_period_ends_are_dropped(
    ledger: ConsentLedger,
) -> None:
    for purpose in (Purpose.USAGE_STATISTICS, Purpose.FACE_RECOGNITION, Purpose.CLOUD_EVENTS):
        ledger.grant(purpose, T0)
    stats = aggregator(ledger)
    emit(stats, "face.match", 9)
    emit(stats, "motion", 5)
    ledger.withdraw(Purpose.FACE_RECOGNITION, T0 + 2)
    assert counts(stats) == {"motion": 5}


def test_counts_below_k_are_suppressed(ledger: ConsentLedger) -> None:
    for purpose in (Purpose.USAGE_STATISTICS, Purpose.PLATE_RECOGNITION, Purpose.CLOUD_EVENTS):
        ledger.grant(purpose, T0)
    stats = aggregator(ledger, min_count=5)
    emit(stats, "plate.match", 4)
    emit(stats, "motion", 5)
    emit(stats, "device.status", 1)
    [summary] = stats.tick(T0 + HOUR)
    assert summary.fields["counts"] == {"motion": 5}
    assert summary.fields["min_count"] == 5
    # The next period starts empty.
    assert counts(stats, T0 + 2 * HOUR) == {}


class Running:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.thread = threading.Thread(target=agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.request_stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


def test_the_stats_message_after_a_face_withdrawal_has_no_face_count(
    broker: Broker, tmp_path: pathlib.Path
) -> None:
    """The issue's case: ``face.match: 9`` in a stats message sent after the withdrawal."""
    state = tmp_path / "state"
    base = device_base(state)
    config = make_config(state, broker.port)
    config = dataclasses.replace(config, privacy=PrivacySettings(statistics_min_count=5))
    clock = ManualClock(T0)
    agent = Agent.build(
        config, builders=(build_camera, build_faces, build_plates), clock=clock, environ={}
    )
    sub = Collector(broker.host, broker.port, f"{base}/events/#")
    running = Running(agent)
    try:
        for purpose in (Purpose.USAGE_STATISTICS, Purpose.FACE_RECOGNITION,
                        Purpose.PLATE_RECOGNITION, Purpose.CLOUD_EVENTS):
            agent.ledger.grant(purpose, clock.now())
        agent.ledger.refresh()
        for _ in range(9):
            agent.emit(Event("face.match", clock.now(), fields={"score": 0.9, "known": False}))
        for _ in range(6):
            agent.emit(Event("motion", clock.now(), fields={"camera": "cam0", "area": 3}))
        for _ in range(3):
            agent.emit(Event("plate.match", clock.now(), fields={"score": 0.9}))
        agent.ledger.withdraw(Purpose.FACE_RECOGNITION, clock.now())
        clock.advance(HOUR + 1)
        assert sub.wait_for(lambda c: any(e["type"] == "stats" for e in c.events()), 15)
        [stats] = [e for e in sub.events() if e["type"] == "stats"]
        assert stats["f"]["counts"] == {"motion": 6}
        assert stats["f"]["min_count"] == 5
    finally:
        running.stop()
        sub.close()
