"""Snapshot files sealed at rest under the ``event_snapshots`` data key.

Real files, real keys, the real CLI and composition: a stored picture is
ciphertext on disk and a picture in the export; a destroyed key reads as no
picture; a rotation (the ``data.rotate_keys`` command) reseals every file and
keeps its time, so retention still counts from when it was taken; a clear file
from before sealing is exported and sealed by the reseal; withdrawal leaves
nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import zipfile

import pytest

from agent.config import AgentConfig, CameraSettings, MqttSettings
from agent.errors import BadDataError
from agent.feature import Mode
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.sealing import is_sealed, read_header
from drivers.camera.snapshots import DOMAIN, SealedSnapshots
from drivers.cli import main
from drivers.compose import compose

MARKER = b"SNAPSHOT-SEALED-MARKER-4471"
JPEG = b"\xff\xd8\xff\xe0" + MARKER * 30 + b"\xff\xd9"
T0 = 1_700_000_000.0


def files_containing(root: pathlib.Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*"))
            if p.is_file() and needle in p.read_bytes()]


def config(state: pathlib.Path) -> AgentConfig:
    return AgentConfig(
        state_dir=state, mqtt=MqttSettings(enabled=False), camera=CameraSettings(enabled=False)
    )


@pytest.fixture
def snaps(tmp_path: pathlib.Path) -> SealedSnapshots:
    layout = StateLayout(tmp_path / "state")
    return SealedSnapshots(layout.snapshots_dir, DataKeys(layout))


def test_a_stored_snapshot_is_ciphertext_on_disk_and_a_picture_in_the_export(
    tmp_path: pathlib.Path, snaps: SealedSnapshots
) -> None:
    state = tmp_path / "state"
    path = snaps.store("event-0001.jpg", JPEG, taken_at=T0)
    assert path.stat().st_mtime == T0
    assert files_containing(state, MARKER) == []
    blob = path.read_bytes()
    assert is_sealed(blob) and read_header(blob).domain == DOMAIN
    assert snaps.read(path) == JPEG
    out = tmp_path / "export.zip"
    assert main(["data", "export", "--state-dir", str(state), "-o", str(out)]) == 0
    archive = zipfile.ZipFile(out)
    [item] = json.loads(archive.read("export.json"))["holders"]["snapshots"]["files"]
    assert item["name"] == "snapshots/event-0001.jpg" and item["bytes"] == len(JPEG)
    assert archive.read(item["content"]["file"]) == JPEG


@pytest.mark.parametrize("name", ["", ".hidden.jpg", "../up.jpg", "a/b.jpg", "x" * 200, "a\nb"])
def test_bad_names_are_refused(snaps: SealedSnapshots, name: str) -> None:
    with pytest.raises(BadDataError):
        snaps.store(name, JPEG)


def test_a_destroyed_key_reads_as_no_picture_and_the_leftover_goes(
    snaps: SealedSnapshots,
) -> None:
    snaps.store("a.jpg", JPEG, taken_at=T0)
    snaps.store("b.jpg", JPEG, taken_at=T0)
    snaps.keys.destroy(DOMAIN)
    assert snaps.export_personal_data() == {"files": []}
    assert list(snaps.files()) == []
    assert snaps.reseal_personal_data() == 0
    assert snaps.purge_older_than(T0 + 1) == 0
    snaps.store("c.jpg", JPEG)  # under a new key
    assert [f["name"] for f in snaps.export_personal_data()["files"]] == [  # type: ignore[index]
        "snapshots/c.jpg"]


def test_a_damaged_file_is_reported_not_fatal(snaps: SealedSnapshots) -> None:
    path = snaps.store("a.jpg", JPEG)
    snaps.store("b.jpg", JPEG)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    files = {f["name"]: f for f in snaps.export_personal_data()["files"]}  # type: ignore[union-attr,index]
    assert "fails authentication" in files["snapshots/a.jpg"]["omitted"]
    assert files["snapshots/b.jpg"]["content"] == JPEG
    snaps.keys.rotate(DOMAIN)
    assert snaps.reseal_personal_data() == 1  # b; a cannot be carried over


def test_rotation_reseals_every_snapshot_and_keeps_its_time(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state"
    layout = StateLayout(state)
    snaps = SealedSnapshots(layout.snapshots_dir, DataKeys(layout))
    for i in range(3):
        snaps.store(f"ev{i}.jpg", JPEG + bytes([i]), taken_at=T0 + i)
    (layout.snapshots_dir / "legacy.jpg").write_bytes(JPEG)  # from before sealing
    os.utime(layout.snapshots_dir / "legacy.jpg", (T0 - 100, T0 - 100))
    times = {p.name: p.stat().st_mtime_ns for p in layout.snapshots_dir.iterdir()}
    cli = compose(config(state), Mode.CLI)
    try:
        result = cli.commands["data.rotate_keys"]({"domains": [DOMAIN]})
        assert result["rotated"] == [DOMAIN] and result["failed"] == []  # type: ignore[index]
        assert cli.keys.live_numbers(DOMAIN) == [2]
    finally:
        cli.close()
    assert files_containing(state, MARKER) == []
    for path in layout.snapshots_dir.iterdir():
        assert read_header(path.read_bytes()).number == 2, path.name
    assert {p.name: p.stat().st_mtime_ns for p in layout.snapshots_dir.iterdir()} == times
    assert snaps.reseal_personal_data() == 0
    exported = {f["name"]: f["content"] for f in snaps.export_personal_data()["files"]}  # type: ignore[index,union-attr]
    assert exported == {
        **{f"snapshots/ev{i}.jpg": JPEG + bytes([i]) for i in range(3)},
        "snapshots/legacy.jpg": JPEG,
    }
    # Retention still counts from when each was taken, not from the rotation.
    assert snaps.purge_older_than(T0 + 1.5) == 3  # ev0, ev1 and the legacy file (older)
    assert sorted(p.name for p in layout.snapshots_dir.iterdir()) == ["ev2.jpg"]


def test_a_clear_snapshot_from_before_sealing_is_exported_then_sealed(
    snaps: SealedSnapshots,
) -> None:
    snaps.directory.mkdir(parents=True)
    (snaps.directory / "old.jpg").write_bytes(JPEG)
    [item] = snaps.export_personal_data()["files"]  # type: ignore[misc]
    assert item["content"] == JPEG  # type: ignore[index]
    assert snaps.reseal_personal_data() == 1
    assert files_containing(snaps.directory.parent, MARKER) == []
    assert snaps.read(snaps.directory / "old.jpg") == JPEG


def test_withdrawal_destroys_the_key_and_the_files(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state"
    layout = StateLayout(state)
    args = ["--state-dir", str(state)]
    assert main(["consent", "grant", "--yes", "event_snapshots", *args]) == 0
    snaps = SealedSnapshots(layout.snapshots_dir, DataKeys(layout))
    snaps.store("ev1.jpg", JPEG)
    saved = (layout.snapshots_dir / "ev1.jpg").read_bytes()
    assert main(["consent", "withdraw", "event_snapshots", *args]) == 0
    assert list(layout.snapshots_dir.iterdir()) == []
    assert DataKeys(layout).live_numbers(DOMAIN) == []
    # A copy the file system kept is ciphertext with no key: it reads as nothing.
    (layout.snapshots_dir / "ev1.jpg").write_bytes(saved)
    assert snaps.export_personal_data() == {"files": []}
    assert list(layout.snapshots_dir.iterdir()) == []
