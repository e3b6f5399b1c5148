"""The face gallery sealed at rest under the ``face_recognition`` data key.

Real files, real keys (agent.keystore), the real CLI: after any write no name,
label or vector row is on disk in clear; a destroyed key reads as an empty
gallery; a rotation reseals every file and the old key can go; a gallery of
the pre-sealing format is read and sealed; the daemon's gallery in memory
keeps matching across a rotation.
"""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.gallery import Gallery
from agent.matching.gallery_manifest import DOMAIN
from agent.matching.search import l2_normalise
from agent.matching.settings import GalleryStorage
from agent.sealing import is_sealed, read_header
from drivers.cli import main
from drivers.vision.feature import LiveFaceGallery, enrolled_names
from drivers.vision.stored_faces import StoredFaces
from drivers.vision.synth import render_face

NAME, LABEL = "Zebulon Quaxworth", "Uncle-Quax-Label"
OTHER = "Hortensia Blimbury"
DIM = 32


def _every_file(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def files_containing(root: pathlib.Path, needle: bytes) -> list[str]:
    """Every file under ``root`` (WAL and temp files included) whose raw bytes hold ``needle``."""
    return [str(p.relative_to(root)) for p in _every_file(root) if needle in p.read_bytes()]


def row_windows(rows: np.ndarray) -> list[bytes]:
    """16-byte windows of each stored row, as float32 and as the int8 codes would be."""
    windows = []
    for row in l2_normalise(np.atleast_2d(rows)):
        windows.append(row.astype("<f4").tobytes()[:16])
        codes = np.round(row / (np.abs(row).max() / 127.0)).astype(np.int8)
        windows.append(codes.tobytes()[:16])
    return windows


def assert_no_plaintext(root: pathlib.Path, rows: np.ndarray, *texts: str) -> None:
    for text in texts:
        assert files_containing(root, text.encode()) == [], text
    for window in row_windows(rows):
        assert files_containing(root, window) == []


def gallery_headers(layout: StateLayout) -> list[tuple[str, int]]:
    """(domain, key number) of every file in the gallery directory; all must be sealed."""
    found = []
    for path in _every_file(layout.faces_dir):
        blob = path.read_bytes()
        assert is_sealed(blob), path.name
        header = read_header(blob)
        found.append((header.domain, header.number))
    return found


@pytest.fixture
def state(tmp_path: pathlib.Path) -> tuple[StateLayout, DataKeys]:
    layout = StateLayout(tmp_path / "state")
    return layout, DataKeys(layout)


@pytest.mark.parametrize("storage", list(GalleryStorage))
def test_no_name_label_or_vector_is_written_in_clear(
    state: tuple[StateLayout, DataKeys], storage: GalleryStorage
) -> None:
    layout, keys = state
    rng = np.random.default_rng(1)
    mine = rng.standard_normal((3, DIM))
    other = rng.standard_normal((2, DIM))
    gallery = Gallery.open(layout.faces_dir, DIM, storage, keys=keys)
    gallery.enrol(NAME, mine[:2], label=LABEL)
    gallery.enrol(OTHER, other)
    gallery.enrol(NAME, mine[2:])  # a segment of its own (merges keep each > 2x the next)
    gallery.rename(OTHER, label="Cousin-Label-Blim")
    gallery.remove(OTHER)  # a new generation; the old one is shredded
    assert_no_plaintext(layout.root, np.vstack([mine, other]), NAME, LABEL, OTHER,
                        "Cousin-Label-Blim")
    headers = gallery_headers(layout)
    assert headers and {d for d, _ in headers} == {DOMAIN}
    # Read back through a fresh process's view: decrypted into memory once.
    again = Gallery.open(layout.faces_dir, DIM, storage, keys=keys)
    assert [(r.name, r.label) for r in again.identities()] == [(NAME, LABEL)]
    assert again.sample_counts() == {0: 3}
    assert again.identify(mine[1], 0.5).identity == again.find(NAME)
    assert enrolled_names(layout, keys) == [NAME, LABEL]
    exported = StoredFaces(layout, keys).export_personal_data()
    assert exported == {"identities": [
        {"id": again.find(NAME).id, "name": NAME, "label": LABEL, "samples": 3}
    ]}


def test_many_enrolments_keep_few_files(state: tuple[StateLayout, DataKeys]) -> None:
    layout, keys = state
    rng = np.random.default_rng(2)
    gallery = Gallery.open(layout.faces_dir, 8, keys=keys, max_identities=1000)
    rows = rng.standard_normal((200, 8))
    for i in range(200):
        gallery.enrol(f"p{i}", rows[i])
    segments = [p for p in layout.faces_dir.iterdir() if p.name.startswith("vectors-")]
    assert len(segments) <= 9, sorted(p.name for p in segments)  # log2(200) + 1
    assert not [p for p in layout.faces_dir.iterdir() if p.name.endswith(".tmp")]
    again = Gallery.open(layout.faces_dir, 8, keys=keys)
    np.testing.assert_allclose(again.store.vectors(), l2_normalise(rows), rtol=1e-6)
    assert again.store.owners().tolist() == list(range(200))


def test_destroyed_key_reads_as_an_empty_gallery(state: tuple[StateLayout, DataKeys]) -> None:
    layout, keys = state
    rng = np.random.default_rng(3)
    running = Gallery.open(layout.faces_dir, DIM, keys=keys)
    running.enrol(NAME, rng.standard_normal((2, DIM)), label=LABEL)
    assert keys.destroy(DOMAIN) == 1
    # The stores' readers: the names for redaction, the export, a new process, the daemon.
    assert enrolled_names(layout, keys) == []
    assert StoredFaces(layout, keys).export_personal_data() == {"identities": []}
    assert _every_file(layout.faces_dir) == []  # the leftovers went on the way
    fresh = Gallery.open(layout.faces_dir, DIM, keys=keys)
    assert fresh.identities() == []
    assert running.refresh() is True and running.identities() == []
    # And it keeps working, under a new key.
    fresh.enrol(OTHER, rng.standard_normal((1, DIM)))
    assert keys.live_numbers(DOMAIN) == [2]
    assert {n for _, n in gallery_headers(layout)} == {2}


def test_destroyed_key_with_files_left_behind_does_not_crash(
    state: tuple[StateLayout, DataKeys],
) -> None:
    """A withdrawal destroyed the key and was killed before the purge: files remain."""
    layout, keys = state
    Gallery.open(layout.faces_dir, DIM, keys=keys).enrol(NAME, np.ones((1, DIM)))
    saved = {p.name: p.read_bytes() for p in _every_file(layout.faces_dir)}
    keys.destroy(DOMAIN)
    for name, blob in saved.items():
        (layout.faces_dir / name).write_bytes(blob)
    assert enrolled_names(layout, keys) == []
    assert Gallery.open(layout.faces_dir, DIM, keys=keys).identities() == []
    assert _every_file(layout.faces_dir) == []


@pytest.mark.parametrize("storage", list(GalleryStorage))
def test_rotation_reseals_every_file(
    state: tuple[StateLayout, DataKeys], storage: GalleryStorage
) -> None:
    layout, keys = state
    rng = np.random.default_rng(4)
    gallery = Gallery.open(layout.faces_dir, DIM, storage, keys=keys)
    for i in range(5):
        gallery.enrol(f"person-{i}", rng.standard_normal((1 + i % 2, DIM)), label=f"L{i}")
    gallery.remove("person-1")
    gallery.enrol("person-9", rng.standard_normal((3, DIM)))
    before = np.array(gallery.store.vectors())
    files = len(_every_file(layout.faces_dir))
    old = keys.current(DOMAIN).number

    keys.rotate(DOMAIN)
    holder = StoredFaces(layout, keys)
    assert holder.reseal_personal_data() == files
    assert holder.reseal_personal_data() == 0  # idempotent
    assert keys.retire_older(DOMAIN) == 1

    assert {n for _, n in gallery_headers(layout)} == {old + 1}
    again = Gallery.open(layout.faces_dir, DIM, storage, keys=keys)
    np.testing.assert_array_equal(again.store.vectors(), before)
    assert [r.name for r in again.identities()] == [
        "person-0", "person-2", "person-3", "person-4", "person-9"]
    # The gallery opened before the rotation still writes, now under the new key.
    gallery.enrol("person-10", rng.standard_normal((1, DIM)))
    assert {n for _, n in gallery_headers(layout)} == {old + 1}


def test_rotation_through_the_running_gallery_keeps_it_in_memory(
    state: tuple[StateLayout, DataKeys],
) -> None:
    layout, keys = state
    rng = np.random.default_rng(5)
    running = Gallery.open(layout.faces_dir, DIM, keys=keys)
    probe = rng.standard_normal((2, DIM))
    running.enrol(NAME, probe, label=LABEL)
    holder = LiveFaceGallery(StoredFaces(layout, keys), running)
    keys.rotate(DOMAIN)
    assert holder.reseal_personal_data() == 2  # the segment and the manifest
    keys.retire_older(DOMAIN)
    # Its own rewrite is no change from another process: nothing to reload.
    assert running.refresh() is False
    assert running.identify(probe[0], 0.5).identity == running.find(NAME)
    assert holder.export_personal_data()["identities"][0]["name"] == NAME  # type: ignore[index]
    assert holder.erase_personal_data() == 1
    assert not layout.faces_dir.exists()


def _write_legacy(directory: pathlib.Path, rows: np.ndarray, storage: GalleryStorage) -> None:
    """A gallery exactly as the pre-sealing code left it (format 1, memory-mapped files)."""
    directory.mkdir(parents=True)
    normalised = l2_normalise(rows)
    capacity = 64  # the old code grew the files past the committed count
    owners = np.zeros(capacity, "<i4")
    owners[: len(rows)] = [0, 0, 1][: len(rows)]
    if storage is GalleryStorage.INT8:
        scales = (np.abs(normalised).max(axis=1) / 127.0).astype("<f4")
        codes = np.zeros((capacity, rows.shape[1]), "i1")
        codes[: len(rows)] = np.round(normalised / scales[:, None])
        padded = np.zeros(capacity, "<f4")
        padded[: len(rows)] = scales
        (directory / "vectors-0.bin").write_bytes(codes.tobytes())
        (directory / "scales-0.bin").write_bytes(padded.tobytes())
    else:
        vectors = np.zeros((capacity, rows.shape[1]), "<f4")
        vectors[: len(rows)] = normalised
        (directory / "vectors-0.bin").write_bytes(vectors.tobytes())
    (directory / "owners-0.bin").write_bytes(owners.tobytes())
    manifest = {
        "format": 1, "dim": rows.shape[1], "storage": storage.value, "generation": 0,
        "count": len(rows), "next_number": 2,
        "identities": [
            {"number": 0, "id": "id-00000000000000aa", "name": NAME, "label": LABEL},
            {"number": 1, "id": "id-00000000000000bb", "name": OTHER, "label": None},
        ],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("storage", list(GalleryStorage))
def test_a_pre_sealing_gallery_is_read_and_sealed_by_the_reseal(
    state: tuple[StateLayout, DataKeys], storage: GalleryStorage
) -> None:
    layout, keys = state
    rows = np.random.default_rng(6).standard_normal((3, DIM))
    _write_legacy(layout.faces_dir, rows, storage)
    holder = StoredFaces(layout, keys)
    assert [i["name"] for i in holder.export_personal_data()["identities"]] == [  # type: ignore[union-attr]
        NAME, OTHER]
    assert enrolled_names(layout, keys) == [NAME, LABEL, OTHER]
    old = Gallery.open(layout.faces_dir, DIM, storage, keys=keys)
    before = np.array(old.store.float_rows(np.arange(3)))
    assert old.identify(rows[2], 0.5).identity == old.find(OTHER)

    assert holder.reseal_personal_data() == 2  # one segment and the manifest
    assert sorted(p.name for p in layout.faces_dir.iterdir()) == [
        "manifest.json", "vectors-1-0.bin"]
    assert_no_plaintext(layout.root, rows, NAME, LABEL, OTHER)
    assert holder.reseal_personal_data() == 0
    migrated = Gallery.open(layout.faces_dir, DIM, storage, keys=keys)
    np.testing.assert_array_equal(migrated.store.float_rows(np.arange(3)), before)
    assert [(r.id, r.name, r.label) for r in migrated.identities()] == [
        ("id-00000000000000aa", NAME, LABEL), ("id-00000000000000bb", OTHER, None)]


def test_a_pre_sealing_gallery_is_sealed_by_the_next_enrolment(
    state: tuple[StateLayout, DataKeys],
) -> None:
    layout, keys = state
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((3, DIM))
    _write_legacy(layout.faces_dir, rows, GalleryStorage.FLOAT32)
    gallery = Gallery.open(layout.faces_dir, DIM, keys=keys)
    gallery.enrol("newcomer", rng.standard_normal((1, DIM)))
    assert_no_plaintext(layout.root, rows, NAME, LABEL, OTHER, "newcomer")
    again = Gallery.open(layout.faces_dir, DIM, keys=keys)
    assert [r.name for r in again.identities()] == [NAME, OTHER, "newcomer"]
    assert again.sample_counts() == {0: 2, 1: 1, 2: 1}


def test_a_clear_gallery_written_without_keys_is_sealed_by_the_reseal(
    state: tuple[StateLayout, DataKeys],
) -> None:
    layout, keys = state
    rows = np.random.default_rng(8).standard_normal((2, DIM))
    Gallery.open(layout.faces_dir, DIM).enrol(NAME, rows, label=LABEL)
    assert files_containing(layout.root, NAME.encode())  # the test's premise
    assert StoredFaces(layout, keys).reseal_personal_data() == 2
    assert_no_plaintext(layout.root, rows, NAME, LABEL)
    assert [r.name for r in Gallery.open(layout.faces_dir, DIM, keys=keys).identities()] == [NAME]


def test_the_cli_writes_a_sealed_gallery_and_reads_it_back(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "state"
    state = ["--state-dir", str(root)]
    rng = np.random.default_rng(9)
    photos = []
    for i in range(3):
        path = tmp_path / f"face-{i}.png"
        cv2.imwrite(str(path), render_face(4, rng, 160, jitter=0.3))
        photos.append(str(path))
    assert main(["consent", "grant", "--yes", "face_recognition", *state]) == 0
    assert main(["enrol", "face", NAME, *photos, "--label", LABEL, *state]) == 0
    assert main(["gallery", "rename", NAME, "--label", "Second-Label-Q", *state]) == 0
    capsys.readouterr()
    for text in (NAME, LABEL, "Second-Label-Q"):
        assert files_containing(root, text.encode()) == [], text
    assert main(["gallery", "list", "--json", *state]) == 0
    [listed] = json.loads(capsys.readouterr().out)["identities"]
    assert (listed["name"], listed["label"], listed["samples"]) == (NAME, "Second-Label-Q", 3)
    assert main(["match", photos[0], *state]) == 0
    assert capsys.readouterr().out.startswith(NAME)
    out = tmp_path / "export.json"
    assert main(["data", "export", "--format", "json", *state, "-o", str(out)]) == 0
    [exported] = json.loads(out.read_text())["holders"]["face_gallery"]["identities"]
    assert exported["name"] == NAME
    # Withdrawal destroys the key, then the files go.
    assert main(["consent", "withdraw", "face_recognition", *state]) == 0
    assert _every_file(root / "faces") == []
    assert DataKeys(StateLayout(root)).live_numbers(DOMAIN) == []
