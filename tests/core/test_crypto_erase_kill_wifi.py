"""The saved Wi-Fi network under key rotation and account erasure, killed after every durable step.

The network the device joined (``provisioning/wifi.json``, sealed under the
``wifi`` data key: its SSID and that it is secured, never the passphrase) is
seeded with the bound account, queued events of two purposes (one with
images) and pending rotation requests into a template state directory
(``tests.core.crypto_rig_wifi``).  Each operation runs on a copy in a child
that SIGKILLs itself after durable step K (K = 1, 2, ... until it finishes;
``tests.core.crypto_killchild``); a second child then starts as the daemon
does (recovery, then ``reapply_withdrawals``) and reports what can be read.

Key rotation, by the daemon's ``key-rotation`` service (the pending requests,
``wifi`` among them) and by ``data.rotate_keys`` (every domain): whatever the
kill, the network and the events read back in full, one key per domain is
live after the restart and ``wifi.json`` is sealed under it -- a rotation
never destroys a key whose data is still wanted.

``edge-agent data erase --account``: either nothing is erased yet (the
network, the account and the events all read) or all of it is, and then no
file holds a sealed blob under a key that still exists.  The device's own
identity (``binding.json``) is never erased.  Whatever the kill, neither the
SSID nor the passphrase is ever on disk in clear.
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

from agent.purposes import WIFI_DOMAIN
from tests.core.crypto_rig import PER_PURPOSE
from tests.core.crypto_rig_wifi import ACCOUNT, SSID, seed, write_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_STEPS = 60
WORKERS = 2  # kill points run two at a time (a 2-core device)
EVENTS = {"cloud_events": PER_PURPOSE, "usage_statistics": PER_PURPOSE}
WIFI = {"ssid": SSID, "hidden": True, "secured": True, "file": True, "account": ACCOUNT,
        "binding": True}
ROTATIONS = ("wifi-rotation-service", "wifi-rotate-keys")

Seeded = tuple[pathlib.Path, dict[str, list[int]]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    root = tmp_path_factory.mktemp("wifi")
    write_config(root / "agent.toml")
    seeded = seed(root / "template")
    assert seeded[WIFI_DOMAIN] == [1], seeded
    return root, seeded


def _child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _restart(config: pathlib.Path, *states: pathlib.Path) -> list[dict[str, Any]]:
    """What a daemon started on each state reads (one process, each state in turn)."""
    proc = _child("tests.core.crypto_rig_wifi", str(config), *map(str, states))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(seen) == len(states), proc.stdout[-3000:]
    return seen


def _kill(root: pathlib.Path, action: str, kill_at: int) -> tuple[pathlib.Path, bool]:
    """Run ``action`` on a fresh copy, killed after step ``kill_at``; True if it finished."""
    state = root / f"{action}-k{kill_at}"
    shutil.copytree(root / "template", state)
    proc = _child(
        "tests.core.crypto_killchild", str(state), str(kill_at), action, str(root / "agent.toml")
    )
    if proc.returncode == 0:
        assert "DONE" in proc.stdout, proc.stdout
        return state, True
    assert proc.returncode == -9, proc.stderr[-3000:]
    return state, False


def _each_kill(root: pathlib.Path, action: str) -> list[tuple[int, dict[str, Any]]]:
    """Kill after K = 1, 2, ... until the action finishes, then restart on every state."""
    states: list[pathlib.Path] = []
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for first in range(1, MAX_STEPS, WORKERS):
            batch = list(pool.map(
                lambda k: _kill(root, action, k), range(first, first + WORKERS)
            ))
            done_at = next((i for i, (_, done) in enumerate(batch) if done), None)
            states += [state for state, _ in batch[: None if done_at is None else done_at + 1]]
            if done_at is not None:
                for extra, _ in batch[done_at + 1 :]:
                    shutil.rmtree(extra)
                break
        else:
            pytest.fail(f"{action} did not finish within {MAX_STEPS} steps")
        # The restarts, split between the workers: each state was killed (or done) already.
        chunks = [states[i::WORKERS] for i in range(WORKERS)]
        read = list(pool.map(lambda chunk: _restart(root / "agent.toml", *chunk), chunks))
    seen = {
        state: s
        for chunk, found in zip(chunks, read, strict=True)
        for state, s in zip(chunk, found, strict=True)
    }
    for state in states:
        shutil.rmtree(state)
    return [(k, seen[state]) for k, state in enumerate(states, start=1)]


def _wifi_headers(seen: dict[str, Any]) -> dict[str, list[str]]:
    return seen["headers"].get(WIFI_DOMAIN, {})  # type: ignore[no-any-return]


def test_seeded_state_reads_in_full(template: Seeded) -> None:
    root, seeded = template
    state = root / "baseline"
    shutil.copytree(root / "template", state)
    (seen,) = _restart(root / "agent.toml", state)
    assert seen["clear"] == []
    assert seen["wifi"] == WIFI
    assert seen["events"] == EVENTS and seen["images"] == PER_PURPOSE
    assert seen["all_live_keys"] == seeded
    assert _wifi_headers(seen) == {"1": ["provisioning/wifi.json"]}
    assert seen["rotation_requests"] == [WIFI_DOMAIN, "cloud_events"]


@pytest.mark.parametrize("action", ROTATIONS)
def test_rotation_killed_at_every_step_loses_nothing(template: Seeded, action: str) -> None:
    root, seeded = template
    outcomes = _each_kill(root, action)
    print(f"{action}: {len(outcomes)} kill points")
    assert len(outcomes) > 3  # the steps were really counted
    for kill_at, seen in outcomes:
        where = (action, kill_at, seen)
        assert seen["clear"] == [], where
        # A rotation never loses wanted data: the network and the events read in full.
        assert seen["wifi"] == WIFI, where
        assert seen["events"] == EVENTS, where
        assert seen["images"] == PER_PURPOSE, where
        assert seen["intents"] == [], where
        # The restart finished any rotation: one key per domain, wifi.json under it.
        live = seen["all_live_keys"]
        for domain, numbers in seeded.items():
            assert len(live[domain]) == (1 if numbers else len(live[domain][:1])), (domain, *where)
        (wifi_key,) = live[WIFI_DOMAIN]
        assert _wifi_headers(seen) == {str(wifi_key): ["provisioning/wifi.json"]}, where
    final = outcomes[-1][1]
    assert final["all_live_keys"][WIFI_DOMAIN] == [2]
    assert final["all_live_keys"]["cloud_events"] == [2]
    if action == "wifi-rotation-service":
        assert final["rotation_requests"] == []  # carried out, then cleared


def _state(seen: dict[str, Any]) -> str:
    """"kept" if the network, the account and the events all read, "erased" if none does."""
    wifi = seen["wifi"]
    if wifi == WIFI and seen["events"] == EVENTS and seen["images"] == PER_PURPOSE:
        return "kept"
    erased = {**WIFI, "ssid": None, "hidden": None, "secured": False, "file": False,
              "account": None}
    if wifi == erased and seen["events"] == {} and seen["images"] == 0:
        return "erased"
    return "partial"


def test_account_erasure_killed_at_every_step(template: Seeded) -> None:
    root, seeded = template
    outcomes = _each_kill(root, "cli-erase-account")
    print(f"cli-erase-account: {len(outcomes)} kill points")
    assert len(outcomes) > 3
    for kill_at, seen in outcomes:
        where = ("cli-erase-account", kill_at, seen)
        assert seen["clear"] == [], where
        assert seen["intents"] == [], where
        # The device's identity is not the account's data: never erased.
        assert seen["wifi"]["binding"], where
        state = _state(seen)
        if state == "kept":
            # Killed before the intent: nothing happened, nothing lost.
            assert seen["all_live_keys"] == seeded, where
            continue
        assert state == "erased", where
        live = seen["all_live_keys"]
        for domain, numbers in seeded.items():
            assert not set(live[domain]) & set(numbers), (domain, *where)
        # No sealed blob left in any file names a key that still exists.
        for domain, by_number in seen["headers"].items():
            for number, files in by_number.items():
                assert int(number) not in live.get(domain, []), (domain, number, files, where)
    assert _state(outcomes[-1][1]) == "erased"
