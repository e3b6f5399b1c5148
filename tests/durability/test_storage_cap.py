"""Issue 12 item 2: the agent's own growth stops at ``storage.max_state_bytes``.

A real Agent in a child process, with no broker, queues events on a real 4 MiB
tmpfs whose cap is 2 MiB; the footprint must stay under the cap (give or take
one pass of growth).  Then the real `edge-agent run` on the same state
directory delivers what was kept, and the counts close.

* Low-value events (motion with snapshots): the oldest make way for the newest
  (a ring buffer), every drop counted in ``dropped_full``; nothing is refused.
* High-value events (plate matches, never dropped for space): at the cap the
  agent is ``full`` -- one ``EA-DB-002`` line, a ``storage_full`` status event,
  new events refused and counted -- and nothing accepted is lost.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.consent import ConsentLedger
from agent.layout import StateLayout
from agent.purposes import Purpose
from agent.storage import tree_bytes
from tests.support.agent_harness import device_base
from tests.support.broker import Broker, free_port
from tests.support.durability import AgentRun, Requester, agent_toml, small_tmpfs, status_events
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import REPO

KIB = 1024
STORAGE = {
    "max_state_bytes": 2048 * KIB,
    "min_free_bytes": 128 * KIB,
    "reserve_bytes": 128 * KIB,
    "wal_max_bytes": 256 * KIB,
    "check_interval_seconds": 0.2,
}
# kind: (events, bytes of image or padding per event)
LOADS = {"motion": (3000, 1500), "plate": (6000, 600)}


def emit_until_done(state: Path, kind: str) -> tuple[dict[str, int], int, str]:
    """Run the emitter child; its final counters, the largest footprint seen, its stderr."""
    count, size = LOADS[kind]
    emitter = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.support.emitter", str(state), str(free_port())),
            *(str(count), str(size), json.dumps(STORAGE), kind),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    largest = [0]
    halt = threading.Event()

    def sample() -> None:
        while not halt.is_set():
            largest[0] = max(largest[0], tree_bytes(StateLayout(state).root, frozenset()))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    done: dict[str, int] = {}
    try:
        assert emitter.stdout is not None
        for line in emitter.stdout:
            if line.startswith("done "):
                done = json.loads(line[5:])
                break
    finally:
        halt.set()
        emitter.kill()
        emitter.wait()
    stderr = emitter.stderr.read() if emitter.stderr else ""
    assert done, stderr[-3000:]
    return done, largest[0], stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["motion", "plate"])
def test_own_growth_stops_at_the_cap_and_every_gap_is_counted(
    broker: Broker, tmp_path: Path, kind: str
) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        state = disk / "state"
        ledger = ConsentLedger.open(state)
        for purpose in (Purpose.CLOUD_EVENTS, Purpose.EVENT_SNAPSHOTS, Purpose.PLATE_RECOGNITION):
            ledger.grant(purpose, time.time(), source="test")
        ledger.db.close()
        base = device_base(state)
        done, largest, stderr = emit_until_done(state, kind)
        count = LOADS[kind][0]
        assert largest <= STORAGE["max_state_bytes"] + 96 * KIB, largest
        assert "Traceback" not in stderr, stderr[-3000:]
        if kind == "motion":
            assert done["dropped_full"] > 0 and done["accepted"] == count
            assert "EA-DB-002" not in stderr and "oldest low-value events" in stderr
        else:
            assert done["dropped_full"] == 0 and done["refused"] == count - done["accepted"] > 0
            assert stderr.count("EA-DB-002") == 1, stderr[-3000:]

        config = tmp_path / "agent.toml"
        agent_toml(config, broker.port, STORAGE)
        events = Collector(broker.host, broker.port, f"{base}/events/#")
        requester = Requester(broker.host, broker.port, base, Signer())
        run = AgentRun(config, state)

        def keys() -> set[str]:
            return {
                str(e["f"].get("area", e["f"].get("camera")))
                for e in events.events()
                if e["type"] in ("motion", "plate.match")
            }

        try:
            # The running agent enforces the same cap: a state left just over
            # it (one pass of growth is allowed) makes it drop a few more of the
            # oldest low-value events, and those are counted too.  So what must
            # arrive is read from the agent's own counter, re-read until
            # everything it still holds has arrived.
            deadline = time.monotonic() + 120
            dropped, expected = done["dropped_full"], done["accepted"]
            while time.monotonic() < deadline:
                status = requester.status()
                assert status is not None
                dropped = status["outbox"]["dropped_full"]
                expected = done["accepted"] - dropped
                if events.wait_for(lambda c, want=expected: len(keys()) >= want, 5):
                    break
            assert len(keys()) >= expected, f"{len(keys())} of {expected}\n{run.text()[-3000:]}"
            status = requester.status()
            assert status is not None
            assert status["outbox"]["dropped_full"] == dropped
            assert status["outbox"]["lost"] == 0
            if kind == "plate":
                # High-value events are never dropped for space, not even at start.
                assert dropped == done["dropped_full"] == 0
                assert status_events(events, "storage_full")
            else:
                assert dropped >= done["dropped_full"]
            delivered = keys()
            assert run.stop() == 0
        finally:
            run.kill()
            requester.close()
            events.close()
        assert len(delivered) == expected
        if kind == "motion":
            # Oldest first: the emitter dropped the oldest; the run may drop more at
            # start, the oldest of those its connection has not yet put on the wire.
            # So what is missing is one run from the first event, and at most one more.
            missing = sorted(set(range(count)) - {int(a) for a in delivered})
            assert len(missing) == dropped and missing[: done["dropped_full"]] == list(
                range(done["dropped_full"])
            )
            breaks = sum(1 for a, b in itertools.pairwise(missing) if b != a + 1)
            assert breaks <= (1 if dropped > done["dropped_full"] else 0), missing
        print(
            f"\nstorage cap ({kind}): {count} emitted, {done['accepted']} accepted, "
            f"{count - done['accepted']} refused while full, {dropped} dropped "
            f"(oldest low-value; {dropped - done['dropped_full']} of them by the run at start), "
            f"{len(delivered)} delivered, 0 lost; largest footprint "
            f"{largest // KIB} KiB (cap {STORAGE['max_state_bytes'] // KIB} KiB)"
        )
