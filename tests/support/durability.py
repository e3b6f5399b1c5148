"""Faults against the real `edge-agent run`: a small tmpfs, commands at a rate, kill -9.

The agent under test produces events on command: ``plate.observe`` for a plate
on the watch-list queues one ``plate.match`` event whose ``camera`` field is a
tag the test chose, so every ``ok`` reply can be matched to the event it
promised.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cbor2
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.consent import ConsentLedger
from agent.layout import StateLayout
from agent.purposes import Purpose
from agent.sequence import HighWater
from tests.support.agent_harness import device_base
from tests.support.broker import free_port
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import REPO, spawn_agent

PLATE = "AB123"


def agent_toml(path: pathlib.Path, port: int, storage: dict[str, object] | None = None) -> None:
    """A configuration for the real process: loopback plaintext broker, quiet features."""
    lines = [
        f"[mqtt]\nport = {port}\ntls = 'off'\nreconnect_min_seconds = 0.1\n"
        "reconnect_max_seconds = 0.5\n",
        "[runtime]\ntick_seconds = 0.05\n",
        # plate.observe needs the matching pipeline, which needs the camera (sample, slow).
        "[camera]\nfps = 0.5\n",
        "[discovery]\nwsd_enabled = false\nmdns_enabled = false\n",
        "[provisioning]\nlan_enabled = false\n",
        "[logs]\nmax_store_bytes = 131072\nbackup_files = 1\n",
    ]
    if storage:
        body = "".join(f"{k} = {v!r}\n" for k, v in storage.items())
        lines.append(f"[storage]\n{body}")
    path.write_text("".join(lines))


def prepare_state(state: pathlib.Path, owner: Signer) -> str:
    """Owner key, plate_recognition consent and one plate on the watch-list; returns the base."""
    state.mkdir(parents=True, exist_ok=True)
    owner.enrol_in_state(state)
    ConsentLedger.open(state).grant(Purpose.PLATE_RECOGNITION, time.time(), source="test")
    subprocess.run(
        [sys.executable, "-m", "drivers", "enrol", "plate", PLATE, "--label", "gate",
         "--state-dir", str(state)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return device_base(state)


class AgentRun:
    """One `edge-agent run` child; its stderr is read into ``lines`` as it comes."""

    def __init__(self, config: pathlib.Path, state: pathlib.Path) -> None:
        self.proc = spawn_agent(config, state, stdout=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, needle: str, timeout: float = 30.0) -> bool:
        return wait_for(lambda: needle in self.text(), timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(20)
        self._reader.join(5)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(5)
        return code


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@dataclass
class Reply:
    tag: str
    ok: bool
    code: str | None
    at: float


@dataclass
class Requester:
    """Signed ``plate.observe`` commands without waiting: every reply lands in ``replies``."""

    host: str
    port: int
    base: str
    owner: Signer
    replies: dict[str, Reply] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    on_ok: Callable[[Reply], None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._inbox = f"{self.base}/reply/dur-{uuid.uuid4().hex[:8]}"
        self._ready = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"dur-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self._inbox, qos=1)
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        assert self._ready.wait(10)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        tag = bytes(getattr(message.properties, "CorrelationData", b"")).decode()
        body = cbor2.loads(message.payload)
        error = body.get("error") or {}
        reply = Reply(tag, bool(body.get("ok")), error.get("code"), time.monotonic())
        with self._lock:
            self.results[tag] = body.get("result")
            first = tag not in self.replies
            self.replies[tag] = reply
        if first and reply.ok and self.on_ok is not None and not tag.startswith("status-"):
            self.on_ok(reply)

    def observe(self, tag: str) -> None:
        device = self.base.rsplit("/", 1)[-1]
        payload = self.owner.sign(device, "plate.observe", {"text": PLATE, "camera": tag})
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self._inbox
        props.CorrelationData = tag.encode()
        with self._lock:
            self.sent.append(tag)
        self.client.publish(f"{self.base}/cmd/plate.observe", payload, qos=1, properties=props)

    def status(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """The public ``status`` reply, asked again every second until the agent answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tag = f"status-{uuid.uuid4().hex[:8]}"
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = self._inbox
            props.CorrelationData = tag.encode()
            self.client.publish(f"{self.base}/cmd/status", cbor2.dumps({}), qos=1, properties=props)
            if wait_for(lambda t=tag: t in self.replies, 1.0):
                return self.results.get(tag)
        return None

    def accepted(self) -> set[str]:
        with self._lock:
            return {t for t, r in self.replies.items() if r.ok and not t.startswith("status-")}

    def refused(self, code: str = "unavailable") -> set[str]:
        with self._lock:
            return {t for t, r in self.replies.items() if not r.ok and r.code == code}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def delivered_tags(collector: Collector) -> set[str]:
    return {
        str(e["f"]["camera"]) for e in collector.events() if e.get("type") == "plate.match"
    }


def status_events(collector: Collector, state: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in collector.events()
        if e.get("type") == "device.status" and (state is None or e["f"].get("state") == state)
    ]


@contextlib.contextmanager
def small_tmpfs(where: pathlib.Path, size: str = "4m") -> Iterator[pathlib.Path]:
    """A real tmpfs of ``size`` at ``where`` (root needed; the test is skipped otherwise)."""
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here: {result.stderr.strip()[:200]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: pathlib.Path, leave: int = 0) -> int:
    """Write ``path`` until the file system is full (less ``leave`` bytes); returns its size."""
    written = 0
    chunk = b"\xa5" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
            if free - leave <= 0:
                break
            try:
                written += os.write(fd, chunk[: max(4096, min(len(chunk), free - leave))])
            except OSError:
                break
    finally:
        os.close(fd)
    return written


# --- a cut write-ahead log (loss detection) ------------------------------------------

WAL_HEADER = 32


def surviving_seq(layout: StateLayout, scratch: pathlib.Path) -> int:
    """What the database will say after the cut: open a copy (never the original)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    copy = scratch / layout.database.name
    shutil.copy(layout.database, copy)
    shutil.copy(layout.database_wal, copy.with_name(copy.name + "-wal"))
    conn = sqlite3.connect(copy)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def kill_busy_agent_and_cut_wal(
    state: pathlib.Path, *, total: int, kill_after: int, scratch: pathlib.Path
) -> tuple[int, int]:
    """Grant cloud_events, SIGKILL an emitter child after ``kill_after`` events, cut its WAL.

    Returns (the sequence the high-water file recorded, the sequence the cut
    database still has).  The WAL is cut in half; if that happens to keep every
    commit, to its header.
    """
    layout = StateLayout(state)
    ledger = ConsentLedger.open(state)
    ledger.grant(Purpose.CLOUD_EVENTS, time.time(), source="test")
    ledger.db.close()
    emitter = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.support.emitter", str(state), str(free_port())),
            *(str(total), "200", json.dumps({"wal_max_bytes": 4 * 1024 * 1024})),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert emitter.stdout is not None
    for line in emitter.stdout:
        if line.startswith("emitted") and int(line.split()[1]) >= kill_after:
            break
    os.kill(emitter.pid, signal.SIGKILL)
    emitter.wait()
    recorded = HighWater(layout.outbox_high_water).value
    wal = layout.database_wal
    with open(wal, "r+b") as handle:
        handle.truncate(wal.stat().st_size // 2)
    survived = surviving_seq(layout, scratch)
    if survived >= recorded:
        with open(wal, "r+b") as handle:
            handle.truncate(WAL_HEADER)
        survived = surviving_seq(layout, scratch)
    return recorded, survived


# --- SIGKILL on the first ok reply (commit before acknowledge) ------------------------


class KillOnFirstOk:
    """A real agent that a burst of signed commands kills the instant its first ok arrives.

    The kill comes from the MQTT thread on the first ok of the current burst (a late
    reply of the round before must not kill the next process).
    """

    def __init__(self, broker_host: str, broker_port: int, work: pathlib.Path) -> None:
        owner = Signer()
        self.state = work / "state"
        base = prepare_state(self.state, owner)
        self.config = work / "agent.toml"
        agent_toml(self.config, broker_port)
        self.events = Collector(broker_host, broker_port, f"{base}/events/#")
        self._prefix = ""
        self.run: AgentRun | None = None
        self.requester = Requester(broker_host, broker_port, base, owner, on_ok=self._kill_now)

    def _kill_now(self, reply: Reply) -> None:
        run = self.run
        if run is not None and self._prefix and reply.tag.startswith(self._prefix):
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.pid, signal.SIGKILL)

    def start(self) -> AgentRun:
        self.run = AgentRun(self.config, self.state)
        return self.run

    def burst(self, prefix: str, size: int) -> bool:
        """Send ``size`` commands tagged ``prefix<k>``; True once the ok killed the agent."""
        assert self.run is not None
        self._prefix = prefix
        for k in range(size):
            self.requester.observe(f"{prefix}{k}")
        run = self.run
        killed = wait_for(lambda: run.proc.poll() is not None, 30)
        run.kill()
        self._prefix = ""
        return killed

    def close(self) -> None:
        if self.run is not None:
            self.run.kill()
        self.requester.close()
        self.events.close()
