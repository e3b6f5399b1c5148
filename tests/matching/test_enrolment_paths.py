"""Every way face samples enter the gallery keeps enrolment crops the same way.

Faces are enrolled only by ``edge-agent enrol face``: the remote face commands
(MQTT) list, rename and remove, and the LAN APIs (log endpoint, provisioning)
have no face data at all.  So a sample never arrives
without its kept crop (``matching.keep_enrolment_crops``), and what stops an
enrolment without ``face_recognition`` consent stops its crop too.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from agent.layout import StateLayout
from agent.matching.crops import CropFiles, EnrolmentCrop
from agent.matching.face_commands import face_commands
from agent.matching.gallery import Gallery
from agent.matching.gallery_manifest import Sealer
from drivers.cli import main
from tests.matching.real_faces import photo
from tests.support.clock import FixedClock

KEEP = "[matching]\nface_detector = 'haar'\nface_embedder = 'lbp'\nkeep_enrolment_crops = true\n"


def test_remote_face_commands_add_no_sample_and_keep_crops_in_step(tmp_path: pathlib.Path) -> None:
    gallery = Gallery.open(tmp_path / "faces", 4, keep_crops=True)
    crop = EnrolmentCrop(b"\xff\xd8jpeg", (1, 2, 3, 4))
    gallery.enrol("alice", np.eye(4)[:2], crops=[crop, crop])
    gallery.enrol("bob", np.eye(4)[2:3], crops=[crop])
    handlers = face_commands(lambda: gallery, FixedClock(0.0))
    # A remote command that added samples would have to keep their crops like the CLI.
    assert sorted(handlers) == ["face.list", "face.remove", "face.rename"]
    handlers["face.rename"]({"name": "alice", "to": "alicia"})
    handlers["face.remove"]({"name": "bob"})
    listing = handlers["face.list"]({})
    assert isinstance(listing, dict) and isinstance(listing["identities"], list)
    assert [(i["name"], i["samples"]) for i in listing["identities"]] == [("alicia", 2)]
    # The crops follow the identity: renamed with it, shredded with the removed one.
    assert gallery.crops.numbers() == {gallery.find("alicia").number}
    assert gallery.crops.read(gallery.find("alicia").number) == [crop, crop]


def test_without_consent_enrolment_keeps_no_crop_and_with_it_one_per_photo(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    state = ["--state-dir", str(state_dir)]
    config = tmp_path / "keep.toml"
    config.write_text(KEEP)
    photos = [str(photo("obama.jpg")), str(photo("obama2.jpg"))]
    assert main(["enrol", "face", "obama", *photos, "--config", str(config), *state]) != 0
    assert "consent" in capsys.readouterr().err
    faces = StateLayout(state_dir).faces_dir
    assert not faces.exists() or not any(faces.iterdir()), list(faces.iterdir())

    assert main(["consent", "grant", "--yes", "face_recognition", *state]) == 0
    assert main(["enrol", "face", "obama", *photos, "--config", str(config), *state]) == 0
    assert "2 samples, 0 skipped, 2 face crops kept (sealed)" in capsys.readouterr().out
    assert CropFiles(faces, Sealer(None)).numbers() == {0}
