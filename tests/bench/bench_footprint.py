"""Footprint of ``edge-agent run`` with the default configuration: idle memory and READY.

The agent runs as systemd starts it (the console script, ``NOTIFY_SOCKET`` bound
here) with config/agent.toml -- the sample camera, face and plate matching on,
nothing consented -- and a real loopback mosquitto as its broker (the file's
broker is TLS on 8883; only port and TLS change, tests/support/footprint.py).

* READY: seconds from spawn until ``READY=1`` arrives on the notify socket.
* idle RSS: ``VmRSS`` of the process ``IDLE_SECONDS`` after READY.

The peer, in the same run and interleaved round by round, is a bare
``python -c`` of the same interpreter that sends ``READY=1`` on the same socket and
sleeps.  Goals (issue 13): RSS <= 80 MiB, READY <= 1.5 s.  tests/core/test_footprint.py
checks (untimed) that dlib and onnxruntime stay out until a purpose needs them.
"""

from __future__ import annotations

import pathlib
import statistics
import subprocess
import tempfile
import time
from typing import Any

from tests.support.broker import Broker
from tests.support.footprint import (
    agent,
    bare_python,
    default_config_text,
    edge_agent_command,
    memory_kib,
    rss_kib,
)

ROUNDS = 3
IDLE_SECONDS = 5.0
GOAL_RSS_MIB = 80.0
GOAL_READY_SECONDS = 1.5


def _measure(process: Any) -> tuple[float, float, float]:
    """(seconds to READY, MiB resident, MiB anonymous) after IDLE_SECONDS idle, one process."""
    with process:
        ready = process.start()
        time.sleep(IDLE_SECONDS)
        memory = memory_kib(process.pid)
        assert process.proc.poll() is None, process.stderr()[-2000:]
    return ready, memory["VmRSS"] / 1024, memory["RssAnon"] / 1024


def _consented_rss(config: pathlib.Path, work: pathlib.Path) -> float:
    """MiB resident once the face and plate models loaded (every purpose granted)."""
    work.mkdir()
    subprocess.run(
        [*edge_agent_command(), "consent", "grant", "all", "--yes", "--config", str(config),
         "--state-dir", str(work / "state")],
        check=True, capture_output=True, timeout=120,
    )
    with agent(config, work / "state", work) as process:
        process.start()
        # Whichever face detector the file names (``face detector (NAME) loaded``).
        for line in ("face detector (", "plate reader (PP-OCR) loaded"):
            assert process.wait_for_stderr(line, 60), process.stderr()[-2000:]
        time.sleep(IDLE_SECONDS)
        return rss_kib(process.pid) / 1024


def run(report: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        root = pathlib.Path(tmp)
        broker = Broker(root)
        broker.start()
        try:
            config = root / "agent.toml"
            config.write_text(default_config_text(broker.port))
            ours: list[tuple[float, float, float]] = []
            peer: list[tuple[float, float, float]] = []
            warm = root / "warm"  # page cache and .pyc files, not counted
            warm.mkdir()
            with agent(config, warm / "state", warm) as first:
                first.start()
            for round_ in range(ROUNDS):
                work = root / f"round{round_}"
                work.mkdir()
                peer.append(_measure(bare_python(work)))
                ours.append(_measure(agent(config, work / "state", work)))
            consented = _consented_rss(config, root / "consented")
        finally:
            broker.stop()
    ready, rss, anon = (statistics.median(x[i] for x in ours) for i in (0, 1, 2))
    peer_ready, peer_rss, peer_anon = (statistics.median(x[i] for x in peer) for i in (0, 1, 2))
    report.row(
        "footprint", f"`edge-agent run` idle RSS, default config ({IDLE_SECONDS:.0f} s after "
        f"READY, median of {ROUNDS})", f"{rss:.1f} MiB",
        peer=f"bare `python -c` {peer_rss:.1f} MiB", ratio=rss / peer_rss,
        goal=f"<= {GOAL_RSS_MIB:.0f} MiB", met=rss <= GOAL_RSS_MIB,
    )
    report.row(
        "footprint", "of which anonymous (`RssAnon`: heap, stacks, Python objects; the rest "
        "is library pages the kernel may drop, drivers/heap.release_startup_pages)",
        f"{anon:.1f} MiB", peer=f"bare `python -c` {peer_anon:.1f} MiB", ratio=anon / peer_anon,
    )
    report.row(
        "footprint", "`edge-agent run` RSS with face and plate recognition consented "
        f"(models loaded, {IDLE_SECONDS:.0f} s later; no goal: what the lazy loading defers)",
        f"{consented:.1f} MiB", peer=f"idle, nothing consented {rss:.1f} MiB",
        ratio=consented / rss,
    )
    report.row(
        "footprint", f"`edge-agent run` spawn to READY=1, default config (median of {ROUNDS})",
        f"{ready:.2f} s", peer=f"bare `python -c` {peer_ready:.3f} s", ratio=ready / peer_ready,
        goal=f"<= {GOAL_READY_SECONDS} s", met=ready <= GOAL_READY_SECONDS,
    )
