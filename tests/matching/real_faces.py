"""Real face photos for the tests, taken from a PyPI package at test time (none committed).

Source: the sdist of ``face_recognition`` 1.3.0 (MIT-licensed code by Adam
Geitgey) ships ``tests/test_images/``: three different photos of Barack Obama,
one of Joe Biden and a partly hidden face (photos of US officials, public
domain as US government works).  They are fetched once with pip from PyPI,
checked against the sdist's SHA-256 and cached beside the virtualenv
(``<venv>/test-data``), so later runs need no network.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys
import tarfile
import tempfile

import cv2
import numpy as np
import pytest

from tests.support.pypi_files import pip_download

SDIST = "face_recognition-1.3.0.tar.gz"
SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
MEMBER_DIR = "face_recognition-1.3.0/tests/test_images/"
PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama_partial_face.jpg")
CACHE = pathlib.Path(sys.prefix) / "test-data" / "face_recognition-1.3.0"


def _fetch(target: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        try:
            sdist = pip_download("face_recognition==1.3.0", pathlib.Path(scratch), binary=False,
                                 pattern=SDIST)
        except RuntimeError as exc:
            pytest.fail(f"cannot fetch the face photos: {exc}", pytrace=False)
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            pytest.fail(f"{SDIST} has SHA-256 {digest}, expected {SDIST_SHA256}", pytrace=False)
        unpacked = pathlib.Path(scratch) / "photos"
        unpacked.mkdir()
        with tarfile.open(sdist) as archive:
            for name in PHOTOS:
                member = archive.extractfile(MEMBER_DIR + name)
                assert member is not None
                (unpacked / name).write_bytes(member.read())
        try:
            os.replace(unpacked, target)
        except OSError:
            if not target.is_dir():  # another process won the race: theirs is as good
                raise


def photo_dir() -> pathlib.Path:
    if not all((CACHE / name).is_file() for name in PHOTOS):
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        _fetch(CACHE)
    return CACHE


def photo(name: str) -> pathlib.Path:
    return photo_dir() / name


def load(name: str) -> np.ndarray:
    image = cv2.imread(str(photo(name)), cv2.IMREAD_COLOR)
    assert image is not None, name
    return np.asarray(image, np.uint8)


def in_frame(
    image: np.ndarray, face_width: int, face_box_width: int, width: int = 640, height: int = 480
) -> np.ndarray:
    """``image`` scaled so its face (``face_box_width`` px wide) is ``face_width`` px,
    pasted into the middle of a grey ``width`` x ``height`` camera frame."""
    scale = face_width / face_box_width
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = small[:height, :width]
    frame = np.full((height, width, 3), 110, np.uint8)
    y0, x0 = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    frame[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return frame
