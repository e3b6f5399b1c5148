"""The default face models: dlib's HOG/MMOD detectors and its ResNet face descriptor.

Why dlib: the prebuilt ``dlib-bin`` wheel (4 MB, no dependencies) runs the
models that PyPI's ``face-recognition-models`` 0.3.0 ships (CC0 model files):
nothing is fetched at run time.  HOG needs no file and takes about 17 ms per
640x480 frame (70 ms with one upsampling, for faces down to about 40 px) on
one core; the descriptor takes about 60 ms per face, so it runs once per track
(:mod:`drivers.vision.pipeline`), not per frame.

Alignment: the descriptor always sees a 150x150 chip cut by dlib's
``get_face_chip`` along the 5-point landmarks found in the detector's box.
Enrolment (``edge-agent enrol face``), ``edge-agent match`` and the camera
pipeline all call :meth:`DlibEmbedder.embed` with a box from the same
configured detector, so the crops are aligned the same way everywhere.

Every model file is checked against its SHA-256 before dlib sees it; a
missing package or a changed file is a :class:`FaceModelError` naming it.
"""

from __future__ import annotations

import pathlib
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import BadDataError, DecodeError
from agent.matching.calibration import Calibration
from agent.matching.tracks import Box
from drivers.vision.shipped_models import checked_file, package_models_dir

Image = npt.NDArray[np.uint8]
MODELS_PACKAGE = "face_recognition_models"
# face-recognition-models 0.3.0 (models/ inside the package).
DIGESTS = {
    "shape_predictor_5_face_landmarks.dat": (
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
    ),
    "dlib_face_recognition_resnet_model_v1.dat": (
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
    ),
    "mmod_human_face_detector.dat": (
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6"
    ),
}
CHIP_SIZE = 150  # what the ResNet descriptor was trained on
CHIP_PADDING = 0.25
# Cosine scores of the 128-d descriptor (L2-normalised).  dlib's published
# Euclidean threshold 0.6 is cosine 0.82, far too low.  Calibrated in `make bench`
# (tests/bench/bench_vision.py, data in tests/bench/DATA.md): faces of 64 px and
# more score 0.934+ for genuine pairs and at most 0.926 for impostors (two look-alike
# men of a group photo); at 0.90, 1.9% of impostor pairs passed, at 0.93 none.
# Snapshots keep a face sharp only above 0.95.
DLIB_THRESHOLD = 0.93
DLIB_SNAPSHOT_THRESHOLD = 0.95
# Confidence in events (agent.matching.calibration): a logistic fit, equal priors,
# to the same bench data (`make bench`, tests/bench/bench_vision.py prints it as
# "confidence fit (dlib)"): every genuine and impostor pair of faces >= 48 px
# (1536 genuine, 18432 impostor pairs; smaller faces are mostly rejected by the
# quality gates).  Fit: slope 149.2, midpoint 0.9192, so 0.5 at 0.919, 0.83 at
# the 0.93 threshold (which sits above every impostor >= 64 px), 0.99 at 0.95,
# 0.003 at 0.88.  The same fit on faces >= 32 px or >= 64 px moves the midpoint
# by under 0.01.
DLIB_CALIBRATION = Calibration(slope=149.2, midpoint=0.9192)


class FaceModelError(BadDataError):
    """A configured face model file is missing or is not a usable model."""


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise FaceModelError(
            "the dlib face models need the dlib-bin package (pip install dlib-bin)"
        ) from exc
    return dlib


def models_dir() -> pathlib.Path:
    """The directory of face-recognition-models' files, found without importing it.

    (Its ``__init__`` imports ``pkg_resources``, which new setuptools no longer has.)
    """
    return package_models_dir(
        MODELS_PACKAGE, "models", FaceModelError,
        "the dlib face models are not installed (pip install face-recognition-models)",
    )


def checked_model(name: str, directory: pathlib.Path | None = None) -> pathlib.Path:
    """The path of model ``name`` after its SHA-256 matched; FaceModelError otherwise."""
    path = (models_dir() if directory is None else directory) / name
    return checked_file(
        path,
        DIGESTS[name],
        FaceModelError,
        what="face model",
        fix="reinstall face-recognition-models 0.3.0",
    )


def _rect(dlib: Any, box: Box) -> Any:
    return dlib.rectangle(int(box.x), int(box.y), int(box.x + box.w), int(box.y + box.h))


def _rgb(image: Image) -> Image:
    if image.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _grey(image: Image) -> Image:
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def _clipped(image: Image, rect: Any, score: float) -> Box | None:
    """A dlib rectangle as a Box inside the image (detections may reach past the edge)."""
    h, w = image.shape[:2]
    x0, y0 = max(0, int(rect.left())), max(0, int(rect.top()))
    x1, y1 = min(w, int(rect.right()) + 1), min(h, int(rect.bottom()) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return Box(x0, y0, x1 - x0, y1 - y0, score)


class HogDetector:
    """dlib's frontal face detector (HOG + linear SVM, built into dlib)."""

    name = "hog"

    def __init__(self, upsample: int = 1) -> None:
        self._detector = _dlib().get_frontal_face_detector()
        self.upsample = upsample

    def detect(self, image: Image) -> list[Box]:
        try:
            rects, scores, _ = self._detector.run(_grey(image), self.upsample, 0.0)
        except RuntimeError as exc:
            raise DecodeError(f"the HOG detector could not process the frame: {exc}") from exc
        boxes = (_clipped(image, r, float(s)) for r, s in zip(rects, scores, strict=True))
        return [b for b in boxes if b is not None]


class MmodDetector:
    """dlib's MMOD CNN face detector (mmod_human_face_detector.dat)."""

    name = "mmod"

    def __init__(self, upsample: int = 1, directory: pathlib.Path | None = None) -> None:
        dlib = _dlib()
        path = checked_model("mmod_human_face_detector.dat", directory)
        try:
            self._detector = dlib.cnn_face_detection_model_v1(str(path))
        except RuntimeError as exc:
            raise FaceModelError(f"{path} is not a dlib MMOD model: {exc}") from exc
        self.upsample = upsample

    def detect(self, image: Image) -> list[Box]:
        try:
            found = self._detector(_rgb(image), self.upsample)
        except RuntimeError as exc:
            raise DecodeError(f"the MMOD detector could not process the frame: {exc}") from exc
        boxes = (_clipped(image, d.rect, float(d.confidence)) for d in found)
        return [b for b in boxes if b is not None]


class DlibEmbedder:
    """dlib's ResNet face descriptor on a 5-point aligned 150x150 chip (128-d, unit length)."""

    name = "dlib"
    dim = 128
    default_threshold = DLIB_THRESHOLD
    snapshot_threshold = DLIB_SNAPSHOT_THRESHOLD
    calibration = DLIB_CALIBRATION

    def __init__(self, directory: pathlib.Path | None = None) -> None:
        self._dlib = _dlib()
        landmarks = checked_model("shape_predictor_5_face_landmarks.dat", directory)
        descriptor = checked_model("dlib_face_recognition_resnet_model_v1.dat", directory)
        try:
            self._landmarks = self._dlib.shape_predictor(str(landmarks))
            self._descriptor = self._dlib.face_recognition_model_v1(str(descriptor))
        except RuntimeError as exc:
            raise FaceModelError(f"cannot load the dlib face models: {exc}") from exc

    def chip(self, image: Image, box: Box) -> Image:
        """The aligned RGB face crop the descriptor sees (the same for enrolment and matching)."""
        rgb = _rgb(image)
        try:
            shape = self._landmarks(rgb, _rect(self._dlib, box))
            chip = self._dlib.get_face_chip(rgb, shape, CHIP_SIZE, CHIP_PADDING)
        except RuntimeError as exc:
            raise DecodeError(f"could not align the face: {exc}") from exc
        return np.asarray(chip, dtype=np.uint8)

    def embed(self, image: Image, box: Box) -> npt.NDArray[np.float32]:
        chip = self.chip(image, box)
        try:
            feature = self._descriptor.compute_face_descriptor(chip)
        except RuntimeError as exc:
            raise DecodeError(f"the face descriptor failed: {exc}") from exc
        vector = np.asarray(feature, dtype=np.float32).ravel()
        return vector / max(float(np.linalg.norm(vector)), 1e-12)
