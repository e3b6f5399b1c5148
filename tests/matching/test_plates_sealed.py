"""The plate watch-list at rest: sealed rows, crypto-erase, rotation, migration, kills.

Real SQLite files in a real state directory; the raw bytes of every file under
it (WAL and all) are scanned for the plate and its label.
"""

from __future__ import annotations

import hashlib
import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from agent.database import open_sqlite
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.plates import MatchPolicy, PlateList, make_entry
from agent.matching.plates_service import PlateRecognition
from agent.matching.plates_store import DOMAIN, PlateStore
from agent.sealing import read_header
from drivers.cli import main
from drivers.vision.feature import StoredPlates

PLATE = "QX7JW42K"
LABEL = "Vantablack Camper"
MARKERS = (PLATE.encode(), LABEL.encode(), hashlib.sha256(PLATE.encode()).digest())


def residue(root: pathlib.Path) -> list[str]:
    """Every file under ``root`` that holds a marker (plate, label, or an unkeyed hash)."""
    return sorted(
        f"{p.relative_to(root)}: {m[:12]!r}"
        for p in root.rglob("*")
        if p.is_file()
        for m in MARKERS
        if m in p.read_bytes()
    )


def store_at(root: pathlib.Path, keys: DataKeys | None = None) -> PlateStore:
    return PlateStore.in_state_dir(root, keys=keys or DataKeys(StateLayout(root)))


def enrol(store: PlateStore) -> None:
    store.put(make_entry(PLATE, plate_list=PlateList.DENY, label=LABEL, now=5.0))
    for n in range(20):
        store.put(make_entry(f"ZZ{n:03d}", label=f"filler {n}", now=6.0))


def key_numbers(path: pathlib.Path) -> set[int]:
    """The data-key number of every row, as the column says and as the blob itself says."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key_number, body FROM watchlist").fetchall()
    assert all(read_header(body).number == number for number, body in rows)
    return {int(number) for number, _ in rows}


def test_no_plate_or_label_reaches_any_file(tmp_path: pathlib.Path) -> None:
    store = store_at(tmp_path)
    enrol(store)
    store.put(make_entry(PLATE, label=LABEL, now=7.0))  # replaced, not duplicated
    store.remove("ZZ000")
    # While the connection is open the WAL holds the latest frames: scan it too.
    assert list(tmp_path.glob("plates.sqlite*"))
    assert residue(tmp_path) == []
    entries = {e.plate: e for e in store.entries()}
    assert len(entries) == 20 and entries[PLATE].label == LABEL
    store.close()
    assert residue(tmp_path) == []
    # A second process (another DataKeys on the same key files) reads the same list.
    assert {e.plate for e in store_at(tmp_path).entries()} == set(entries)


def test_matching_works_on_the_decrypted_list(tmp_path: pathlib.Path) -> None:
    core = PlateRecognition(store_at(tmp_path), MatchPolicy(max_cost=1.0), lambda p: True)
    core.enrol(PLATE, label=LABEL, plate_list=PlateList.DENY, now=1.0)
    (match,) = core.observe("QX7JW42X")
    assert match.entry.plate == PLATE and match.entry.label == LABEL
    assert core.remove("qx7-jw42k", now=2.0).plate == PLATE
    assert core.observe(PLATE) == []
    assert residue(tmp_path) == []


def test_after_the_key_is_destroyed_the_list_reads_empty(tmp_path: pathlib.Path) -> None:
    keys = DataKeys(StateLayout(tmp_path))
    store = store_at(tmp_path, keys)
    enrol(store)
    assert keys.destroy(DOMAIN) == 1
    # The open connection, and a fresh one, both see nothing and do not crash.
    assert store.entries() == []
    assert store_at(tmp_path).entries() == []
    assert store.remove(PLATE) is False
    assert store.reseal_personal_data() == 0
    # The unreadable rows were dropped as they were found.
    with sqlite3.connect(tmp_path / "plates.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM watchlist").fetchone() == (0,)
    # A new enrolment gets a new key and works as before.
    store.put(make_entry("AB123", now=9.0))
    assert [e.plate for e in store.entries()] == ["AB123"]
    assert keys.live_numbers(DOMAIN) == [2]


def test_rotation_reseals_and_retags_every_row(tmp_path: pathlib.Path) -> None:
    keys = DataKeys(StateLayout(tmp_path))
    store = store_at(tmp_path, keys)
    enrol(store)
    before = store.entries()
    assert key_numbers(store.path) == {1}
    keys.rotate(DOMAIN)
    # Written during the rotation window: the old row is replaced, not kept beside it.
    store.put(make_entry("ZZ005", label="moved", now=8.0))
    assert len(store.entries()) == len(before)
    assert store.reseal_personal_data() == len(before) - 1
    assert store.reseal_personal_data() == 0  # idempotent
    keys.retire_older(DOMAIN)
    assert keys.live_numbers(DOMAIN) == [2]
    assert key_numbers(store.path) == {2}
    after = {e.plate: e for e in store.entries()}
    assert len(after) == len(before) and after["ZZ005"].label == "moved"
    assert after[PLATE] == next(e for e in before if e.plate == PLATE)
    # Tags follow the key: a removal by plate text still finds its row.
    assert store.remove(PLATE) is True
    assert PLATE not in {e.plate for e in store.entries()}


def test_the_registered_holder_reseals_without_matching_running(tmp_path: pathlib.Path) -> None:
    keys = DataKeys(StateLayout(tmp_path))
    store = store_at(tmp_path, keys)
    enrol(store)
    store.close()
    holder = StoredPlates(StateLayout(tmp_path), 1000, keys)
    keys.rotate(DOMAIN)
    assert holder.reseal_personal_data() == 21
    keys.retire_older(DOMAIN)
    assert key_numbers(tmp_path / "plates.sqlite") == {2}
    assert PLATE in holder.texts() and LABEL in holder.texts()
    assert StoredPlates(StateLayout(tmp_path / "none"), 1000, keys).reseal_personal_data() == 0


def write_legacy(path: pathlib.Path) -> None:
    """A watch-list as the agent wrote it before sealing: plate texts in the clear."""
    schema = """
    CREATE TABLE IF NOT EXISTS plates (
        plate TEXT PRIMARY KEY,
        list TEXT NOT NULL CHECK (list IN ('allow', 'deny')),
        label TEXT,
        format TEXT,
        created_at REAL NOT NULL
    );
    """
    conn = open_sqlite(path, schema, "old watch-list")
    rows = [(PLATE, "deny", LABEL, None, 3.0), *((f"ZZ{n:03d}", "allow", None, None, 4.0)
                                                  for n in range(50))]
    conn.executemany("INSERT INTO plates VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()


@pytest.mark.parametrize("first", ["entries", "reseal"])
def test_a_legacy_clear_watch_list_is_sealed_on_first_open(
    tmp_path: pathlib.Path, first: str
) -> None:
    write_legacy(tmp_path / "plates.sqlite")
    assert residue(tmp_path) != []
    store = store_at(tmp_path)
    if first == "reseal":
        assert store.reseal_personal_data() == 51
        assert store.reseal_personal_data() == 0
    entries = {e.plate: e for e in store.entries()}
    assert len(entries) == 51
    assert (entries[PLATE].list, entries[PLATE].label, entries[PLATE].created_at) == (
        PlateList.DENY, LABEL, 3.0
    )
    store.close()
    # The clear table is gone, and so are its bytes: secure_delete and a truncated WAL.
    assert residue(tmp_path) == []
    with sqlite3.connect(tmp_path / "plates.sqlite") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "plates" not in tables


def test_a_legacy_watch_list_is_erased_without_being_sealed(tmp_path: pathlib.Path) -> None:
    write_legacy(tmp_path / "plates.sqlite")
    store = store_at(tmp_path)
    assert store.erase_personal_data() == 51
    assert not list(tmp_path.glob("plates.sqlite*"))
    assert not (tmp_path / "keys").exists() or not list((tmp_path / "keys").glob("plate*"))


def test_the_cli_writes_only_sealed_rows(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(*argv: str) -> int:
        return main([*argv, "--state-dir", str(tmp_path)])

    assert cli("consent", "grant", "--yes", "plate_recognition") == 0
    assert cli("enrol", "plate", PLATE, "--label", LABEL, "--list", "deny") == 0
    capsys.readouterr()
    assert cli("gallery", "plates", "--json") == 0
    assert PLATE in capsys.readouterr().out
    assert residue(tmp_path) == []


KILL_CHILD = textwrap.dedent(
    """
    import pathlib, sys
    from agent.keystore import DataKeys
    from agent.layout import StateLayout
    from agent.matching.plates_store import DOMAIN, PlateStore
    root = pathlib.Path(sys.argv[1])
    keys = DataKeys(StateLayout(root))
    store = PlateStore.in_state_dir(root, keys=keys)
    while True:
        keys.rotate(DOMAIN)
        print("RESEALING", flush=True)
        store.reseal_personal_data()
    """
)


@pytest.mark.parametrize("delay_lines", [1, 3, 8])
def test_a_kill_during_a_reseal_loses_no_entry(
    tmp_path: pathlib.Path, delay_lines: int
) -> None:
    keys = DataKeys(StateLayout(tmp_path))
    store = store_at(tmp_path, keys)
    for n in range(600):
        store.put(make_entry(f"KL{n:04d}", label=f"label {n}", now=1.0))
    expected = {e.plate: e for e in store.entries()}
    store.close()
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        for _ in range(delay_lines):  # killed inside a later reseal, mid-transaction or not
            assert child.stdout.readline() == "RESEALING\n"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    # What a start does: reseal, then retire the older keys.
    fresh = DataKeys(StateLayout(tmp_path))
    after = store_at(tmp_path, fresh)
    after.reseal_personal_data()
    fresh.retire_older(DOMAIN)
    assert {e.plate: e for e in after.entries()} == expected
    assert key_numbers(after.path) == {fresh.live_numbers(DOMAIN)[-1]}
