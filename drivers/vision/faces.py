"""Face detection and embedding: choosing the models, and the OpenCV ones.

The defaults are the BlazeFace detector (:mod:`drivers.vision.blazeface`) and
dlib's ResNet descriptor on 5-point aligned crops (:mod:`drivers.vision.dlib_faces`),
models shipped by PyPI packages; dlib's HOG and MMOD detectors are options.
``matching.face_detector`` / ``matching.face_embedder`` choose otherwise:
"haar" (the cascade inside opencv-python-headless) and "lbp"
(:mod:`agent.matching.lbp`) are the low-memory options needing no model; "yunet"
and "sface" run the owner's ONNX files (``face_detector_model``, ``face_model``)
through OpenCV.  Every ``cv2.error`` is wrapped into the agent's error tree here.
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import BadDataError, DecodeError
from agent.matching import lbp
from agent.matching.calibration import Calibration
from agent.matching.crops import EnrolmentCrop
from agent.matching.settings import FaceDetectorKind, FaceEmbedderKind, MatchingSettings
from agent.matching.tracks import Box
from drivers.vision.blazeface import BlazeFaceDetector
from drivers.vision.dlib_faces import DlibEmbedder, FaceModelError, HogDetector, MmodDetector

Image = npt.NDArray[np.uint8]
SFACE_THRESHOLD = 0.363  # OpenCV's published cosine threshold for SFace.
# A snapshot shows a face sharp only above these: well clear of the match
# threshold, where impostors still score (LBP: the worst impostor on the
# synthetic set reaches 0.87, above its 0.85 match threshold).
LBP_SNAPSHOT_THRESHOLD = 0.92
SFACE_SNAPSHOT_THRESHOLD = 0.5
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Confidence (agent.matching.calibration), where no fit means anything: even odds at
# the embedder's own threshold, 0.05 / 0.95 at 0.05 below / above it (LBP) or ~0.1
# (SFace, a wider score range).  LBP hardly separates real faces: `make bench`
# ("confidence fit (lbp)", faces >= 48 px) finds genuine pairs at a median of 0.46
# and impostors at 0.39, a fit of slope 38 and midpoint 0.43, far from the 0.85
# its threshold was set at on the sample camera's drawn faces.  SFace: no model
# ships in a package to fit on.
LBP_CALIBRATION = Calibration(slope=58.9, midpoint=lbp.DEFAULT_THRESHOLD)
SFACE_CALIBRATION = Calibration(slope=30.0, midpoint=SFACE_THRESHOLD)
# Kept enrolment crops (matching.keep_enrolment_crops): the face with half its
# size of margin on each side (detectors need context), at most this wide, JPEG.
CROP_MARGIN = 0.5
CROP_MAX_FACE_PX = 256
CROP_JPEG_QUALITY = 95


def grey(image: Image) -> Image:
    if image.ndim == 2:
        return image
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


def crop(image: Image, box: Box) -> Image:
    h, w = image.shape[:2]
    x0, y0 = max(0, box.x), max(0, box.y)
    x1, y1 = min(w, box.x + box.w), min(h, box.y + box.h)
    if x1 <= x0 or y1 <= y0:
        raise BadDataError("face box lies outside the image")
    return image[y0:y1, x0:x1]


def read_image(path: pathlib.Path) -> Image:
    """Decode an image file (BGR); DecodeError if it is not an image."""
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise DecodeError(f"{path}: larger than {MAX_IMAGE_BYTES} bytes")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError(f"{path}: not a decodable image")
    return np.asarray(image, dtype=np.uint8)


def _require_file(path: pathlib.Path, what: str) -> str:
    if not path.is_file():
        raise FaceModelError(f"{what} model {path} does not exist")
    return str(path)


class HaarDetector:
    name = "haar"

    def __init__(self, min_size: int = 24) -> None:
        cascades = pathlib.Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
        path = cascades / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FaceModelError(f"cannot load the Haar cascade {path}")
        self.min_size = min_size

    def detect(self, image: Image) -> list[Box]:
        found = self._cascade.detectMultiScale(
            grey(image), scaleFactor=1.1, minNeighbors=3, minSize=(self.min_size, self.min_size)
        )
        return [Box(int(x), int(y), int(w), int(h), 1.0) for x, y, w, h in found]


class YuNetDetector:
    name = "yunet"

    def __init__(self, model: pathlib.Path, score_threshold: float = 0.8) -> None:
        try:
            self._detector = cv2.FaceDetectorYN.create(
                _require_file(model, "YuNet"), "", (320, 320), score_threshold
            )
        except cv2.error as exc:
            raise FaceModelError(f"{model} is not a YuNet face detector model: {exc}") from exc

    def detect(self, image: Image) -> list[Box]:
        h, w = image.shape[:2]
        try:
            self._detector.setInputSize((w, h))
            _, faces = self._detector.detect(image)
        except cv2.error as exc:
            raise DecodeError(f"YuNet could not process the frame: {exc}") from exc
        if faces is None:
            return []
        return [
            Box(int(f[0]), int(f[1]), int(f[2]), int(f[3]), float(f[-1]), landmarks=f[4:14])
            for f in faces
        ]


class LbpEmbedder:
    name = "lbp"
    dim = lbp.DIM
    default_threshold = lbp.DEFAULT_THRESHOLD
    calibration = LBP_CALIBRATION
    snapshot_threshold = LBP_SNAPSHOT_THRESHOLD

    # Detector boxes include hair, ears and background; the inner part is the face.
    inner = 0.7

    def embed(self, image: Image, box: Box) -> npt.NDArray[np.float32]:
        side = max(1, round(min(box.w, box.h) * self.inner))
        centre_x, centre_y = box.x + box.w // 2, box.y + box.h // 2
        inner_box = Box(centre_x - side // 2, centre_y - side // 2, side, side)
        face = cv2.resize(
            grey(crop(image, inner_box)),
            (lbp.CROP_SIZE, lbp.CROP_SIZE),
            interpolation=cv2.INTER_AREA,
        )
        # Smoothing first keeps sensor noise in flat skin from flipping pattern bits.
        face = cv2.GaussianBlur(face, (0, 0), 1.0)
        return lbp.embed_lbp(np.asarray(face, dtype=np.uint8))


class SFaceEmbedder:
    name = "sface"
    dim = 128
    default_threshold = SFACE_THRESHOLD
    calibration = SFACE_CALIBRATION
    snapshot_threshold = SFACE_SNAPSHOT_THRESHOLD

    def __init__(self, model: pathlib.Path) -> None:
        try:
            self._recognizer = cv2.FaceRecognizerSF.create(_require_file(model, "SFace"), "")
            probe = np.zeros((112, 112, 3), dtype=np.uint8)
            feature = self._recognizer.feature(probe)
        except cv2.error as exc:
            raise FaceModelError(f"{model} is not an SFace ONNX model: {exc}") from exc
        if feature is None or np.asarray(feature).size != self.dim:
            raise FaceModelError(f"{model} does not produce {self.dim}-d face features")

    def embed(self, image: Image, box: Box) -> npt.NDArray[np.float32]:
        try:
            if box.landmarks is not None:
                row = np.array(
                    [box.x, box.y, box.w, box.h, *box.landmarks, box.score], dtype=np.float32
                )
                face = self._recognizer.alignCrop(image, row)
            else:
                face = cv2.resize(crop(image, box), (112, 112))
            feature = self._recognizer.feature(face)
        except cv2.error as exc:
            raise DecodeError(f"SFace could not embed the face: {exc}") from exc
        vector = np.asarray(feature, dtype=np.float32).ravel()
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


FaceDetectorImpl = (
    HogDetector | MmodDetector | HaarDetector | YuNetDetector | BlazeFaceDetector
)
FaceEmbedderImpl = DlibEmbedder | LbpEmbedder | SFaceEmbedder


def _model_file(path: pathlib.Path | None, key: str, kind: str) -> pathlib.Path:
    if path is None:
        raise FaceModelError(f"matching.{key} must name the model file for {kind!r}")
    return path


def build_detector(settings: MatchingSettings) -> FaceDetectorImpl:
    """The configured detector: the CLI and the camera pipeline both build it here."""
    kind = settings.face_detector
    if kind is FaceDetectorKind.HOG:
        return HogDetector(settings.face_detector_upsample)
    if kind is FaceDetectorKind.MMOD:
        return MmodDetector(settings.face_detector_upsample)
    if kind is FaceDetectorKind.BLAZEFACE:
        return BlazeFaceDetector()
    if kind is FaceDetectorKind.YUNET:
        return YuNetDetector(
            _model_file(settings.face_detector_model, "face_detector_model", kind.value)
        )
    return HaarDetector()


def build_embedder(settings: MatchingSettings) -> FaceEmbedderImpl:
    kind = settings.face_embedder
    if kind is FaceEmbedderKind.DLIB:
        return DlibEmbedder()
    if kind is FaceEmbedderKind.SFACE:
        return SFaceEmbedder(_model_file(settings.face_model, "face_model", kind.value))
    return LbpEmbedder()


def whole_image_box(image: Image) -> Box:
    h, w = image.shape[:2]
    return Box(0, 0, int(w), int(h), 1.0)


def main_face_box(detector: FaceDetectorImpl, image: Image) -> Box:
    """The largest detected face, or the whole image when none is found (a face photo)."""
    boxes = detector.detect(image)
    return max(boxes, key=lambda b: b.area) if boxes else whole_image_box(image)


def enrolment_crop(image: Image, box: Box) -> EnrolmentCrop:
    """The face in ``box`` with a margin, JPEG-encoded, and its box inside the crop."""
    margin = round(max(box.w, box.h) * CROP_MARGIN)
    h, w = image.shape[:2]
    x0, y0 = max(0, box.x - margin), max(0, box.y - margin)
    x1, y1 = min(w, box.x + box.w + margin), min(h, box.y + box.h + margin)
    part = crop(image, Box(x0, y0, x1 - x0, y1 - y0))
    scale = min(1.0, CROP_MAX_FACE_PX / max(box.w, box.h, 1))
    if scale < 1.0:
        part = np.asarray(
            cv2.resize(part, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8
        )
    ok, data = cv2.imencode(".jpg", part, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    if not ok:
        raise DecodeError("could not encode the enrolment crop")
    inner = (
        round((box.x - x0) * scale),
        round((box.y - y0) * scale),
        max(1, round(box.w * scale)),
        max(1, round(box.h * scale)),
    )
    return EnrolmentCrop(np.asarray(data).tobytes(), inner)


def _overlap(a: Box, b: Box) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / max(1, a.w * a.h + b.w * b.h - inter)


def embed_crop(
    kept: EnrolmentCrop, detector: FaceDetectorImpl, embedder: FaceEmbedderImpl
) -> npt.NDArray[np.float32] | None:
    """A kept crop embedded as enrolment would: the configured detector's box, then the embedder.

    The detector's face overlapping the stored box is used (so the new
    embedder's alignment sees the box it expects), else the stored box; None
    if the crop is not a decodable image or the face cannot be embedded.
    """
    decoded = cv2.imdecode(np.frombuffer(kept.image, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        return None
    image = np.asarray(decoded, dtype=np.uint8)
    stored = Box(*kept.box, 1.0)
    found = [b for b in detector.detect(image) if _overlap(b, stored) >= 0.3]
    box = max(found, key=lambda b: _overlap(b, stored)) if found else stored
    try:
        return embedder.embed(image, box)
    except BadDataError:
        return None
