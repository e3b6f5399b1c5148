"""Removing one plate (or person) rotates its purpose's key: its old copies die with the old key.

A removal deletes the row, but the row's sealed bytes may survive in freed WAL
frames under the key that is still live.  The removal records a rotation
request; the daemon's key-rotation service reseals every store and destroys
the old key, so a copy of the database taken before the removal no longer
opens — while everything still listed stays readable.
"""

from __future__ import annotations

import pathlib
import shutil

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.plates import PlateList, make_entry
from agent.matching.plates_store import DOMAIN, PlateStore
from agent.rights.registry import DataRegistry
from agent.rights.requests import RightsHandlers
from drivers.rights.feature import KeyRotationService
from drivers.vision.feature import StoredPlates
from tests.support.clock import FixedClock

REMOVED, KEPT = "QX7JW42K", "AB12CDE"


def test_a_removed_plate_becomes_unreadable_in_old_copies(tmp_path: pathlib.Path) -> None:
    layout = StateLayout(tmp_path / "state")
    keys = DataKeys(layout)
    store = PlateStore.in_state_dir(layout.root, keys=keys)
    store.put(make_entry(REMOVED, plate_list=PlateList.DENY, label="gone", now=1.0))
    store.put(make_entry(KEPT, plate_list=PlateList.ALLOW, label="stays", now=1.0))
    store.close()
    # What a raw copy of the disk holds before the removal.
    before = tmp_path / "before.sqlite"
    shutil.copy(layout.plates_db, before)

    store = PlateStore.in_state_dir(layout.root, keys=keys)
    assert store.remove(REMOVED)
    store.close()
    assert keys.rotation_requests() == [DOMAIN]

    registry = DataRegistry()
    registry.add_holder(StoredPlates(layout, 1000, keys))
    clock = FixedClock(100.0)
    handlers = RightsHandlers(registry, device_key=b"k" * 32, clock=clock, keys=keys)
    service = KeyRotationService(keys, handlers, clock)
    service.start()  # a request left behind is done at start

    assert keys.rotation_requests() == []
    assert keys.live_numbers(DOMAIN) == [2]
    kept = PlateStore.in_state_dir(layout.root, keys=keys)
    assert [e.plate for e in kept.entries()] == [KEPT]
    kept.close()
    # The copy from before the removal: its rows were sealed under key 1, now destroyed.
    shutil.copy(before, layout.plates_db)
    for suffix in ("-wal", "-shm"):
        pathlib.Path(str(layout.plates_db) + suffix).unlink(missing_ok=True)
    old = PlateStore.in_state_dir(layout.root, keys=keys)
    assert old.entries() == []
    old.close()
