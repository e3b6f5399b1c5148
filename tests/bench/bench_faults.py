"""The fault matrix of issue 12: every fault once, against the real agent process.

Each fault of ``tests/durability`` (and the read-only start of
``tests/core/test_state_dir_errors.py``) runs once here, shorter, against the
real `edge-agent run` and a real mosquitto, with the same helpers
(``tests/support/durability.py``).  Per fault, one row:

* accepted -- events the device said it took: a command answered ``ok`` (its
  event committed), or an event committed to the outbox (its ``seq`` at or
  below the high-water mark);
* delivered -- of those, how many a QoS 1 subscriber received;
* lost -- accepted but never delivered;
* detected-lost -- of the lost, how many someone can know about: the device
  reported them (``EA-DB-003``, a ``device.status`` ``events_lost``), or a
  receiver sees their ``seq`` missing below a later one.

The verdict is met when nothing was lost that nobody can detect, and, for the
faults the issue says must lose nothing (a kill on the first ``ok``, a full
disk, a read-only start), when nothing was lost at all.  Faults that need root
(a small tmpfs, a read-only bind mount) say "skipped" where that is not allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator

import pytest

from agent import cbor
from agent.database import Database
from agent.layout import StateLayout
from agent.minimise import OutgoingMessage
from agent.outbox import Outbox
from agent.purposes import Purpose
from agent.sequence import HighWater
from tests.bench.run import Report
from tests.support.agent_harness import device_base
from tests.support.broker import Broker
from tests.support.durability import (
    AgentRun,
    KillOnFirstOk,
    Requester,
    agent_toml,
    delivered_tags,
    fill,
    kill_busy_agent_and_cut_wal,
    prepare_state,
    small_tmpfs,
    status_events,
    wait_for,
)
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import spawn_agent

KIB = 1024
KILL_ROUNDS = 5
BURST = 24
QUEUED = 300
DISK_FULL_STORAGE: dict[str, object] = {
    "max_state_bytes": 3 * 1024 * KIB,
    "min_free_bytes": 256 * KIB,
    "reserve_bytes": 256 * KIB,
    "wal_max_bytes": 256 * KIB,
    "check_interval_seconds": 0.5,
}


class Skip(Exception):
    """The fault cannot be staged on this machine (no root, no mount)."""


@dataclasses.dataclass
class Outcome:
    accepted: int
    delivered: int
    detected: int
    note: str = ""
    must_lose_nothing: bool = False

    @property
    def lost(self) -> int:
        return self.accepted - self.delivered

    @property
    def met(self) -> bool:
        if self.must_lose_nothing and self.lost:
            return False
        return self.detected >= self.lost


# --- what a receiver and the device can tell -----------------------------------------


def seqs(collector: Collector) -> set[int]:
    return {int(e["seq"]) for e in collector.events() if "seq" in e}


def reported_lost(collector: Collector) -> set[int]:
    """Sequence numbers the device said it lost (``device.status`` ``events_lost``)."""
    lost: set[int] = set()
    for event in status_events(collector, "degraded"):
        detail = event["f"].get("detail") or {}
        if detail.get("reason") == "events_lost":
            lost |= set(range(int(detail["first_seq"]), int(detail["last_seq"]) + 1))
    return lost


def detectable(collector: Collector) -> set[int]:
    """Numbers a receiver sees missing below the highest it got, or the device reported."""
    seen = seqs(collector)
    gaps = set(range(1, max(seen) + 1)) - seen if seen else set()
    return gaps | reported_lost(collector)


def seq_outcome(collector: Collector, committed: int, note: str) -> Outcome:
    """Accepted: sequence numbers 1..``committed`` (what the high-water file recorded)."""
    accepted = set(range(1, committed + 1))
    delivered = accepted & seqs(collector)
    lost = accepted - delivered
    return Outcome(len(accepted), len(delivered), len(lost & detectable(collector)), note)


def tag_outcome(requester: Requester, collector: Collector, note: str) -> Outcome:
    """Accepted: commands answered ``ok``; lost ones are detectable only as ``seq`` gaps."""
    accepted = requester.accepted()
    delivered = accepted & delivered_tags(collector)
    gaps = len(detectable(collector))
    lost = len(accepted) - len(delivered)
    return Outcome(len(accepted), len(delivered), min(lost, gaps), note, must_lose_nothing=True)


# --- the faults ---------------------------------------------------------------------------




def kill_on_first_ok(broker: Broker, work: pathlib.Path) -> Outcome:
    """SIGKILL the instant the first ``ok`` of a burst of commands arrives; restart."""
    rig = KillOnFirstOk(broker.host, broker.port, work)
    requester, events = rig.requester, rig.events
    try:
        run = rig.start()
        for rnd in range(KILL_ROUNDS):
            if requester.status() is None:
                raise RuntimeError(f"the agent did not answer: {run.text()[-2000:]}")
            if not rig.burst(f"r{rnd}-", BURST):
                raise RuntimeError("no ok reply came")
            run = rig.start()
        events.wait_for(lambda c: requester.accepted() <= delivered_tags(c), 60)
        requester.status()
        run.stop()
    finally:
        rig.close()
    return tag_outcome(requester, events, f"{KILL_ROUNDS} rounds of {BURST} commands")


def disk_full(when: str) -> Callable[[Broker, pathlib.Path], Outcome]:
    def scenario(broker: Broker, work: pathlib.Path) -> Outcome:
        """Commands at 40/s on a 4 MiB tmpfs that a filler file takes whole, then frees."""
        try:
            with small_tmpfs(work / "disk", "4m") as disk:
                return _disk_full(broker, work, disk, when)
        except pytest.skip.Exception as exc:
            raise Skip(str(exc)) from exc

    return scenario


def _disk_full(broker: Broker, work: pathlib.Path, disk: pathlib.Path, when: str) -> Outcome:
    owner = Signer()
    state = disk / "state"
    base = prepare_state(state, owner)
    config = work / "agent.toml"
    agent_toml(config, broker.port, DISK_FULL_STORAGE)
    events = Collector(broker.host, broker.port, f"{base}/events/#")
    requester = Requester(broker.host, broker.port, base, owner)
    halt = threading.Event()

    def send() -> None:
        k = 0
        while not halt.is_set():
            requester.observe(f"c{k}")
            k += 1
            time.sleep(0.025)

    sender = threading.Thread(target=send, daemon=True)
    filler = disk / "filler"
    run = AgentRun(config, state)
    try:
        if requester.status() is None:
            raise RuntimeError(f"the agent did not answer: {run.text()[-2000:]}")
        if when == "early":
            fill(filler)
        sender.start()
        if when == "late":
            time.sleep(3)
            fill(filler)
        wait_for(lambda: len(requester.refused()) >= 5, 20)
        time.sleep(2)
        filler.unlink()
        before = len(requester.accepted())
        wait_for(lambda: len(requester.accepted()) > before + 20, 20)
        halt.set()
        sender.join(5)
        events.wait_for(lambda c: requester.accepted() <= delivered_tags(c), 60)
        run.stop()
    finally:
        halt.set()
        run.kill()
        requester.close()
        events.close()
    refused = len(requester.refused())
    outcome = tag_outcome(requester, events, f"{refused} refused `unavailable` while full")
    return outcome


def queue_offline(state: pathlib.Path, base: str, count: int) -> None:
    """Commit ``count`` device-status events while no agent runs."""
    layout = StateLayout(state)
    db = Database(layout.database)
    outbox = Outbox(db, max_messages=10_000, default_expiry_seconds=3600, layout=layout)
    body = {"type": "device.status", "p": "x" * 400}
    messages = [
        (
            f"{base}/events/device.status",
            OutgoingMessage(
                str(uuid.uuid4()),
                "device.status",
                Purpose.DEVICE_OPERATION,
                cbor.dumps({**body, "f": {"state": f"q{k}"}}),
                time.time(),
                None,
            ),
        )
        for k in range(count)
    ]
    outbox.put_many(messages, time.time())
    db.close()


def outbox_page_offset(state: pathlib.Path) -> int:
    """The start of a leaf page in the middle of the queued events."""
    db = Database(StateLayout(state).database)
    try:
        pages = db.query(
            "SELECT pageno FROM dbstat WHERE name = 'outbox' AND pagetype = 'leaf' ORDER BY pageno"
        )
        page_size = db.query_int("PRAGMA page_size")
        return (int(str(pages[len(pages) // 2][0])) - 1) * page_size
    finally:
        db.close()


def corruption(broker: Broker, work: pathlib.Path) -> Outcome:
    """Random bytes over a page of queued events while the agent is stopped; restart."""
    state = work / "state"
    base = prepare_state(state, Signer())
    config = work / "agent.toml"
    agent_toml(config, broker.port)
    # Any device id: a damaged key store would mean a new one.
    events = Collector(broker.host, broker.port, "edge/+/events/#")
    try:
        queue_offline(state, base, QUEUED)
        committed = HighWater(StateLayout(state).outbox_high_water).value
        offset = outbox_page_offset(state)
        with open(StateLayout(state).database, "r+b") as handle:
            handle.seek(offset)
            handle.write(os.urandom(4096))
        run = AgentRun(config, state)
        try:
            events.wait_for(lambda c: bool(status_events(c, "degraded")), 60)
            # What was salvaged arrives; what was not shows as gaps below later numbers.
            events.wait_for(lambda c: bool(seqs(c)) and max(seqs(c)) > committed, 30)
            time.sleep(1)
            run.stop()
        finally:
            run.kill()
    finally:
        events.close()
    degraded = [e["f"].get("detail", {}) for e in status_events(events, "degraded")]
    recovered: dict[str, int] = next(
        (d["recovered"] for d in degraded if "recovered" in d), {}
    )
    note = f"a leaf page of {QUEUED} queued events; salvaged outbox rows {recovered.get('outbox')}"
    return seq_outcome(events, committed, note)


def wal_cut(broker: Broker, work: pathlib.Path) -> Outcome:
    """SIGKILL a busy agent, cut its write-ahead log in half, restart."""
    state = work / "state"
    committed, _ = kill_busy_agent_and_cut_wal(
        state, total=3000, kill_after=2000, scratch=work / "scratch"
    )
    base = device_base(state)
    config = work / "agent.toml"
    agent_toml(config, broker.port)
    events = Collector(broker.host, broker.port, f"{base}/events/#")
    run = AgentRun(config, state)
    try:
        events.wait_for(lambda c: bool(status_events(c, "degraded")), 60)
        events.wait_for(lambda c: bool(seqs(c)) and max(seqs(c)) > committed, 60)
        run.stop()
    finally:
        run.kill()
        events.close()
    reported = len(reported_lost(events))
    return seq_outcome(events, committed, f"{reported} reported lost by the device (EA-DB-003)")



@contextlib.contextmanager
def read_only_mount(path: pathlib.Path) -> Iterator[None]:
    if os.geteuid() != 0:
        raise Skip("needs root for a read-only bind mount")
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode:
        raise Skip("bind mount not permitted here")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(path)], capture_output=True
        )
        if remount.returncode:
            raise Skip("read-only remount not permitted here")
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def read_only_start(broker: Broker, work: pathlib.Path) -> Outcome:
    """Events queued, the state directory comes back read-only; then read-write again."""
    state = work / "state"
    base = prepare_state(state, Signer())
    queue_offline(state, base, QUEUED)
    committed = HighWater(StateLayout(state).outbox_high_water).value
    config = work / "agent.toml"
    agent_toml(config, broker.port)
    events = Collector(broker.host, broker.port, f"{base}/events/#")
    try:
        with read_only_mount(state):
            proc = spawn_agent(config, state)
            _, stderr = proc.communicate(timeout=60)
        lines = stderr.decode("utf-8", "replace").splitlines()
        run = AgentRun(config, state)
        try:
            events.wait_for(lambda c: set(range(1, committed + 1)) <= seqs(c), 60)
            run.stop()
        finally:
            run.kill()
    finally:
        events.close()
    note = f"read-only start: exit {proc.returncode}, {len(lines)} line(s) on stderr"
    outcome = seq_outcome(events, committed, note)
    outcome.must_lose_nothing = True
    return outcome


FAULTS: list[tuple[str, Callable[[Broker, pathlib.Path], Outcome]]] = [
    ("kill -9 on the first ok reply", kill_on_first_ok),
    ("disk full (4 MiB tmpfs), filled late", disk_full("late")),
    ("disk full (4 MiB tmpfs), filled early", disk_full("early")),
    ("random bytes over a database page", corruption),
    ("write-ahead log cut after kill -9", wal_cut),
    ("read-only state directory at start", read_only_start),
]


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        broker = Broker(workdir)
        broker.start()
        try:
            for k, (name, scenario) in enumerate(FAULTS):
                work = workdir / f"fault-{k}"
                work.mkdir()
                start = time.perf_counter()
                try:
                    outcome = scenario(broker, work)
                except Skip as exc:
                    report.row("faults", name, f"skipped: {exc}")
                    continue
                except Exception:
                    traceback.print_exc()
                    report.row("faults", name, "FAILED (see output)", met=False)
                    continue
                report.row(
                    "faults",
                    name,
                    f"accepted {outcome.accepted} / delivered {outcome.delivered} / "
                    f"lost {outcome.lost} / detected-lost {outcome.detected}",
                    peer=f"{outcome.note}; {time.perf_counter() - start:.0f} s",
                    goal="0 lost" if outcome.must_lose_nothing else "every loss detectable",
                    met=outcome.met,
                )
        finally:
            broker.stop()
