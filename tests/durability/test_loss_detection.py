"""Issue 12 item 4: events lost from the database are detected, counted and reported.

A real Agent in a child process queues motion events (no broker) and is killed
with SIGKILL; then its write-ahead log is cut short, taking committed events
with it.  The real `edge-agent run` must find the gap between the high-water
file and the database, log one ``EA-DB-003`` line with the count, report it in
``status`` and a ``device.status`` ``degraded`` event, deliver what survived,
and number its new events after the gap, so a receiver sees every sequence
number either delivered or reported lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent_harness import device_base
from tests.support.broker import Broker
from tests.support.durability import (
    AgentRun,
    Requester,
    agent_toml,
    kill_busy_agent_and_cut_wal,
    status_events,
)
from tests.support.mqtt import Collector
from tests.support.owner import Signer


@pytest.mark.slow
def test_cut_wal_after_sigkill_is_reported_as_lost_with_its_count(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    recorded, survived = kill_busy_agent_and_cut_wal(
        state, total=5000, kill_after=3000, scratch=tmp_path / "scratch"
    )
    assert recorded >= 3000
    base = device_base(state)
    expected_lost = recorded - survived
    assert expected_lost > 0

    config = tmp_path / "agent.toml"
    agent_toml(config, broker.port)
    events = Collector(broker.host, broker.port, f"{base}/events/#")
    requester = Requester(broker.host, broker.port, base, Signer())
    run = AgentRun(config, state)
    try:
        assert events.wait_for(lambda c: bool(status_events(c, "degraded")), 60), run.text()
        detail = status_events(events, "degraded")[0]["f"]["detail"]
        assert detail == {
            "reason": "events_lost",
            "lost": expected_lost,
            "first_seq": survived + 1,
            "last_seq": recorded,
        }
        status = requester.status()
        assert status is not None and status["outbox"]["lost"] == expected_lost

        def seqs() -> set[int]:
            return {int(e["seq"]) for e in events.events() if "seq" in e}

        # Every number up to the high water: delivered, or inside the reported gap.
        wanted = set(range(1, survived + 1))
        assert events.wait_for(lambda c: wanted <= seqs(), 60), sorted(wanted - seqs())[:10]
        # Numbering goes on after the gap: no lost number is given again.
        assert not seqs() & set(range(survived + 1, recorded + 1))
        assert max(seqs()) > recorded
        assert run.stop() == 0
    finally:
        run.kill()
        requester.close()
        events.close()
    text = run.text()
    assert text.count("EA-DB-003") == 1, text[-3000:]
    assert f"{expected_lost} committed events were lost" in text
    assert "Traceback" not in text
    print(
        f"\nloss detection: {recorded} committed, WAL cut: {survived} survived, "
        f"{expected_lost} detected lost (seq {survived + 1}..{recorded}), 0 undetected"
    )
