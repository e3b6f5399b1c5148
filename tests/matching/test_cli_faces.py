"""``edge-agent enrol face``, ``match`` and ``gallery list|remove|rename`` end to end.

These use drawn faces, so the low-memory options (Haar + LBP, no model files);
tests/matching/test_real_faces.py runs the default dlib models on real photos.
"""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest

from drivers.cli import main
from drivers.vision.synth import render_face


def _photos(directory: pathlib.Path, identity: int, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = directory / f"id{identity}-{seed}-{i}.png"
        cv2.imwrite(str(path), render_face(identity, rng, 160, jitter=0.3))
        paths.append(str(path))
    return paths


def _low_memory(tmp_path: pathlib.Path) -> list[str]:
    config = tmp_path / "lbp.toml"
    config.write_text("[matching]\nface_detector = 'haar'\nface_embedder = 'lbp'\n")
    return ["--config", str(config)]


def test_enrol_match_list_rename_remove(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "state"), *_low_memory(tmp_path)]
    photos = tmp_path / "photos"
    photos.mkdir()
    alice = _photos(photos, 3, 4, seed=1)
    bob = _photos(photos, 7, 4, seed=2)
    # Without consent nothing is enrolled.
    assert main(["enrol", "face", "alice", *alice, *state]) == 2
    assert "not consented" in capsys.readouterr().err
    assert main(["consent", "grant", "--yes", "face_recognition", *state]) == 0
    assert main(["enrol", "face", "alice", *alice, *state]) == 0
    out = capsys.readouterr()
    assert "enrolled alice" in out.out and "4/4 images" in out.err
    assert main(["enrol", "face", "bob", *bob, "--label", "Bob", *state]) == 0
    capsys.readouterr()

    probe = _photos(photos, 3, 1, seed=9)[0]
    assert main(["match", probe, *state]) == 0
    assert capsys.readouterr().out.startswith("alice ")

    assert main(["gallery", "list", "--json", *state]) == 0
    listed = json.loads(capsys.readouterr().out)["identities"]
    assert [(i["name"], i["label"], i["samples"]) for i in listed] == [
        ("alice", None, 4),
        ("bob", "Bob", 4),
    ]
    assert main(["gallery", "rename", "bob", "--to", "robert", *state]) == 0
    assert main(["gallery", "remove", "alice", *state]) == 0
    capsys.readouterr()
    assert main(["gallery", "list", *state]) == 0
    out = capsys.readouterr().out
    assert "robert" in out and "alice" not in out and "label=Bob" in out
    assert main(["gallery", "remove", "alice", *state]) == 2


def test_withdrawn_consent_erases_the_gallery_on_next_use(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "state"), *_low_memory(tmp_path)]
    photos = _photos(tmp_path, 1, 2, seed=3)
    assert main(["consent", "grant", "--yes", "face_recognition", *state]) == 0
    assert main(["enrol", "face", "carol", *photos, *state]) == 0
    assert (tmp_path / "state" / "faces").exists()
    assert main(["consent", "withdraw", "face_recognition", *state]) == 0
    assert main(["gallery", "list", *state]) == 0
    assert "no faces enrolled" in capsys.readouterr().out
    assert not (tmp_path / "state" / "faces").exists()


def test_unreadable_and_blurred_images_are_skipped_and_reported(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((160, 160, 3), 128, np.uint8))
    state = ["--state-dir", str(tmp_path / "state"), "--assume-consent"]
    assert main(["enrol", "face", "dave", str(junk), str(flat), *state]) == 2
    err = capsys.readouterr().err
    assert "not a decodable image" in err and "face too blurred" in err
    assert "no usable face image" in err
