"""The command line a newcomer meets: help on every option, exit codes, --version,
the default configuration path, --json, and consent that says what it grants."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agent import __version__
from drivers.cli import EXIT_BAD_DATA, EXIT_OK, EXIT_STATE_DIR, EXIT_TRANSPORT, build_parser, main
from drivers.cli.common import DEFAULT_CONFIG

ROOT = pathlib.Path(__file__).resolve().parents[2]
EDGE_AGENT = [sys.executable, "-m", "drivers"]
# Hidden on purpose (argparse.SUPPRESS): test hooks no user should see.
HIDDEN = {"--assume-consent"}


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("edge-agent",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return [
        (path, p)
        for path, p in _walk(build_parser())
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    ]


def test_every_option_and_argument_of_every_command_has_help() -> None:
    missing = []
    commands = 0
    for path, parser in _walk(build_parser()):
        commands += 1
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if action.help == argparse.SUPPRESS and set(action.option_strings) & HIDDEN:
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {name}")
    assert commands > 40  # the walk reached the sub-sub-commands
    assert missing == [], "options without help text:\n" + "\n".join(missing)


# Commands that print data a script may want: each takes --json.
DATA_COMMANDS = {
    ("audit", "verify"), ("audit", "show"), ("auth", "list"), ("auth", "device-id"),
    ("auth", "keygen"), ("config", "check"), ("config", "show"), ("consent", "show"),
    ("consent", "grant"), ("consent", "withdraw"), ("consent", "history"), ("data", "erase"),
    ("discover",), ("gallery", "list"), ("gallery", "plates"), ("logs", "codes"),
    ("provision", "label"), ("remote",), ("upgrade", "status"), ("watch",),
}


def test_every_command_that_prints_data_takes_json() -> None:
    leaves = {path[1:]: parser for path, parser in _leaves()}
    assert set(leaves) >= DATA_COMMANDS, DATA_COMMANDS - set(leaves)
    without = [
        " ".join(path) for path in sorted(DATA_COMMANDS)
        if not any("--json" in a.option_strings for a in leaves[path]._actions)
    ]
    assert without == []


def test_version_and_help_with_the_exit_codes() -> None:
    version = subprocess.run([*EDGE_AGENT, "--version"], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"edge-agent {__version__}"
    helped = subprocess.run([*EDGE_AGENT, "--help"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert helped.returncode == 0
    readme = (ROOT / "README.md").read_text()
    for code in (EXIT_OK, EXIT_TRANSPORT, EXIT_BAD_DATA, EXIT_STATE_DIR, 130):
        assert f"\n  {code} " in helped.stdout, code
        assert f"| {code} |" in readme, f"README's exit code table lacks {code}"
    assert str(DEFAULT_CONFIG) in helped.stdout and "EDGE_AGENT_CONFIG" in helped.stdout


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"EDGE_AGENT_CONFIG", "STATE_DIRECTORY", "JOURNAL_STREAM"}}
    env.update(extra)
    return env


@pytest.mark.skipif(DEFAULT_CONFIG.exists(), reason=f"this machine has a {DEFAULT_CONFIG}")
def test_a_missing_default_configuration_is_one_line_naming_path_and_fix(
    tmp_path: pathlib.Path,
) -> None:
    for argv in (["consent", "show"], ["provision", "label"], ["audit", "show"], ["watch"]):
        result = subprocess.run([*EDGE_AGENT, *argv], capture_output=True, text=True,
                                cwd=tmp_path, env=_env(PYTHONPATH=str(ROOT)), timeout=60)
        assert result.returncode == EXIT_BAD_DATA, (argv, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(DEFAULT_CONFIG) in lines[0] and "--config" in lines[0]
        assert "EDGE_AGENT_CONFIG" in lines[0]
        # Nothing was created on the built-in sample's behalf.
        assert list(tmp_path.iterdir()) == []


def test_the_configuration_comes_from_edge_agent_config_and_gives_the_state_dir(
    tmp_path: pathlib.Path,
) -> None:
    state = tmp_path / "from-config"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n[device]\nserial_number = "EA-HUB-0042"\n')
    env = _env(PYTHONPATH=str(ROOT), EDGE_AGENT_CONFIG=str(config))
    result = subprocess.run([*EDGE_AGENT, "consent", "show", "--json"], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["cloud_events"] == {
        "granted": False, "description": shown["cloud_events"]["description"]
    }
    assert "MQTT" in shown["cloud_events"]["description"]
    assert (state / "agent.sqlite").exists()  # the state went where the configuration says
    label = subprocess.run([*EDGE_AGENT, "provision", "label", "--json"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=60)
    assert label.returncode == 0, label.stderr
    assert json.loads(label.stdout)["serial_number"] == "EA-HUB-0042"


def test_consent_grant_refuses_without_a_terminal_unless_yes(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert main(["consent", "grant", "cloud_events", *state]) == EXIT_BAD_DATA
    err = capsys.readouterr().err
    assert "publish events" in err  # it said what the purpose means...
    assert "--yes" in err.splitlines()[-1]  # ...and how to confirm from a script
    assert main(["consent", "show", "--json", *state]) == 0
    assert json.loads(capsys.readouterr().out)["cloud_events"]["granted"] is False
    assert main(["consent", "grant", "all", "--yes", "--json", *state]) == 0
    captured = capsys.readouterr()
    granted = json.loads(captured.out)
    assert len(granted) == 6 and all(v["granted"] for v in granted.values())
    for purpose in granted:
        assert f"  {purpose}: " in captured.err  # each described, even with --yes


def _pty_session(argv: list[str], answer: bytes, cwd: pathlib.Path) -> tuple[int, str]:
    """Run ``argv`` on a real pseudo-terminal, answer its question, return (rc, transcript)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower,
                               cwd=cwd, env=_env(PYTHONPATH=str(ROOT)), close_fds=True)
    os.close(follower)
    transcript = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                transcript += chunk
                if not answered and b"[y/N]" in transcript:
                    os.write(leader, answer)
                    answered = True
            elif process.poll() is not None:
                break
        rc = process.wait(timeout=30)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return rc, transcript.decode(errors="replace")


def test_consent_grant_on_a_terminal_describes_and_asks(tmp_path: pathlib.Path) -> None:
    argv = [*EDGE_AGENT, "consent", "grant", "face_recognition", "--state-dir", str(tmp_path)]
    rc, transcript = _pty_session(argv, b"n\n", tmp_path)
    assert rc == EXIT_BAD_DATA, transcript
    assert "match faces" in transcript and "nothing granted" in transcript
    rc, transcript = _pty_session(argv, b"y\n", tmp_path)
    assert rc == 0, transcript
    assert "face_recognition: granted" in transcript
    shown = subprocess.run(
        [*EDGE_AGENT, "consent", "show", "--json", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=_env(PYTHONPATH=str(ROOT)), timeout=60,
    )
    document = json.loads(shown.stdout)
    assert document["face_recognition"]["granted"] is True
    assert document["cloud_events"]["granted"] is False


def test_json_outputs_parse(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    for argv in (
        ["auth", "device-id", "--json", *state],
        ["auth", "list", "--json", *state],
        ["audit", "show", "--json", *state],
        ["logs", "codes", "--json"],
        ["auth", "keygen", "--out", str(tmp_path / "k.pem"), "--json"],
    ):
        assert main(argv) == 0, argv
        json.loads(capsys.readouterr().out)
    config = tmp_path / "agent.toml"
    config.write_text("[mqtt]\ntls = \"off\"\n")
    assert main(["config", "check", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["config", "show", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mqtt"]["tls"] == "off"
