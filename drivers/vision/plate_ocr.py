"""Plates from camera frames with the PP-OCRv6 models that the ``rapidocr`` wheel ships.

The localiser is PP-OCRv6's DB text detector run on the whole frame (about
50 ms at 640x480 on one core): its probability map is thresholded, each blob
becomes a box (grown by DB's unclip ratio), and boxes shaped like a line of
plate text are kept.  The recogniser is PP-OCRv6's CTC text recogniser (about
20-40 ms per crop); its 18,710 classes are folded onto the configured plate
charset: lower-case letters count as their capitals, every class outside the
charset counts as the CTC blank (a dash or a badge on the plate is then a
separator, not a wrong character).  A reading must then have
``plate_min_chars..plate_max_chars`` characters and fit one of
``plate_formats`` (when set), after swapping confusable characters
(``plate_confusable_pairs``) where the format wants the other kind.

Only the two ``.onnx`` files are used, through onnxruntime; rapidocr's own
Python pipeline is never imported.  Both files are checked against their
SHA-256 before onnxruntime sees them; nothing is fetched at run time.
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import BadDataError, DecodeError
from agent.matching.plates import PlateReading, compile_format, fit_format
from agent.matching.plates_vote import LocatedReading
from agent.matching.tracks import Box
from drivers.vision.shipped_models import checked_file, package_models_dir

Image = npt.NDArray[np.uint8]
MODELS_PACKAGE = "rapidocr"
# rapidocr 3.10.0 (models/ inside the wheel; Apache-2.0, PaddleOCR PP-OCRv6 small).
DETECTOR = "PP-OCRv6_det_small.onnx"
RECOGNISER = "PP-OCRv6_rec_small.onnx"
DIGESTS = {
    DETECTOR: "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    RECOGNISER: "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
}
REC_HEIGHT = 48
REC_MAX_WIDTH = 480
DET_MAX_SIDE = 960
DET_THRESHOLD = 0.3  # pixel probability (rapidocr's default)
BOX_THRESHOLD = 0.5  # mean probability inside a box
UNCLIP_RATIO = 1.6
MAX_BOXES = 32  # per frame: a page of text is not a street scene
MIN_TEXT_HEIGHT = 6
MIN_ASPECT, MAX_ASPECT = 1.2, 15.0


ONNXRUNTIME_HINT = "plate OCR needs onnxruntime (pip install onnxruntime)"


class PlateModelError(BadDataError):
    """The plate OCR models are missing, changed or not loadable."""


def models_dir() -> pathlib.Path:
    """rapidocr's models directory, found without importing rapidocr (and its dependencies)."""
    return package_models_dir(
        MODELS_PACKAGE, "models", PlateModelError,
        "the plate OCR models are not installed (pip install rapidocr)",
    )


def checked_model(name: str, directory: pathlib.Path | None = None) -> pathlib.Path:
    """The path of model ``name`` after its SHA-256 matched; PlateModelError otherwise."""
    path = (models_dir() if directory is None else directory) / name
    return checked_file(
        path, DIGESTS[name], PlateModelError, what="plate model", fix="reinstall rapidocr 3.10.0"
    )


def _session(path: pathlib.Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise PlateModelError(ONNXRUNTIME_HINT) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise PlateModelError(f"{path} is not a loadable ONNX model: {exc}") from exc


def class_groups(characters: Sequence[str], charset: str) -> npt.NDArray[np.int64]:
    """For each recogniser class, its charset position + 1, or 0 (the blank group).

    ``characters`` are the model's classes after the blank (PaddleOCR: class 0 is
    the blank, then the dictionary, then a space).
    """
    where = {char: index + 1 for index, char in enumerate(charset)}
    groups = [0]
    for char in characters:
        groups.append(where.get(char, where.get(char.upper(), 0)) if len(char) == 1 else 0)
    return np.asarray(groups, dtype=np.int64)


def restricted_decode(
    logits: npt.NDArray[np.float32], groups: npt.NDArray[np.int64], charset: str
) -> PlateReading:
    """Best-path CTC decoding with the classes folded onto ``charset`` (see the module doc)."""
    steps = np.asarray(logits, dtype=np.float64)
    if steps.ndim != 2 or steps.shape[1] != groups.shape[0] or not np.all(np.isfinite(steps)):
        raise DecodeError(f"recogniser output of shape {steps.shape} does not fit the model")
    # The model's output is already a softmax; renormalise in case of rounding.
    probabilities = steps / np.maximum(steps.sum(axis=1, keepdims=True), 1e-12)
    folded = np.zeros((steps.shape[0], len(charset) + 1))
    np.add.at(folded.T, groups, probabilities.T)
    best = folded.argmax(axis=1)
    chars: list[str] = []
    scores: list[float] = []
    previous = 0
    for step, label in enumerate(best.tolist()):
        if label not in (0, previous):
            chars.append(charset[label - 1])
            scores.append(float(folded[step, label]))
        previous = label
    return PlateReading("".join(chars), round(min(scores), 4) if scores else 0.0)


def _bgr(image: Image) -> Image:
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise DecodeError(f"a frame must be grey, BGR or BGRA, got shape {image.shape}")


def _normalised(image: Image) -> npt.NDArray[np.float32]:
    blob = (image.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None])


class PpOcrPlateReader:
    """Locates and reads plate text in whole frames (``locate``) or in crops (``read``)."""

    name = "ppocr"

    def __init__(
        self,
        *,
        charset: str,
        formats: Sequence[str] = (),
        min_chars: int = 4,
        max_chars: int = 10,
        min_confidence: float = 0.5,
        confusable_pairs: Sequence[str] = ("O0", "I1", "B8", "S5", "Z2"),
        threads: int = 1,
        directory: pathlib.Path | None = None,
    ) -> None:
        self.charset = charset
        self.formats: tuple[re.Pattern[str], ...] = tuple(compile_format(f) for f in formats)
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_confidence = min_confidence
        self.confusable_pairs = tuple(confusable_pairs)
        self._det = _session(checked_model(DETECTOR, directory), threads)
        self._rec = _session(checked_model(RECOGNISER, directory), threads)
        meta = self._rec.get_modelmeta().custom_metadata_map.get("character", "")
        characters = [*meta.splitlines(), " "]
        classes = self._rec.get_outputs()[0].shape[-1]
        if not isinstance(classes, int) or classes != len(characters) + 1:
            raise PlateModelError(
                f"{RECOGNISER}: {classes} output classes but {len(characters)} characters"
            )
        self._groups = class_groups(characters, charset)
        missing = set(charset) - {charset[g - 1] for g in set(self._groups.tolist()) if g}
        if missing:
            raise PlateModelError(
                f"the plate recogniser cannot read {''.join(sorted(missing))!r}"
                " (matching.plate_charset)"
            )
        self._det_input = self._det.get_inputs()[0].name
        self._rec_input = self._rec.get_inputs()[0].name

    # --- the localiser --------------------------------------------------------

    def text_boxes(self, frame: Image) -> list[Box]:
        """Boxes of text lines in ``frame`` (DB detector), largest first."""
        image = _bgr(frame)
        height, width = image.shape[:2]
        if height < 16 or width < 16:
            return []
        scale = min(1.0, DET_MAX_SIDE / max(height, width))
        th = max(32, round(height * scale / 32) * 32)
        tw = max(32, round(width * scale / 32) * 32)
        resized = np.asarray(cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA), np.uint8)
        try:
            out = self._det.run(None, {self._det_input: _normalised(resized)})[0]
        except Exception as exc:
            raise DecodeError(f"the plate localiser failed on this frame: {exc}") from exc
        probability = np.asarray(out, np.float32).reshape(th, tw)
        mask = (probability > DET_THRESHOLD).astype(np.uint8)
        mask = np.asarray(cv2.dilate(mask, np.ones((2, 2), np.uint8)), np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        sx, sy = width / tw, height / th
        boxes: list[Box] = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if w < 4 or h < 3:
                continue
            region = (slice(y, y + h), slice(x, x + w))
            score = float(cv2.mean(probability[region], mask[region])[0])
            if score < BOX_THRESHOLD:
                continue
            # DB shrinks text regions when training; grow them back (rapidocr's unclip).
            grow = (w * h) * UNCLIP_RATIO / (2 * (w + h))
            x0, y0 = max(0.0, (x - grow) * sx), max(0.0, (y - grow) * sy)
            x1, y1 = min(width, (x + w + grow) * sx), min(height, (y + h + grow) * sy)
            bw, bh = math.ceil(x1 - x0), math.ceil(y1 - y0)
            if bh < MIN_TEXT_HEIGHT or not MIN_ASPECT <= bw / bh <= MAX_ASPECT:
                continue
            boxes.append(Box(int(x0), int(y0), bw, bh, round(score, 4)))
        boxes.sort(key=lambda b: b.w * b.h, reverse=True)
        return boxes[:MAX_BOXES]

    # --- the recogniser -------------------------------------------------------

    def recognise(self, crop: Image) -> PlateReading:
        """The crop's text restricted to the charset (no format check)."""
        image = _bgr(crop)
        height, width = image.shape[:2]
        if height < 2 or width < 2:
            return PlateReading("", 0.0)
        target = min(REC_MAX_WIDTH, max(8, math.ceil(REC_HEIGHT * width / height)))
        resized = np.asarray(cv2.resize(image, (target, REC_HEIGHT)), np.uint8)
        blob = _normalised(resized)
        padded = np.zeros((1, 3, REC_HEIGHT, max(target, 64)), np.float32)
        padded[:, :, :, :target] = blob
        try:
            out = self._rec.run(None, {self._rec_input: padded})[0]
        except Exception as exc:
            raise DecodeError(f"the plate recogniser failed on this crop: {exc}") from exc
        return restricted_decode(np.asarray(out[0], np.float32), self._groups, self.charset)

    def conform(self, reading: PlateReading) -> PlateReading | None:
        """The reading if long and confident enough and fitting a configured format (if
        any, after swapping confusable characters: ``O`` where a digit must be is ``0``)."""
        text = reading.text
        if not self.min_chars <= len(text) <= self.max_chars:
            return None
        if reading.confidence < self.min_confidence:
            return None
        if not self.formats:
            return reading
        fitted = fit_format(text, self.formats, self.confusable_pairs)
        return None if fitted is None else PlateReading(fitted, reading.confidence)

    def read(self, image: Image) -> Sequence[PlateReading]:
        """``agent.matching.plates.PlateReader``: the plate readings in a crop or a frame."""
        if image.ndim not in (2, 3) or image.size == 0:
            raise DecodeError(f"plate image must be a 2-D or 3-D array, got shape {image.shape}")
        whole = self.conform(self.recognise(image))
        return [located.reading for located in self.locate(image)] or (
            [whole] if whole is not None else []
        )

    def locate(self, frame: Image) -> list[LocatedReading]:
        """Plates in a whole frame: each text box read, kept when ``conform`` keeps it."""
        if frame.ndim not in (2, 3) or frame.size == 0:
            raise DecodeError(f"a frame must be a 2-D or 3-D array, got shape {frame.shape}")
        image = _bgr(frame)
        found: list[LocatedReading] = []
        for box in self.text_boxes(image):
            reading = self.conform(
                self.recognise(image[box.y : box.y + box.h, box.x : box.x + box.w])
            )
            if reading is not None:
                found.append(LocatedReading(reading, box))
        return found
