"""``edge-agent consent withdraw`` of a store's purpose, killed after every durable step.

The face gallery (names, labels, vectors), the plate watch-list (plates,
labels) and the log store (lines, a rotated file, a crash record) are seeded
once, with queued events of other purposes, into a template state directory.
For each of their purposes the real CLI command runs on a copy in a child that
SIGKILLs itself after durable step K (K = 1, 2, ... until it finishes; see
``tests.core.crypto_killchild``); a second child then starts as the daemon does
(recovery, then ``reapply_withdrawals``) and reports what can still be read
(``tests.core.crypto_rig_stores``).

After every kill: either the withdrawal has not taken effect and all of the
store's data still reads, or the purpose is withdrawn and none of it does --
not through the store, and no sealed blob of it in any file of the state
directory names a key that still exists.  Nothing is ever on disk in clear,
and the other purposes' data (queued events, images, the other two stores)
always reads in full.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest

from agent.purposes import Purpose
from tests.core.crypto_rig import PER_PURPOSE
from tests.core.crypto_rig_stores import LOG_LINES, PEOPLE, PLATES, STORES, seed, write_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_STEPS = 80
WORKERS = 2  # kill points run two at a time (a 2-core device)
EVENTS = {"cloud_events": PER_PURPOSE, "usage_statistics": PER_PURPOSE}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, list[int]]]:
    root = tmp_path_factory.mktemp("stores")
    config = write_config(root / "agent.toml")
    seeded = seed(config, root / "template")
    assert all(seeded.values()), seeded
    return root, seeded


def _child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _restart(config: pathlib.Path, state: pathlib.Path) -> dict[str, Any]:
    proc = _child("tests.core.crypto_rig_stores", str(config), str(state))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _kill_and_restart(
    root: pathlib.Path, purpose: Purpose, kill_at: int
) -> tuple[int, bool, dict[str, Any]]:
    state = root / f"{purpose.value}-k{kill_at}"
    shutil.copytree(root / "template", state)
    config = root / "agent.toml"
    proc = _child(
        "tests.core.crypto_killchild", str(state), str(kill_at), "cli-withdraw", purpose.value,
        str(config),
    )
    if proc.returncode == 0:
        assert "DONE" in proc.stdout, proc.stdout
        finished = True
    else:
        assert proc.returncode == -9, proc.stderr[-3000:]
        finished = False
    seen = _restart(config, state)
    shutil.rmtree(state)
    return kill_at, finished, seen


def _each_kill(
    root: pathlib.Path, purpose: Purpose
) -> list[tuple[int, dict[str, Any]]]:
    outcomes: list[tuple[int, dict[str, Any]]] = []
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for first in range(1, MAX_STEPS, WORKERS):
            batch = pool.map(
                lambda k: _kill_and_restart(root, purpose, k), range(first, first + WORKERS)
            )
            for kill_at, finished, seen in batch:
                outcomes.append((kill_at, seen))
                if finished:
                    return outcomes
    pytest.fail(f"withdrawing {purpose.value} did not finish within {MAX_STEPS} steps")


def _store_data(seen: dict[str, Any], purpose: Purpose) -> str:
    """"all" if every seeded item of the store reads, "none" if none does, else what reads."""
    if purpose is Purpose.FACE_RECOGNITION:
        faces = seen["faces"]
        read = (faces["names"], faces["labels"], faces["vectors"])
        everything = (sorted(PEOPLE), sorted(PEOPLE.values()), 2 * len(PEOPLE))
        nothing: tuple[object, ...] = ([], [], 0)
    elif purpose is Purpose.PLATE_RECOGNITION:
        plates = seen["plates"]
        read = (plates["plates"], plates["labels"])
        everything = (sorted(PLATES), sorted(PLATES.values()))
        nothing = ([], [])
    else:
        logs = seen["logs"]
        read = (logs["lines"], logs["crash"])
        everything = (LOG_LINES, 1)
        nothing = (0, 0)
    if read == everything:
        return "all"
    if read == nothing:
        return "none"
    return f"partial: {read!r}"


def _check(
    purpose: Purpose, kill_at: int, seen: dict[str, Any], seeded: dict[str, list[int]]
) -> None:
    where = (purpose.value, kill_at, seen)
    # Nothing personal is ever on disk in clear, whatever the kill left.
    assert seen["clear"] == [], where
    # The other purposes' data is never collateral damage.
    assert seen["events"] == EVENTS, where
    assert seen["images"] == PER_PURPOSE, where
    for other in STORES:
        if other is not purpose:
            assert seen["granted"][other.value], where
            assert _store_data(seen, other) == "all", (other.value, *where)
    assert seen["intents"] == [], where
    if seen["granted"][purpose.value]:
        # The withdrawal did not take effect: nothing happened, nothing lost.
        assert _store_data(seen, purpose) == "all", where
        return
    assert _store_data(seen, purpose) == "none", where
    live = seen["live_keys"][purpose.value]
    assert not set(live) & set(seeded[purpose.value]), where
    # Every sealed blob of the purpose left in any file names a destroyed key, or
    # a key made after the withdrawal (the restarted daemon's own new log lines).
    newest_seeded = max(seeded[purpose.value])
    for number, files in seen["headers"].get(purpose.value, {}).items():
        assert int(number) not in live or int(number) > newest_seeded, (number, files, where)


def test_seeded_stores_read_in_full(
    template: tuple[pathlib.Path, dict[str, list[int]]],
) -> None:
    root, seeded = template
    state = root / "baseline"
    shutil.copytree(root / "template", state)
    seen = _restart(root / "agent.toml", state)
    assert seen["clear"] == []
    assert seen["events"] == EVENTS and seen["images"] == PER_PURPOSE
    for purpose in STORES:
        assert seen["granted"][purpose.value]
        assert _store_data(seen, purpose) == "all", (purpose.value, seen)
        assert seen["live_keys"][purpose.value] == seeded[purpose.value]
        assert set(seen["headers"][purpose.value]) == {str(n) for n in seeded[purpose.value]}


@pytest.mark.parametrize("purpose", STORES, ids=lambda p: p.value)
def test_store_withdrawal_killed_at_every_step(
    template: tuple[pathlib.Path, dict[str, list[int]]], purpose: Purpose
) -> None:
    root, seeded = template
    outcomes = _each_kill(root, purpose)
    print(f"{purpose.value}: {len(outcomes)} kill points")
    assert len(outcomes) > 3  # the steps were really counted
    for kill_at, seen in outcomes:
        _check(purpose, kill_at, seen, seeded)
    # Step 1 records the intent, so every kill is finished by the restart.
    assert not outcomes[-1][1]["granted"][purpose.value]
