"""Issue 12 item 2: a full disk refuses clearly, loses nothing accepted, and recovers.

The real `edge-agent run` keeps its state on a real 4 MiB tmpfs and takes signed
``plate.observe`` commands at a fixed rate (each queues one ``plate.match``
event).  A filler file then takes every free byte -- late (after a stretch of
normal work) or early (before the first command).  While the disk is full the
agent must answer ``unavailable`` (never ``ok``), publish a ``device.status``
``storage_full`` event from its reserve, keep its write-ahead log bounded, and
once the filler is gone take commands again within about one pass.  Every
command answered ``ok`` must have its event delivered.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agent.layout import StateLayout
from agent.storage import allocated_bytes, tree_bytes
from tests.support.broker import Broker
from tests.support.durability import (
    AgentRun,
    Requester,
    agent_toml,
    delivered_tags,
    fill,
    prepare_state,
    small_tmpfs,
    status_events,
    wait_for,
)
from tests.support.mqtt import Collector
from tests.support.owner import Signer

KIB = 1024
STORAGE = {
    "max_state_bytes": 3 * 1024 * KIB,
    "min_free_bytes": 256 * KIB,
    "reserve_bytes": 256 * KIB,
    "wal_max_bytes": 256 * KIB,
    "check_interval_seconds": 0.5,
}
RATE_SECONDS = 0.025


class Sampler(threading.Thread):
    """Largest WAL and state-directory footprint seen, every 20 ms."""

    def __init__(self, state: Path) -> None:
        super().__init__(daemon=True)
        self.layout = StateLayout(state)
        self.max_wal = 0
        self.max_footprint = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.max_wal = max(self.max_wal, allocated_bytes(self.layout.database_wal))
            self.max_footprint = max(
                self.max_footprint, tree_bytes(self.layout.root, frozenset())
            )
            time.sleep(0.02)


class Sender(threading.Thread):
    def __init__(self, requester: Requester) -> None:
        super().__init__(daemon=True)
        self.requester = requester
        self.halt = threading.Event()
        self.sent_at: dict[str, float] = {}
        self.k = 0

    def run(self) -> None:
        while not self.halt.is_set():
            tag = f"c{self.k}"
            self.sent_at[tag] = time.monotonic()
            self.requester.observe(tag)
            self.k += 1
            time.sleep(RATE_SECONDS)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["late", "early"])
def test_full_disk_refuses_with_unavailable_loses_nothing_and_recovers(
    broker: Broker, tmp_path: Path, when: str
) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        owner = Signer()
        state = disk / "state"
        base = prepare_state(state, owner)
        config = tmp_path / "agent.toml"
        agent_toml(config, broker.port, STORAGE)
        events = Collector(broker.host, broker.port, f"{base}/events/#")
        requester = Requester(broker.host, broker.port, base, owner)
        sampler = Sampler(state)
        sender = Sender(requester)
        filler = disk / "filler"
        run = AgentRun(config, state)
        try:
            assert requester.status() is not None, run.text()[-2000:]
            sampler.start()
            if when == "early":
                fill(filler)
            sender.start()
            if when == "late":
                time.sleep(3)
                assert requester.accepted(), "no command was accepted before the disk filled"
                fill(filler)
            # Full: refusals, never ok, and the device says so.
            assert wait_for(lambda: len(requester.refused()) >= 5, 20), run.text()[-3000:]
            assert events.wait_for(lambda c: bool(status_events(c, "storage_full")), 20)
            time.sleep(2)
            full_status = requester.status()
            assert full_status is not None and full_status["storage"]["state"] == "full"
            # Space back: commands sent from now on are accepted within about one pass.
            filler.unlink()
            freed_at = time.monotonic()
            assert wait_for(
                lambda: any(sender.sent_at[t] > freed_at for t in requester.accepted()), 20
            ), run.text()[-3000:]
            recovered_after = min(
                requester.replies[t].at - freed_at
                for t in requester.accepted()
                if sender.sent_at[t] > freed_at
            )
            assert events.wait_for(lambda c: bool(status_events(c, "storage_ok")), 20)
            time.sleep(1)
            sender.halt.set()
            sender.join(5)
            accepted = requester.accepted()
            assert events.wait_for(lambda c: accepted <= delivered_tags(c), 60)
            final = requester.status()
            assert final is not None and final["storage"]["state"] == "ok"
            assert run.stop() == 0
        finally:
            sender.halt.set()
            sampler.halt.set()
            run.kill()
            requester.close()
            events.close()
        text = run.text()
        lost = accepted - delivered_tags(events)
        refused = requester.refused()
        print(
            f"\ndisk full {when}: {len(sender.sent_at)} sent, {len(accepted)} accepted, "
            f"{len(refused)} refused (unavailable), {len(accepted) - len(lost)} delivered, "
            f"{len(lost)} accepted-but-lost; recovered {recovered_after * 1000:.0f} ms after "
            f"space returned; max WAL {sampler.max_wal // KIB} KiB "
            f"(bound {STORAGE['wal_max_bytes'] // KIB} KiB), max footprint "
            f"{sampler.max_footprint // KIB} KiB; refused while full "
            f"{final['storage']['refused']}"
        )
        assert lost == set()
        assert not refused & accepted
        assert recovered_after < 2.0
        # One extra transaction's frames past the bound at most, before its checkpoint.
        assert sampler.max_wal <= STORAGE["wal_max_bytes"] + 128 * KIB  # type: ignore[operator]
        assert "EA-DB-002" in text, text[-3000:]
        assert "Traceback" not in text, text[-5000:]
        assert os.path.exists(state / "storage-reserve")
