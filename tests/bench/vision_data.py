"""Real photos for the vision bench, taken from PyPI packages at bench time (none committed).

See ``tests/bench/DATA.md`` for the sources and licences.  The face photos of
the face_recognition sdist come through :mod:`tests.matching.real_faces`; the
scikit-image photos are unpacked from its wheel and the insightface group
photo from its sdist (``pip download --no-deps``, never installed), each file
checked against its SHA-256, and cached beside the virtualenv
(``<venv>/test-data/``).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys
import tarfile
import tempfile
import zipfile

import cv2
import numpy as np

from tests.support.pypi_files import pip_download

SKIMAGE = "scikit-image==0.26.0"
CACHE = pathlib.Path(sys.prefix) / "test-data" / "scikit-image-0.26.0"
# One face each (a NASA portrait: public domain; a photographer: CC0).
FACE_PHOTOS = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
}
# No face (CC0 / public domain, see DATA.md).
NO_FACE_PHOTOS = {
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "cell.png": "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "clock_motion.png": "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "horse.png": "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "logo.png": "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
}


INSIGHTFACE = "insightface==2.1"
INSIGHTFACE_CACHE = pathlib.Path(sys.prefix) / "test-data" / "insightface-2.1"
# A group photo of six people and a portrait (insightface's sample images).
GROUP_PHOTOS = {
    "t1.jpg": "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
    "Tom_Hanks_54745.png": "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(target: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        wheel = pip_download(SKIMAGE, pathlib.Path(scratch), binary=True,
                             pattern="scikit_image-*.whl")
        unpacked = pathlib.Path(scratch) / "photos"
        unpacked.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for name in (*FACE_PHOTOS, *NO_FACE_PHOTOS):
                (unpacked / name).write_bytes(archive.read(f"skimage/data/{name}"))
        try:
            os.replace(unpacked, target)
        except OSError:
            if not target.is_dir():
                raise


def _fetch_insightface(target: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        sdist = pip_download(INSIGHTFACE, pathlib.Path(scratch), binary=False,
                             pattern="insightface-*.tar.gz")
        unpacked = pathlib.Path(scratch) / "photos"
        unpacked.mkdir()
        with tarfile.open(sdist) as archive:
            for name in GROUP_PHOTOS:
                member = archive.extractfile(f"insightface-2.1/insightface/data/images/{name}")
                if member is not None:
                    (unpacked / name).write_bytes(member.read())
        try:
            os.replace(unpacked, target)
        except OSError:
            if not target.is_dir():
                raise


def photos(names: dict[str, str]) -> dict[str, np.ndarray]:
    """The named photos as BGR arrays; a file whose digest changed is left out loudly."""
    group = names is GROUP_PHOTOS
    cache = INSIGHTFACE_CACHE if group else CACHE
    if not all((cache / name).is_file() for name in names):
        cache.parent.mkdir(parents=True, exist_ok=True)
        (_fetch_insightface if group else _fetch)(cache)
    found: dict[str, np.ndarray] = {}
    for name, digest in names.items():
        data = (cache / name).read_bytes()
        if _digest(data) != digest:
            print(f"   skipped {name}: SHA-256 {_digest(data)} is not the pinned one", flush=True)
            continue
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            found[name] = np.asarray(image, np.uint8)
    return found
