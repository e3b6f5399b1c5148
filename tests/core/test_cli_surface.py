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
from drivers.cli.cmd_matching import EXIT_UNKNOWN
from drivers.cli.common import DEFAULT_CONFIG
from drivers.cli.output import ERROR_CODES

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


# Every command takes --json (tests/core/test_cli_json.py runs each) except these, which
# print no data a script could want.  Keep it short: a new command is on neither list
# until someone decides, and then the test below fails.
WITHOUT_JSON = {
    ("run",),  # the daemon: it logs (journald priorities), it prints no result
}


def test_every_command_that_prints_data_takes_json() -> None:
    leaves = {path[1:]: parser for path, parser in _leaves()}
    assert set(leaves) >= WITHOUT_JSON, WITHOUT_JSON - set(leaves)
    without = {
        path for path, parser in leaves.items()
        if not any("--json" in a.option_strings for a in parser._actions)
    }
    assert sorted(without - WITHOUT_JSON) == [], "data-printing commands without --json"
    assert without == WITHOUT_JSON, "on the allow-list but takes --json: drop it from the list"
    for path, parser in leaves.items():
        if path not in WITHOUT_JSON:
            assert "--json" in parser.format_help(), path  # and --help says so


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
    assert '{"ok": false, "error"' in helped.stdout  # what --json prints on failure
    for code in set(ERROR_CODES.values()):
        assert f"`{code}`" in readme, f"README does not list the --json error code {code}"
    # The one command with an exit code of its own documents it in its --help.
    match = dict((path[1:], p) for path, p in _leaves())[("match",)].format_help()
    assert f"{EXIT_UNKNOWN} nobody enrolled" in " ".join(match.split())


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
    # Under --json the same line, and the error document on stdout.
    result = subprocess.run([*EDGE_AGENT, "consent", "show", "--json"], capture_output=True,
                            text=True, cwd=tmp_path, env=_env(PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == EXIT_BAD_DATA
    assert len(result.stderr.strip().splitlines()) == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["error"]["code"] == "config"
    assert document["error"]["exit_code"] == EXIT_BAD_DATA
    assert result.stderr.strip() == f"edge-agent: error: {document['error']['message']}"


def test_a_state_dir_alone_still_reads_the_default_configuration(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The installed configuration (here a real file standing in for /etc/edge-agent/agent.toml)
    # is read although only --state-dir was given; the state directory is the one named.
    installed = tmp_path / "etc-agent.toml"
    installed.write_text(f'state_dir = "{tmp_path / "unused"}"\n'
                         '[device]\nserial_number = "EA-HUB-0777"\n')
    monkeypatch.setattr("drivers.cli.common.DEFAULT_CONFIG", installed)
    monkeypatch.delenv("EDGE_AGENT_CONFIG", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    state = tmp_path / "named"
    assert main(["provision", "label", "--state-dir", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["serial_number"] == "EA-HUB-0777"
    assert (state / "provisioning").is_dir() and not (tmp_path / "unused").exists()
    # $EDGE_AGENT_CONFIG wins over the installed file, --config over both.
    other = tmp_path / "env.toml"
    other.write_text('[device]\nserial_number = "EA-HUB-0888"\n')
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(other))
    assert main(["config", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"]["serial_number"] == "EA-HUB-0888"
    assert main(["config", "show", "--config", str(installed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"]["serial_number"] == "EA-HUB-0777"


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
