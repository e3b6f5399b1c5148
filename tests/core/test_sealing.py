"""The at-rest format and the key store, alone (the stores have their own tests)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.keystore import KEY_RECHECK_SECONDS, DataKeys, FileDeviceKey
from agent.layout import StateLayout
from agent.sealing import (
    DataKey,
    KeyDestroyed,
    SealedDataError,
    open_sealed,
    read_header,
    seal,
)

KEY = DataKey("face_recognition", 3, bytes(range(32)))


def test_round_trip_and_header() -> None:
    blob = seal(KEY, b"Alice Example", b"gallery:manifest")
    assert b"Alice" not in blob
    header = read_header(blob)
    assert (header.domain, header.number) == ("face_recognition", 3)
    assert open_sealed(KEY, blob, b"gallery:manifest") == b"Alice Example"


def test_a_blob_moved_to_another_place_does_not_open() -> None:
    blob = seal(KEY, b"x", b"gallery:manifest")
    with pytest.raises(SealedDataError):
        open_sealed(KEY, blob, b"outbox:cloud_events")


@pytest.mark.parametrize("index", [0, 5, 22, 30, -1])
def test_a_flipped_byte_is_refused(index: int) -> None:
    blob = bytearray(seal(KEY, b"secret payload"))
    blob[index] ^= 0x01
    with pytest.raises(SealedDataError):
        open_sealed(KEY, bytes(blob))


def test_the_header_cannot_be_relabelled_to_another_key() -> None:
    other = DataKey("face_recognition", 4, KEY.secret)
    with pytest.raises(SealedDataError):
        open_sealed(other, seal(KEY, b"x"))


@given(st.binary(max_size=200))
def test_read_header_never_raises_anything_but_sealed_data_error(raw: bytes) -> None:
    for blob in (raw, b"EAS1" + raw):
        with contextlib.suppress(SealedDataError):
            read_header(blob)


def test_keys_are_files_wrapped_by_the_device_key(tmp_path: pathlib.Path) -> None:
    layout = StateLayout(tmp_path)
    keys = DataKeys(layout)
    key = keys.current("plate_recognition")
    raw = layout.data_key("plate_recognition", key.number).read_bytes()
    assert key.secret not in raw
    assert stat.S_IMODE(os.stat(layout.device_key).st_mode) == 0o600
    # Another process (the CLI) opening the same state reads the same key.
    assert DataKeys(layout).current("plate_recognition") == key


def test_destroy_overwrites_in_place_and_numbers_are_never_reused(tmp_path: pathlib.Path) -> None:
    layout = StateLayout(tmp_path)
    keys = DataKeys(layout)
    blob = keys.seal("event_snapshots", b"jpeg")
    path = layout.data_key("event_snapshots", 1)
    handle = path.open("rb")  # keeps the inode readable after the unlink
    before = handle.read()
    assert keys.destroy("event_snapshots") == 1
    handle.seek(0)
    assert handle.read() != before  # the same inode now holds random bytes, not the key
    handle.close()
    with pytest.raises(KeyDestroyed):
        keys.open(blob)
    assert keys.current("event_snapshots").number == 2


def test_a_key_destroyed_by_another_process_is_not_used_from_cache(tmp_path: pathlib.Path) -> None:
    layout = StateLayout(tmp_path)
    clock = [100.0]
    daemon, cli = DataKeys(layout, monotonic=lambda: clock[0]), DataKeys(layout)
    blob = daemon.seal("cloud_events", b"event")
    cli.destroy("cloud_events")
    # Looked at again once KEY_RECHECK_SECONDS have passed (one stat per message was
    # a tenth of the event path), then never used again.
    clock[0] += KEY_RECHECK_SECONDS
    with pytest.raises(KeyDestroyed):
        daemon.open(blob)
    assert read_header(daemon.seal("cloud_events", b"new")).number == 2


def test_a_damaged_device_key_is_never_silently_replaced(tmp_path: pathlib.Path) -> None:
    layout = StateLayout(tmp_path)
    DataKeys(layout).current("wifi")
    layout.device_key.write_bytes(b"short")
    with pytest.raises(Exception, match="damaged"):
        FileDeviceKey(layout.device_key).wrap(b"k" * 32, b"label")
    assert layout.device_key.read_bytes() == b"short"


def test_intents_survive_and_settle(tmp_path: pathlib.Path) -> None:
    keys = DataKeys(StateLayout(tmp_path))
    keys.begin({"withdraw": "face_recognition"})
    assert DataKeys(StateLayout(tmp_path)).intents() == [{"withdraw": "face_recognition"}]
    keys.settle({"withdraw": "face_recognition"})
    assert keys.intents() == []
