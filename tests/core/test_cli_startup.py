"""`edge-agent --help`, `config check` and `--version` load no numpy, cv2, cryptography
or composition root (every feature's drivers).

``--help`` builds the full parser, so it imports every ``drivers/cli/cmd_*.py``:
a heavy import added at the top of any of them fails here.  The heavy modules
are loaded inside the handlers that need them (``# lazy: heavy (...)``).
``make bench`` (tests/bench/bench_startup.py) measures the wall time.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Runs the real main() in a fresh interpreter, then reports what got imported.
SCRIPT = """
import json, sys
from drivers.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "cv2", "cryptography"})
heavy += ["drivers.compose"] if "drivers.compose" in sys.modules else []
print("\\nSTARTUP " + json.dumps({"code": code, "heavy": heavy}))
"""


def _run(*argv: str) -> tuple[str, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output, _, marker = result.stdout.rpartition("\nSTARTUP ")
    report: dict[str, object] = json.loads(marker)
    return output, report


@pytest.mark.parametrize(
    "argv",
    [("--help",), ("config", "check", "config/agent.toml"), ("--version",)],
    ids=["help", "config-check", "version"],
)
def test_start_up_leaves_heavy_modules_out(argv: tuple[str, ...]) -> None:
    _, report = _run(*argv)
    assert report["code"] == 0
    assert report["heavy"] == [], f"edge-agent {' '.join(argv)} imported {report['heavy']}"


def test_help_lists_every_command() -> None:
    output, _ = _run("--help")
    for command in ("run", "config", "upgrade", "discover", "provision", "enrol", "gallery"):
        assert re.search(rf"^\s+{command}\s", output, re.MULTILINE), command


def test_version_prints_the_distribution_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "drivers", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(r"edge-agent \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout
    from agent import __version__

    assert result.stdout == f"edge-agent {__version__}\n"
    assert importlib.metadata.version("edge-agent") == __version__  # setup.cfg reads it


def test_plate_list_choices_match_the_core() -> None:
    # plates_cli spells the list names out so --help does not load numpy.
    from agent.matching.plates import PlateList
    from drivers.cli.plates_cli import PLATE_LISTS

    assert list(PLATE_LISTS) == [p.value for p in PlateList]
