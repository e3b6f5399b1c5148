"""`edge-agent --help`, `config check` and `--version` load no numpy, cv2, cryptography
or composition root (every feature's drivers).

``--help`` builds the full parser, so it imports every ``drivers/cli/cmd_*.py``:
a heavy import added at the top of any of them fails here.  The heavy modules
are loaded inside the handlers that need them (``# lazy: heavy (...)``), and so
are the modules only a handler needs (the configuration schema, the audit chain,
the logs/rights/upgrade drivers, TLS): ``--help`` and ``--version`` build the
parser alone (``NOT_FOR_HELP``).
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
print("\\nSTARTUP " + json.dumps({"code": code, "heavy": heavy, "modules": sorted(sys.modules)}))
"""
# What building the parser used to import for nothing (~60% of `--help`): the schema,
# the audit chain, the logs, rights and upgrade drivers, an HTTP server, TLS.
NOT_FOR_HELP = {
    "agent.config", "agent.audit", "agent.feature", "drivers.logs.feature",
    "drivers.logs.serial_link", "drivers.rights.feature", "drivers.upgrade.service",
    "drivers.upgrade.installer", "agent.upgrade.builder", "http.server", "ssl",
}


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


@pytest.mark.parametrize("argv", [("--help",), ("--version",)], ids=["help", "version"])
def test_help_builds_the_parser_without_the_handlers_modules(argv: tuple[str, ...]) -> None:
    # Each command imports what its handler needs inside the handler (`# lazy:`).
    _, report = _run(*argv)
    modules = report["modules"]
    assert isinstance(modules, list)
    assert sorted(NOT_FOR_HELP & set(modules)) == []


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
