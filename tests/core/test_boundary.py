"""The agent/drivers boundary: ``lint-imports`` (contracts in setup.cfg) must pass.

``agent/`` is the pure core plus the local persistence of the device's own
state directory; it never talks to a peer or a device and never imports
``drivers/``.  ``make lint`` runs the same contracts; this test makes
``make test`` enforce them too.
"""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
AGENT = REPO / "agent"


def _lint_imports() -> list[str]:
    script = pathlib.Path(sys.executable).with_name("lint-imports")
    if script.exists():
        return [str(script)]
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is missing: install the dev extra (pip install -e '.[dev]')")
    return [found]


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [*_lint_imports(), "--no-cache", "--config", str(REPO / "setup.cfg")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-4000:]
    assert "0 broken" in report, report[-4000:]


def _urllib_parts(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``urllib`` import other than ``urllib.parse``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "urllib":
                names = [f"urllib.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        found += [
            (node.lineno, name)
            for name in names
            if name.split(".")[0] == "urllib" and name != "urllib.parse"
        ]
    return found


def test_agent_uses_only_the_parsing_part_of_urllib() -> None:
    # import-linter sees ``urllib`` as one node, and setup.cfg lets four agent
    # modules import it for urllib.parse; urllib.request & co. stay out.
    offenders = [
        f"{path.relative_to(REPO)}:{line}: import {name}"
        for path in sorted(AGENT.rglob("*.py"))
        for line, name in _urllib_parts(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    ]
    assert not offenders, "agent/ may use urllib.parse only:\n" + "\n".join(offenders)


def test_the_urllib_check_sees_submodules() -> None:
    tree = ast.parse(
        "import urllib.parse\nfrom urllib.parse import urlsplit\n"
        "def f():\n    import urllib.request\n    from urllib import error, parse\n"
    )
    assert _urllib_parts(tree) == [(4, "urllib.request"), (5, "urllib.error")]
