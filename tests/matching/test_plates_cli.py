"""``edge-agent enrol plate`` and ``edge-agent gallery plates|remove-plate`` via main(argv)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import pytest

from drivers.cli import main


@pytest.fixture
def cli(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """The real ``edge-agent`` main(); cmd_matching mounts the plate commands."""
    state = ["--state-dir", str(tmp_path)]

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, *state])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_enrol_list_remove_round_trip(cli: Callable[..., tuple[int, str, str]]) -> None:
    assert cli("consent", "grant", "--yes", "plate_recognition")[0] == 0
    code, out, _ = cli("enrol", "plate", "ab-123 x", "--label", "Van", "--list", "deny")
    assert code == 0
    assert "AB123X" in out and "deny" in out
    code, out, _ = cli("enrol", "plate", "CD 45", "--format", "^[A-Z]{2}\\d{2}$")
    assert code == 0
    code, out, _ = cli("gallery", "plates", "--json")
    listed = json.loads(out)
    assert [(e["plate"], e["list"], e["label"]) for e in listed] == [
        ("AB123X", "deny", "Van"),
        ("CD45", "allow", None),
    ]
    assert listed[1]["format"] == "^[A-Z]{2}\\d{2}$"
    code, out, _ = cli("gallery", "remove-plate", "AB 123X")
    assert code == 0 and "AB123X" in out
    code, out, _ = cli("gallery", "plates")
    assert "AB123X" not in out and "CD45" in out


def test_enrol_without_consent_exits_2(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = cli("enrol", "plate", "AB123")
    assert code == 2
    assert "plate_recognition" in err and "consent" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("enrol", "plate", "AB123", "--format", "(A+)+$"), "groups are not supported"),
        (("enrol", "plate", "AB123", "--format", "[A-"), "unterminated"),
        (("enrol", "plate", "AB\x1b123"), "control"),
        (("enrol", "plate", "A" * 500), "longer than"),
        (("enrol", "plate", "AB123", "--format", "\\d+"), "does not fit"),
        (("gallery", "remove-plate", "ZZ999"), "not on the watch-list"),
    ],
)
def test_bad_input_is_one_clear_line(
    cli: Callable[..., tuple[int, str, str]], argv: tuple[str, ...], message: str
) -> None:
    assert cli("consent", "grant", "--yes", "plate_recognition")[0] == 0
    code, _, err = cli(*argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_withdrawal_leaves_no_watch_list(
    cli: Callable[..., tuple[int, str, str]], tmp_path: pathlib.Path
) -> None:
    cli("consent", "grant", "--yes", "plate_recognition")
    assert cli("enrol", "plate", "AB123")[0] == 0
    assert (tmp_path / "plates.sqlite").exists()
    assert cli("consent", "withdraw", "plate_recognition")[0] == 0
    code, out, _ = cli("gallery", "plates")
    assert code == 0 and "no plates enrolled" in out
    assert not list(tmp_path.glob("plates.sqlite*"))
