"""Events/s through the durable outbox to a real broker at QoS 1, and idle RSS.

Peer: a bare paho-mqtt QoS 1 publish loop (no outbox, no minimiser) on the same
broker in the same run -- the ceiling for this machine.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import paho.mqtt.client as paho

from agent.purposes import Purpose
from tests.bench.run import Report
from tests.support.agent_harness import RunningAgent, make_config, motion
from tests.support.broker import Broker

EVENTS = 20_000
REPO = pathlib.Path(__file__).resolve().parents[2]


def agent_rate(broker: Broker, workdir: pathlib.Path) -> float:
    running = RunningAgent(make_config(workdir / "state", broker.port))
    agent = running.agent
    try:
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        deadline = time.monotonic() + 10
        while not (agent.link and agent.link.connected) and time.monotonic() < deadline:
            time.sleep(0.02)
        base = agent.outbox.stats()["acked"]
        start = time.perf_counter()
        for k in range(EVENTS):
            agent.emit(motion(k))
        while agent.outbox.stats()["acked"] - base < EVENTS:
            time.sleep(0.005)
        return EVENTS / (time.perf_counter() - start)
    finally:
        running.stop()


def paho_rate(broker: Broker) -> float:
    done = threading.Event()
    acked = [0]

    def on_publish(*args: Any) -> None:
        acked[0] += 1
        if acked[0] == EVENTS:
            done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(200)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    payload = b"x" * 120
    start = time.perf_counter()
    for _ in range(EVENTS):
        client.publish("bench/raw", payload, qos=1)
    done.wait(120)
    rate = EVENTS / (time.perf_counter() - start)
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
        f"[mqtt]\nport = {broker.port}\n[matching]\nenabled = false\n"
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
            ours = agent_rate(broker, workdir)
            peer = paho_rate(broker)
            report.row(
                "events", f"QoS1 events/s via outbox ({EVENTS} events, fsync'd SQLite)",
                f"{ours:,.0f}/s", peer=f"bare paho QoS1 {peer:,.0f}/s", ratio=ours / peer,
                goal=">= 5,000/s", met=ours >= 5000,
            )
            agent_rss, bare_rss = idle_rss(broker, workdir)
            report.row(
                "events", "idle RSS of `edge-agent run` (vision off)", f"{agent_rss:.1f} MiB",
                peer=f"bare python {bare_rss:.1f} MiB", ratio=agent_rss / bare_rss,
                goal="<= 40 MiB", met=agent_rss <= 40,
            )
        finally:
            broker.stop()
