"""Events/s through the durable outbox to a real broker at QoS 1, and idle RSS.

Peer: a bare paho-mqtt QoS 1 publish loop (no outbox, no minimiser) on the same
broker in the same run -- the ceiling for this machine.  Our side is the whole
path: ``Agent.emit`` (minimiser) -> fsync'd outbox commit -> pump -> paho ->
PUBACK -> the delete committed (the ``outbox_acked`` counter), so the clock
stops only when every event is out of the outbox.  CPU microseconds per event
are this process's CPU time (every thread) over the same window; the broker is
another process.  Both sides run ``ROUNDS`` times, interleaved, and the best
round of each is reported, because the machine may be shared.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.outbox import ACKED
from agent.purposes import Purpose
from tests.bench.run import Report
from tests.support.agent_harness import RunningAgent, make_config, motion
from tests.support.broker import Broker

EVENTS = 20_000
ROUNDS = 3
REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Rate:
    per_second: float
    cpu_us: float  # CPU microseconds per event, all threads of this process


def agent_rate(broker: Broker, state_dir: pathlib.Path) -> Rate:
    running = RunningAgent(make_config(state_dir, broker.port))
    agent = running.agent
    try:
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        deadline = time.monotonic() + 10
        while not (agent.link and agent.link.connected) and time.monotonic() < deadline:
            time.sleep(0.02)
        events = [motion(k) for k in range(EVENTS)]
        # Only the counter: outbox.stats() counts the rows, a scan per poll.
        base = agent.db.counter(ACKED)
        cpu, start = time.process_time(), time.perf_counter()
        for event in events:
            agent.emit(event)
        while agent.db.counter(ACKED) - base < EVENTS:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        return Rate(EVENTS / elapsed, (time.process_time() - cpu) / EVENTS * 1e6)
    finally:
        running.stop()


def paho_rate(broker: Broker) -> Rate:
    done = threading.Event()
    acked = [0]

    def on_publish(*args: Any) -> None:
        acked[0] += 1
        if acked[0] == EVENTS:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(200)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    payload = b"x" * 120
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(EVENTS):
        client.publish("bench/raw", payload, qos=1)
    done.wait(120)
    rate = Rate(EVENTS / (time.perf_counter() - start), (time.process_time() - cpu) / EVENTS * 1e6)
    client.disconnect()
    client.loop_stop()
    return rate


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_rss(broker: Broker, workdir: pathlib.Path) -> tuple[float, float]:
    config = workdir / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\n[matching]\nenabled = false\n"
        "[camera]\nenabled = false\n"
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "drivers", "run", "--config", str(config),
         "--state-dir", str(workdir / "rss-state")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(5)
        return rss_mib(agent.pid), rss_mib(bare.pid)
    finally:
        for proc in (agent, bare):
            proc.terminate()
            proc.wait(20)


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        broker = Broker(workdir)
        broker.start()
        try:
            peers, ours = [], []
            for k in range(ROUNDS):
                peers.append(paho_rate(broker))
                ours.append(agent_rate(broker, workdir / f"state-{k}"))
            rate = max(ours, key=lambda r: r.per_second)
            peer = max(peers, key=lambda r: r.per_second)
            ratio = rate.per_second / peer.per_second
            report.row(
                "events",
                f"QoS1 events/s via fsync'd outbox ({EVENTS} events, best of {ROUNDS})",
                f"{rate.per_second:,.0f}/s", peer=f"bare paho QoS1 {peer.per_second:,.0f}/s",
                ratio=ratio, goal=">= 0.5x bare paho", met=ratio >= 0.5,
            )
            cpu = min(r.cpu_us for r in ours)
            peer_cpu = min(r.cpu_us for r in peers)
            report.row(
                "events", "CPU us per event (this process, all threads; lowest round)",
                f"{cpu:,.0f} us", peer=f"bare paho QoS1 {peer_cpu:,.0f} us",
                ratio=cpu / peer_cpu,
            )
            agent_rss, bare_rss = idle_rss(broker, workdir)
            report.row(
                "events", "idle RSS of `edge-agent run` (vision off)", f"{agent_rss:.1f} MiB",
                peer=f"bare python {bare_rss:.1f} MiB", ratio=agent_rss / bare_rss,
                goal="<= 40 MiB", met=agent_rss <= 40,
            )
        finally:
            broker.stop()
