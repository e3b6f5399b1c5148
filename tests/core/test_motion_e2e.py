"""Motion's Frigate-style lifecycle end to end: a video file through the real agent to mosquitto."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.config import CameraSettings, CameraSource
from agent.purposes import Purpose
from tests.support.agent_harness import RunningAgent, device_base, make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector

FPS = 10


def write_walk_past(path: Path) -> None:
    """2 s of a still scene, 3 s of a square crossing it, 3 s still again."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    assert writer.isOpened()
    for i in range(80):
        frame = np.full((120, 160, 3), 40, np.uint8)
        if 20 <= i < 50:
            x = abs((i - 20) * 8 % 240 - 120)
            frame[40:80, x : x + 40] = 220
        writer.write(frame)
    writer.release()


def motion_events(collector: Collector) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["type"] == "motion"]


def state_payloads(collector: Collector, topic: str) -> list[bytes]:
    return [bytes(m.payload) for m in list(collector.messages) if m.topic == topic]


def test_a_walk_past_is_new_updates_end_under_one_id_with_a_retained_state(
    broker: Broker, tmp_path: Path
) -> None:
    video = tmp_path / "walk.avi"
    write_walk_past(video)
    state_dir = tmp_path / "state"
    base = device_base(state_dir)
    state_topic = f"{base}/camera/cam0/motion"
    config = make_config(state_dir, broker.port)
    config = dataclasses.replace(
        config,
        camera=CameraSettings(
            source=CameraSource.FILE, uri=str(video), fps=FPS, motion_update_seconds=0.5
        ),
    )
    sub = Collector(broker.host, broker.port, f"{base}/#")
    running = RunningAgent(config)
    try:
        running.agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        assert sub.wait_for(
            lambda c: any(e["f"]["phase"] == "end" for e in motion_events(c)), 30
        ), f"no motion end: {motion_events(sub)}"
        events = motion_events(sub)
        phases = [e["f"]["phase"] for e in events]
        assert phases[0] == "new" and phases[-1] == "end", phases
        assert set(phases[1:-1]) == {"update"} and len(phases) >= 4, phases
        assert len({e["f"]["event_id"] for e in events}) == 1  # one event...
        assert len({e["id"] for e in events}) == len(events)  # ...many messages
        assert events[0]["f"]["duration"] == 0.0
        durations = [e["f"]["duration"] for e in events]
        assert durations == sorted(durations) and 1.5 <= durations[-1] <= 4.0, durations
        # Updates rate-limited: 3 s of motion at 0.5 s gives at most 6.
        assert phases.count("update") <= 6
        # The retained state went ON with the event and back OFF with its end.
        assert sub.wait_for(lambda c: state_payloads(c, state_topic)[-1:] == [b"OFF"])
        assert b"ON" in state_payloads(sub, state_topic)
        # A late subscriber reads the state the broker retained.
        late = Collector(broker.host, broker.port, state_topic)
        try:
            assert late.wait_for(lambda c: state_payloads(c, state_topic) == [b"OFF"])
            assert late.messages[0].retain
        finally:
            late.close()
        # Withdrawal: the retained state is cleared with an empty retained message.
        running.agent.ledger.withdraw(Purpose.CLOUD_EVENTS, time.time(), source="test")
        assert sub.wait_for(lambda c: state_payloads(c, state_topic)[-1:] == [b""])
    finally:
        running.stop()
        sub.close()
