"""Issue 12 item 3: a damaged database is moved aside, salvaged, reported; the agent runs on.

Random bytes are written over one page of ``agent.sqlite`` -- the header, the
schema page, a page of the queued events, the key store, the last page --
while the agent is stopped with events queued.  The real `edge-agent run` must
then find the damage (``PRAGMA quick_check`` at start), move the file aside
under ``damaged/``, salvage the readable rows with the sqlite3 shell into a
fresh file, say so in one ``EA-DB-001`` line and a ``device.status``
``degraded`` event with the counts, deliver the salvaged events, and keep
answering commands.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from agent import cbor
from agent.database import Database
from agent.layout import StateLayout
from agent.minimise import OutgoingMessage
from agent.outbox import Outbox
from agent.purposes import Purpose
from tests.support.broker import Broker
from tests.support.durability import (
    AgentRun,
    Requester,
    agent_toml,
    delivered_tags,
    prepare_state,
    status_events,
    wait_for,
)
from tests.support.mqtt import Collector
from tests.support.owner import Signer

PAGE = 4096
QUEUED = 300


def queue_offline(state: Path, base: str) -> None:
    """Queue device-status events while no agent runs (the broker would take them at once)."""
    layout = StateLayout(state)
    db = Database(layout.database)
    outbox = Outbox(db, max_messages=10_000, default_expiry_seconds=3600, layout=layout)
    messages = [
        (
            f"{base}/events/device.status",
            OutgoingMessage(
                str(uuid.uuid4()),
                "device.status",
                Purpose.DEVICE_OPERATION,
                cbor.dumps({"type": "device.status", "f": {"state": f"q{k}"}, "p": "x" * 400}),
                time.time(),
                None,
            ),
        )
        for k in range(QUEUED)
    ]
    outbox.put_many(messages, time.time())
    db.close()


def damage_offset(state: Path, where: str) -> int:
    db = Database(StateLayout(state).database)
    try:
        if where == "header":
            return 0
        if where == "schema":
            return 100  # page 1 past the 100-byte file header: the table of tables
        if where == "last-page":
            return (db.query_int("PRAGMA page_count") - 1) * PAGE
        table = {"outbox-leaf": "outbox", "keys": "principals"}[where]
        pages = db.query(
            "SELECT pageno FROM dbstat WHERE name = ? ORDER BY pagetype = 'leaf' DESC, pageno",
            (table,),
        )
        return (int(str(pages[len(pages) // 2][0])) - 1) * PAGE
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["header", "schema", "outbox-leaf", "keys", "last-page"])
def test_random_bytes_in_the_database_are_salvaged_and_the_agent_runs_on(
    broker: Broker, tmp_path: Path, where: str
) -> None:
    owner = Signer()
    state = tmp_path / "state"
    base = prepare_state(state, owner)
    config = tmp_path / "agent.toml"
    agent_toml(config, broker.port)
    # A first life: commands answered, events delivered, a clean stop.
    first_events = Collector(broker.host, broker.port, f"{base}/events/#")
    requester = Requester(broker.host, broker.port, base, owner)
    run = AgentRun(config, state)
    try:
        assert requester.status() is not None, run.text()[-2000:]
        for k in range(10):
            requester.observe(f"before-{k}")
        assert wait_for(lambda: len(requester.accepted()) == 10, 20)
        assert first_events.wait_for(lambda c: requester.accepted() <= delivered_tags(c))
        assert run.stop() == 0
    finally:
        run.kill()
        requester.close()
        first_events.close()
    queue_offline(state, base)
    offset = damage_offset(state, where)
    size = PAGE - (offset % PAGE)
    with open(StateLayout(state).database, "r+b") as handle:
        handle.seek(offset)
        handle.write(os.urandom(size))

    # The second life: any device id (a lost key store means a new one).
    events = Collector(broker.host, broker.port, "edge/+/events/#")
    run = AgentRun(config, state)
    try:
        assert events.wait_for(lambda c: bool(status_events(c, "degraded")), 60), run.text()
        degraded = status_events(events, "degraded")[0]["f"]["detail"]
        assert degraded["reason"] == "database_damaged"
        recovered = degraded["recovered"]
        topic = next(m.topic for m in events.messages if m.topic.endswith("/device.status"))
        now_base = topic.split("/events/")[0]
        requester = Requester(broker.host, broker.port, now_base, owner)
        status = requester.status()
        assert status is not None, run.text()[-3000:]
        assert status["storage"]["salvaged"] == 1
        # What was salvaged of the queue is delivered.
        if recovered.get("outbox"):
            assert events.wait_for(
                lambda c: sum(
                    1 for e in c.events() if str(e["f"].get("state", "")).startswith("q")
                )
                >= min(recovered["outbox"], QUEUED),
                30,
            )
        # The agent keeps serving: signed commands too, if the key store survived.
        if recovered.get("principals"):
            requester.observe("after")
            assert wait_for(lambda: "after" in requester.replies, 20)
            assert requester.replies["after"].ok
        time.sleep(1)
        assert run.proc.poll() is None, "the agent stopped"
        assert run.stop() == 0
    finally:
        run.kill()
        events.close()
    text = run.text()
    assert text.count("EA-DB-001") == 1, text[-3000:]
    assert "Traceback" not in text, text[-5000:]
    moved = StateLayout(state).damaged_copies()
    assert len(moved) == 1 and any(moved[0].iterdir())
    line = next(x for x in text.splitlines() if "EA-DB-001" in x)
    print(f"\ncorruption at {where} (offset {offset}): {line.split('EA-DB-001 ')[1][:300]}")
