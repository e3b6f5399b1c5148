"""Start the real `edge-agent run` in a child process, as systemd would."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]


def spawn_agent(config: pathlib.Path, state: pathlib.Path, **popen: Any) -> subprocess.Popen[Any]:
    """``python -m drivers run --config CONFIG --state-dir STATE`` from the repository root."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    command = [sys.executable, "-m", "drivers", "run", "--config", str(config)]
    return subprocess.Popen([*command, "--state-dir", str(state)], cwd=REPO, **popen)
