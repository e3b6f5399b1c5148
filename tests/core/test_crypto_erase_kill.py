"""Withdrawal, erasure and key rotation killed after every durable step.

A kill must never leave data readable with no key left to destroy (a
withdrawal or erasure that stopped half-way), nor destroy a key whose data is
still wanted (the other purpose's events, the images of a rotation).  Each
case seeds a state directory, runs the operation in a child killed after
step K (K = 1, 2, ... until it finishes), restarts as the daemon does and
checks what can still be read.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests.core.crypto_rig import PER_PURPOSE, readable, seed

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_STEPS = 60


def _run(state: pathlib.Path, kill_at: int, action: str) -> bool:
    """True if the child finished; False if it was killed at ``kill_at``."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.core.crypto_killchild", str(state), str(kill_at), action],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    if proc.returncode == 0:
        assert "DONE" in proc.stdout
        return True
    assert proc.returncode == -9, proc.stderr[-2000:]
    return False


def _each_kill(tmp_path: pathlib.Path, action: str) -> list[tuple[int, dict[str, object]]]:
    outcomes = []
    for kill_at in range(1, MAX_STEPS):
        state = tmp_path / f"k{kill_at}"
        seed(state)
        finished = _run(state, kill_at, action)
        outcomes.append((kill_at, readable(state)))
        if finished:
            return outcomes
    pytest.fail(f"{action} did not finish within {MAX_STEPS} steps")


def test_seeded_state_is_fully_readable(tmp_path: pathlib.Path) -> None:
    seed(tmp_path)
    seen = readable(tmp_path)
    assert seen["events"] == {"cloud_events": PER_PURPOSE, "usage_statistics": PER_PURPOSE}
    assert seen["images"] == PER_PURPOSE


def test_withdrawal_killed_at_every_step(tmp_path: pathlib.Path) -> None:
    outcomes = _each_kill(tmp_path, "withdraw")
    assert len(outcomes) > 3  # the steps were really counted
    for kill_at, seen in outcomes:
        granted = seen["granted"]
        assert isinstance(granted, dict)
        events = seen["events"]
        assert isinstance(events, dict)
        # The other purpose's data is never collateral damage.
        assert events.get("usage_statistics") == PER_PURPOSE, (kill_at, seen)
        assert seen["images"] in (0, PER_PURPOSE), (kill_at, seen)
        if granted["cloud_events"]:
            # Killed before the intent was recorded: nothing happened, nothing lost.
            assert events.get("cloud_events") == PER_PURPOSE, (kill_at, seen)
            assert seen["images"] == PER_PURPOSE, (kill_at, seen)
        else:
            assert "cloud_events" not in events, (kill_at, seen)
            assert seen["live_keys"]["cloud_events"] == [], (kill_at, seen)  # type: ignore[index]
        assert seen["intents"] == [], (kill_at, seen)
    assert not outcomes[-1][1]["granted"]["cloud_events"]  # type: ignore[index]


def test_erasure_killed_at_every_step(tmp_path: pathlib.Path) -> None:
    outcomes = _each_kill(tmp_path, "erase")
    assert len(outcomes) > 3
    for kill_at, seen in outcomes:
        events = seen["events"]
        assert isinstance(events, dict)
        if events:
            # Only a kill before the intent: everything is still there, intact.
            assert events == {"cloud_events": PER_PURPOSE, "usage_statistics": PER_PURPOSE}, (
                kill_at, seen)
            assert seen["images"] == PER_PURPOSE
        else:
            assert seen["images"] == 0
            assert all(not numbers for numbers in seen["live_keys"].values()), (  # type: ignore[union-attr]
                kill_at, seen)
        assert seen["intents"] == [], (kill_at, seen)
    assert outcomes[-1][1]["events"] == {}


def test_rotation_killed_at_every_step_loses_nothing(tmp_path: pathlib.Path) -> None:
    outcomes = _each_kill(tmp_path, "rotate")
    assert len(outcomes) > 3
    for kill_at, seen in outcomes:
        assert seen["events"] == {"cloud_events": PER_PURPOSE, "usage_statistics": PER_PURPOSE}, (
            kill_at, seen)
        assert seen["images"] == PER_PURPOSE, (kill_at, seen)
        # After the restart's recovery a single key per domain is live again.
        for domain, numbers in seen["live_keys"].items():  # type: ignore[union-attr]
            assert len(numbers) == 1, (kill_at, domain, seen)
    final = outcomes[-1][1]["live_keys"]
    assert final == {"cloud_events": [2], "usage_statistics": [2], "event_snapshots": [2]}
