"""An unusable state directory stops the real `edge-agent run` with one line and exit 73.

Each case runs the agent process itself.  We are root in the test machine, so
plain permission bits would not stop us: read-only comes from a read-only bind
mount, "another user's directory" from running the agent without capabilities
(``setpriv --bounding-set=-all``: uid 0 then obeys permission bits like anyone).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.consent import ConsentLedger
from agent.purposes import Purpose
from drivers.cli import EXIT_STATE_DIR
from tests.support.broker import free_port
from tests.support.process import REPO, spawn_agent


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    # Nothing listens on the port: a start that got past the state directory would hang.
    config.write_text(
        f"[mqtt]\nport = {free_port()}\ntls = 'off'\n[camera]\nenabled = false\n"
        "[runtime]\ntick_seconds = 0.05\n"
    )
    return config


def _run(proc: subprocess.Popen[bytes]) -> tuple[int, list[str]]:
    try:
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    return code, stderr.splitlines()


def _assert_one_clear_line(code: int, lines: list[str], path: Path, *words: str) -> None:
    assert code == EXIT_STATE_DIR, lines
    assert len(lines) == 1, lines  # one line, no traceback
    line = lines[0]
    assert line.startswith("edge-agent: error: state directory ")
    assert str(path) in line and "fix:" in line
    for word in words:
        assert word in line, line


@contextlib.contextmanager
def read_only_mount(path: Path) -> Iterator[None]:
    """``path`` bind-mounted onto itself, read-only (skips where mounting is not allowed)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a read-only bind mount")
    bind = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"bind mount not permitted here: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(path)], capture_output=True
        )
        if remount.returncode != 0:
            pytest.skip(f"read-only remount not permitted: {remount.stderr.decode().strip()}")
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_state_directory_exits_73_with_the_fix(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # A device that ran before: the state exists, then the disk comes back read-only.
    ledger = ConsentLedger.open(state)
    ledger.grant(Purpose.CLOUD_EVENTS, time.time())
    # Closed now, not whenever the collector gets to it: a database still open for
    # writing makes the read-only remount fail with "mount point is busy".
    ledger.db.close()
    before = sorted(p.name for p in state.iterdir())
    with read_only_mount(state):
        code, lines = _run(spawn_agent(_config(tmp_path), state))
    _assert_one_clear_line(code, lines, state, "read-only", "mount it read-write")
    assert sorted(p.name for p in state.iterdir()) == before


def test_a_file_where_the_state_directory_should_be_exits_73(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_bytes(b"not a directory")
    code, lines = _run(spawn_agent(_config(tmp_path), state))
    _assert_one_clear_line(code, lines, state, "is a file", "move the file away")
    assert state.read_bytes() == b"not a directory"


def test_a_file_where_a_parent_directory_should_be_exits_73(tmp_path: Path) -> None:
    parent = tmp_path / "var"
    parent.write_bytes(b"")
    state = parent / "edge-agent"
    code, lines = _run(spawn_agent(_config(tmp_path), state))
    _assert_one_clear_line(code, lines, state, "a file stands where a directory should be")


def test_another_users_state_directory_exits_73_naming_both_uids(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv(1) to run the agent without capabilities")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 54321, 54321)
    # uid 0 without CAP_DAC_OVERRIDE/CAP_FOWNER: may neither enter nor chmod the directory.
    command = [
        setpriv, "--bounding-set=-all", "--inh-caps=-all", "--",
        sys.executable, "-m", "drivers", "run",
        "--config", str(_config(tmp_path)), "--state-dir", str(state),
    ]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    code, lines = _run(proc)
    _assert_one_clear_line(code, lines, state, "owned by uid 54321", "chown -R 0:")
    assert list(state.iterdir()) == []


def test_an_immutable_state_directory_exits_73(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr(1)")
    if subprocess.run(["chattr", "+i", str(state)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        code, lines = _run(spawn_agent(_config(tmp_path), state))
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    _assert_one_clear_line(code, lines, state, "immutable")


def test_a_usable_directory_is_made_private_and_left_clean(tmp_path: Path) -> None:
    from drivers.statedir import ensure_state_dir

    state = tmp_path / "new" / "state"
    ensure_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert list(state.iterdir()) == []  # the write probe leaves nothing behind
    state.chmod(0o755)
    ensure_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
