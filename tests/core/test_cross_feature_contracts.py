"""Where two features meet: files one writes and another reads, CLI hooks, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.cli import main
from drivers.logs.wiring import read_verification_code
from drivers.provisioning.store import load_or_create_binding


def test_technician_auth_reads_the_code_provisioning_generated(tmp_path: Path) -> None:
    binding = load_or_create_binding(tmp_path, "EA-1")
    assert read_verification_code(tmp_path)() == binding.verification_code


def test_cli_withdrawal_erases_the_watch_list_and_is_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert main(["consent", "grant", "plate_recognition", *state]) == 0
    assert main(["enrol", "plate", "AB 123 CD", "--label", "Neighbour", *state]) == 0
    assert any(tmp_path.glob("plates.sqlite*"))
    assert main(["consent", "withdraw", "plate_recognition", *state]) == 0
    assert not any(tmp_path.glob("plates.sqlite*"))
    capsys.readouterr()
    assert main(["audit", "show", *state]) == 0
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert kinds.count("consent.grant") == 1 and kinds.count("consent.withdraw") == 1
    assert main(["audit", "verify", *state]) == 0
