"""Changing the face embedder: re-embedding from kept, sealed enrolment crops.

Real photos (tests/matching/real_faces.py); enrolment with Haar + LBP keeping
crops, then the default dlib models re-embed the gallery from those crops and
a second photo of the same person is identified.  The crops never reach the
disk in clear, are exported by ``data export`` and go with the gallery.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import zipfile

import pytest

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.crops import CropFiles
from agent.matching.gallery import Gallery
from agent.matching.gallery_manifest import Sealer, read_manifest
from drivers.cli import main
from tests.matching.real_faces import photo

LBP = "[matching]\nface_detector = 'haar'\nface_embedder = 'lbp'\n"


def _config(tmp_path: pathlib.Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return ["--config", str(path)]


def _kept_crops(state: pathlib.Path) -> dict[str, list[bytes]]:
    """Each identity's kept crops, read through the gallery with the device's keys."""
    layout = StateLayout(state)
    keys = DataKeys(layout)
    manifest = read_manifest(layout.faces_dir, Sealer(keys))
    assert manifest is not None
    gallery = Gallery.open(layout.faces_dir, manifest.dim, manifest.storage, keys=keys)
    return {
        r.name: [c.image for c in gallery.crops.read(r.number)]
        for r in gallery.identities()
        if r.number in gallery.crops.numbers()
    }


def _all_bytes(root: pathlib.Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def test_reembed_from_kept_crops_after_switching_lbp_to_dlib(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    state = ["--state-dir", str(state_dir)]
    lbp = _config(tmp_path, "lbp", LBP + "keep_enrolment_crops = true\n")
    dlib = _config(tmp_path, "dlib", "[matching]\nkeep_enrolment_crops = true\n")
    assert main(["consent", "grant", "--yes", "face_recognition", *state]) == 0
    for name, image in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
        assert main(["enrol", "face", name, str(photo(image)), *lbp, *state]) == 0
        assert "1 face crops kept (sealed)" in capsys.readouterr().out

    # The crops are on disk only sealed: no slice of any crop's bytes in any file.
    crops = _kept_crops(state_dir)
    assert sorted(crops) == ["biden", "obama"] and all(len(c) == 1 for c in crops.values())
    raw = _all_bytes(state_dir)
    for [image] in crops.values():
        assert image.startswith(b"\xff\xd8\xff") and len(image) > 2000
        for offset in (0, len(image) // 3, len(image) // 2, len(image) - 64):
            assert not any(image[offset : offset + 48] in blob for blob in raw), offset

    # The default embedder refuses the LBP gallery and points at reembed.
    assert main(["match", str(photo("obama2.jpg")), *dlib, *state]) == 2
    err = capsys.readouterr().err
    assert "'lbp'" in err and "'dlib'" in err and "edge-agent gallery reembed" in err, err
    assert "2 of 2" in err and "Traceback" not in err

    assert main(["gallery", "reembed", *dlib, *state]) == 0
    out = capsys.readouterr().out
    assert "re-embedded obama" in out and "re-embedded biden" in out and "(dlib)" in out, out
    assert "must re-enrol" not in out
    manifest = read_manifest(StateLayout(state_dir).faces_dir, Sealer(DataKeys(StateLayout(
        state_dir))))
    assert manifest is not None and (manifest.embedder, manifest.dim) == ("dlib", 128)
    # The same crops, still sealed, still there for the next change.
    assert _kept_crops(state_dir) == crops

    # A second photo of the enrolled person is now identified by dlib; the impostor is not.
    assert main(["match", str(photo("obama2.jpg")), *dlib, *state]) == 0
    assert capsys.readouterr().out.startswith("obama ")
    assert main(["match", str(photo("obama3.jpg")), *dlib, *state]) == 0
    assert capsys.readouterr().out.startswith("obama ")
    # ...and LBP is now the configuration refused.
    assert main(["match", str(photo("obama2.jpg")), *lbp, *state]) == 2
    assert "'dlib'" in capsys.readouterr().err

    # The listing counts the crops (no image); data export carries them as image files.
    assert main(["gallery", "list", "--json", *dlib, *state]) == 0
    listed = json.loads(capsys.readouterr().out)["identities"]
    assert [(i["name"], i["crops"], i["samples"]) for i in listed] == [
        ("obama", 1, 1), ("biden", 1, 1)
    ]
    out_zip = tmp_path / "export.zip"
    assert main(["data", "export", *dlib, *state, "-o", str(out_zip)]) == 0
    archive = zipfile.ZipFile(out_zip)
    section = json.loads(archive.read("export.json"))["holders"]["face_gallery"]
    assert "keep_enrolment_crops" in section["face_crops"]
    exported = {i["name"]: i["crops"] for i in section["identities"]}
    for name, [image] in crops.items():
        [item] = exported[name]
        ref = item["content"]
        assert ref["file"].startswith("files/face_gallery/") and ref["file"].endswith(".jpg")
        assert archive.read(ref["file"]) == image
        assert ref["sha256"] == hashlib.sha256(image).hexdigest()
        assert len(item["face_box"]) == 4

    # Removing a person shreds their crops; withdrawing consent erases the rest.
    faces_dir = StateLayout(state_dir).faces_dir
    assert main(["gallery", "remove", "biden", *dlib, *state]) == 0
    assert sorted(_kept_crops(state_dir)) == ["obama"]
    assert main(["consent", "withdraw", "face_recognition", *state]) == 0
    assert not faces_dir.exists() or not any(faces_dir.iterdir())


def test_without_kept_crops_reembed_names_who_must_re_enrol(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    state = ["--state-dir", str(state_dir), "--assume-consent"]
    keep = _config(tmp_path, "keep", LBP + "keep_enrolment_crops = true\n")
    plain = _config(tmp_path, "plain", LBP)  # keep_enrolment_crops defaults to false
    assert main(["enrol", "face", "obama", str(photo("obama.jpg")), *keep, *state]) == 0
    assert main(["enrol", "face", "biden", str(photo("biden.jpg")), *plain, *state]) == 0
    out = capsys.readouterr().out
    assert out.count("face crops kept") == 1
    assert CropFiles(StateLayout(state_dir).faces_dir, Sealer(None)).numbers() == {0}

    # The refusal counts who has crops; reembed names who has none and changes nothing.
    assert main(["match", str(photo("obama2.jpg")), *state]) == 2
    assert "1 of 2" in capsys.readouterr().err
    assert main(["gallery", "reembed", *state]) == 2
    err = capsys.readouterr().err
    assert "no enrolment crops kept for biden" in err and "must re-enrol" in err, err
    assert "obama" not in err.split("kept for", 1)[1].split(":", 1)[0]
    assert "Traceback" not in err
    assert main(["match", str(photo("obama2.jpg")), *state]) == 2  # still the LBP gallery
    capsys.readouterr()

    # --yes: obama re-embedded, biden kept by name with no samples until enrolled again.
    assert main(["gallery", "reembed", "--yes", *state]) == 0
    out = capsys.readouterr().out
    assert "re-embedded obama" in out and "no enrolment crops kept for biden" in out, out
    assert main(["gallery", "list", *state]) == 0
    listing = capsys.readouterr().out
    [biden_line] = [line for line in listing.splitlines() if line.startswith("biden")]
    assert "samples=0" in biden_line and "needs re-enrolment" in biden_line
    assert main(["match", str(photo("obama2.jpg")), *state]) == 0
    assert capsys.readouterr().out.startswith("obama ")
    biden_id = biden_line.split()[1]
    assert main(["enrol", "face", "biden", str(photo("biden.jpg")), *state]) == 0
    assert f"enrolled biden ({biden_id})" in capsys.readouterr().out  # the same identity


def test_reembed_with_nobody_having_crops_is_one_clear_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "state"), "--assume-consent"]
    plain = _config(tmp_path, "plain", LBP)
    assert main(["enrol", "face", "obama", str(photo("obama.jpg")), *plain, *state]) == 0
    capsys.readouterr()
    assert main(["match", str(photo("obama2.jpg")), *state]) == 2
    err = capsys.readouterr().err
    assert "no enrolment crops were kept" in err.lower() and "gallery remove" in err, err
    assert main(["gallery", "reembed", "--yes", *state]) == 2
    err = capsys.readouterr().err
    assert "everyone must re-enrol" in err and "Traceback" not in err, err


def test_kept_crops_are_resealed_by_a_key_rotation_and_old_copies_die(
    tmp_path: pathlib.Path,
) -> None:
    import shutil

    import numpy as np

    from agent.matching.crops import CROPS_CONTEXT, EnrolmentCrop
    from agent.matching.gallery_manifest import DOMAIN
    from agent.rights.registry import DataRegistry
    from agent.rights.requests import RightsHandlers
    from agent.sealing import KeyDestroyed, read_header
    from drivers.rights.feature import KeyRotationService
    from drivers.vision.stored_faces import StoredFaces
    from tests.support.clock import FixedClock

    layout = StateLayout(tmp_path / "state")
    keys = DataKeys(layout)
    gallery = Gallery.open(layout.faces_dir, 4, keys=keys, keep_crops=True)
    crop_a = EnrolmentCrop(b"\xff\xd8\xff" + b"ada's face" * 50, (5, 6, 20, 22))
    crop_b = EnrolmentCrop(b"\xff\xd8\xff" + b"bob's face" * 50, (1, 2, 30, 31))
    gallery.enrol("ada", np.eye(4, dtype=np.float32)[:1], crops=[crop_a])
    ada = gallery.find("ada")
    gallery.enrol("bob", np.eye(4, dtype=np.float32)[1:2], crops=[crop_b])
    bob = gallery.find("bob")
    before = tmp_path / "bob-crops.bin"
    shutil.copy(gallery.crops.path(bob.number), before)

    gallery.remove("bob")
    assert not gallery.crops.path(bob.number).exists()
    assert keys.rotation_requests() == [DOMAIN]
    registry = DataRegistry()
    registry.add_holder(StoredFaces(layout, keys))
    clock = FixedClock(100.0)
    handlers = RightsHandlers(registry, device_key=b"k" * 32, clock=clock, keys=keys)
    KeyRotationService(keys, handlers, clock).start()

    assert keys.rotation_requests() == [] and keys.live_numbers(DOMAIN) == [2]
    header = read_header(gallery.crops.path(ada.number).read_bytes())
    assert header.number == 2
    assert CropFiles(layout.faces_dir, Sealer(keys)).read(ada.number) == [crop_a]
    with pytest.raises(KeyDestroyed):
        keys.open(before.read_bytes(), CROPS_CONTEXT)
