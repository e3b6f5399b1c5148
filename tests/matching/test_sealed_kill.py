"""The sealed gallery and snapshot files, killed after every durable step.

An enrolment, a removal and a key rotation (the real ``data.rotate_keys``
command, over the gallery and the snapshot store) run in a child that SIGKILLs
itself after step K, for K = 1, 2, ... until it finishes.  After each kill the
gallery opens with exactly the state before or after the operation, every
snapshot reads back, nothing is in clear, and a restarted daemon finishes an
interrupted rotation: one live key per domain, every file under it.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from agent.feature import Mode
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.gallery import Gallery
from agent.matching.gallery_manifest import DOMAIN as FACES
from agent.matching.search import l2_normalise
from agent.sealing import is_sealed, read_header
from drivers.camera import build_camera
from drivers.camera.snapshots import DOMAIN as SNAPSHOTS
from drivers.camera.snapshots import SealedSnapshots
from drivers.compose import compose
from drivers.vision.feature import build_faces
from tests.core.crypto_rig import rig_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_STEPS = 60
DIM = 16  # as sealed_killchild
NEWCOMER = "Newcomer Pelargonia"
PEOPLE = [f"person-{i}" for i in range(4)]
JPEGS = {f"ev{i}.jpg": b"\xff\xd8\xff\xe0" + f"SNAP-KILL-MARKER-{i}".encode() * 8 for i in range(3)}


def seed(state: pathlib.Path) -> dict[str, np.ndarray]:
    layout = StateLayout(state)
    keys = DataKeys(layout)
    gallery = Gallery.open(layout.faces_dir, DIM, keys=keys)
    rng = np.random.default_rng(1)
    rows = {}
    for name in PEOPLE:
        rows[name] = rng.standard_normal((2, DIM))
        gallery.enrol(name, rows[name], label=f"{name}-label")
    snaps = SealedSnapshots(layout.snapshots_dir, keys)
    for i, (name, image) in enumerate(JPEGS.items()):
        snaps.store(name, image, taken_at=1_700_000_000.0 + i)
    return rows


def _run(state: pathlib.Path, kill_at: int, action: str) -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.matching.sealed_killchild", str(state), str(kill_at),
         action],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    if proc.returncode == 0:
        assert "DONE" in proc.stdout
        return True
    assert proc.returncode == -9, proc.stderr[-3000:]
    return False


def _gallery_state(state: pathlib.Path) -> dict[str, np.ndarray]:
    layout = StateLayout(state)
    gallery = Gallery.open(layout.faces_dir, DIM, keys=DataKeys(layout))
    owners = gallery.store.owners()
    return {
        r.name: gallery.store.float_rows(np.flatnonzero(owners == r.number))
        for r in gallery.identities()
    }


def _assert_nothing_in_clear(state: pathlib.Path) -> None:
    needles = [NEWCOMER.encode(), *(p.encode() for p in PEOPLE), b"SNAP-KILL-MARKER"]
    for path in state.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert not [n for n in needles if n in raw], path


def _each_kill(tmp_path: pathlib.Path, action: str) -> list[tuple[int, pathlib.Path, bool]]:
    runs = []
    for kill_at in range(1, MAX_STEPS):
        state = tmp_path / f"k{kill_at}"
        seed(state)
        finished = _run(state, kill_at, action)
        runs.append((kill_at, state, finished))
        if finished:
            return runs
    pytest.fail(f"{action} did not finish within {MAX_STEPS} steps")


@pytest.mark.parametrize("action", ["enrol", "remove"])
def test_gallery_writes_killed_at_every_step(tmp_path: pathlib.Path, action: str) -> None:
    before = seed(tmp_path / "reference")
    newcomer = l2_normalise(np.random.default_rng(99).standard_normal((2, DIM)))
    after = dict(before)
    if action == "enrol":
        after[NEWCOMER] = newcomer
    else:
        del after["person-1"]
    runs = _each_kill(tmp_path, action)
    assert len(runs) > 2  # the steps were really counted
    outcomes = set()
    for kill_at, state, _ in runs:
        seen = _gallery_state(state)
        expected = before if set(seen) == set(before) else after
        assert set(seen) == set(expected), (kill_at, sorted(seen))
        for name, rows in seen.items():
            np.testing.assert_allclose(rows, l2_normalise(expected[name]), rtol=1e-6)
        outcomes.add(expected is after)
        _assert_nothing_in_clear(state)
    assert outcomes == {False, True}
    # Garbage a kill left (an unnamed segment, an old generation) goes at the next write.
    for _, state, _ in runs:
        layout = StateLayout(state)
        gallery = Gallery.open(layout.faces_dir, DIM, keys=DataKeys(layout))
        gallery.enrol("later", np.ones((1, DIM)))
        vectors = sorted(p.name for p in layout.faces_dir.glob("vectors-*"))
        assert len(vectors) <= 3, vectors


def _key_numbers(state: pathlib.Path) -> dict[str, set[int]]:
    layout = StateLayout(state)
    numbers: dict[str, set[int]] = {FACES: set(), SNAPSHOTS: set()}
    for directory in (layout.faces_dir, layout.snapshots_dir):
        for path in directory.iterdir():
            blob = path.read_bytes()
            assert is_sealed(blob), path
            header = read_header(blob)
            numbers[header.domain].add(header.number)
    return numbers


def test_rotation_killed_at_every_step(tmp_path: pathlib.Path) -> None:
    before = seed(tmp_path / "reference")
    times = {p.name: p.stat().st_mtime for p in StateLayout(tmp_path / "reference")
             .snapshots_dir.iterdir()}
    runs = _each_kill(tmp_path, "rotate")
    assert len(runs) > 4
    half_sealed = set()
    for kill_at, state, finished in runs:
        layout = StateLayout(state)
        keys = DataKeys(layout)
        numbers = _key_numbers(state)
        half_sealed |= {d for d, n in numbers.items() if n == {1, 2}}
        # Straight after the kill, before any recovery: everything still reads.
        seen = _gallery_state(state)
        assert set(seen) == set(before), kill_at
        snaps = SealedSnapshots(layout.snapshots_dir, keys)
        exported = snaps.export_personal_data()["files"]
        assert {f["name"]: f["content"] for f in exported} == {  # type: ignore[index,union-attr]
            f"snapshots/{n}": image for n, image in JPEGS.items()}, kill_at
        _assert_nothing_in_clear(state)
        # The daemon's start finishes an interrupted rotation.
        compose(rig_config(state), Mode.DAEMON, builders=(build_camera, build_faces)).close()
        # (A kill before a domain's new key was made leaves that domain unrotated.)
        live = {d: keys.live_numbers(d) for d in (FACES, SNAPSHOTS)}
        assert all(len(n) == 1 for n in live.values()), (kill_at, live)
        assert _key_numbers(state) == {d: set(n) for d, n in live.items()}, kill_at
        if finished:
            assert live == {FACES: [2], SNAPSHOTS: [2]}
        for name, rows in _gallery_state(state).items():
            np.testing.assert_allclose(rows, l2_normalise(before[name]), rtol=1e-6)
        assert {p.name: p.stat().st_mtime for p in layout.snapshots_dir.iterdir()} == times
    # Some kills fell between the files of one store: both keys were needed, and kept.
    assert half_sealed == {FACES, SNAPSHOTS}
