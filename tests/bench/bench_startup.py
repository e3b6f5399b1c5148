"""Start-up: wall time of ``edge-agent --help`` and ``edge-agent config check``.

Both must stay interactive: goal <= 0.3 s wall on this machine.  The peer is a
bare ``python -c pass`` of the same interpreter, run interleaved with them in
the same run (one of each per round, median of the rounds), so the ratio shows
what the agent adds on top of starting Python at all.
``tests/core/test_cli_startup.py`` keeps numpy, cv2 and cryptography out.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
ROUNDS = 11
# As installed: pip writes the .pyc files, so the warm-up run may too (a shell with
# PYTHONDONTWRITEBYTECODE=1 would otherwise time the compiler on every run).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
GOAL_SECONDS = 0.3


def _edge_agent() -> list[str]:
    """The installed console script, as a user runs it; ``python -m drivers`` without one."""
    script = pathlib.Path(sys.executable).with_name("edge-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "drivers"]


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=ENV,
    )
    return time.perf_counter() - start


def run(report: Any) -> None:
    commands = {
        "peer": [sys.executable, "-c", "pass"],
        "help": [*_edge_agent(), "--help"],
        "config check": [*_edge_agent(), "config", "check", "config/agent.toml"],
    }
    for command in commands.values():  # warm the page cache and .pyc files
        _wall(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(ROUNDS):
        for name, command in commands.items():
            times[name].append(_wall(command))
    peer = statistics.median(times["peer"])
    for name, label in (("help", "`edge-agent --help`"),
                        ("config check", "`edge-agent config check config/agent.toml`")):
        ours = statistics.median(times[name])
        report.row(
            "startup", f"{label} wall (median of {ROUNDS})", f"{ours * 1000:.0f} ms",
            peer=f"`python -c pass` {peer * 1000:.0f} ms", ratio=ours / peer,
            goal=f"<= {GOAL_SECONDS} s", met=ours <= GOAL_SECONDS,
        )
