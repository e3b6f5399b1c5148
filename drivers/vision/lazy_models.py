"""The daemon's heavy vision models, loaded on first use and dropped on withdrawal.

dlib's face models (about 45 MiB resident, 1-3 s to load), the BlazeFace detector
(LiteRT and its 1 MB model, about 24 MiB resident, 35 ms to load) and the PP-OCR
sessions (onnxruntime and two models, about 100 MiB) used to load when
``edge-agent run`` started, whether or not ``face_recognition`` or
``plate_recognition`` was ever consented.  In the daemon they now load when a
camera frame first needs them -- the purpose is consented and a frame arrived --
and are released again when the pipeline sees the consent gone, so an agent
without those consents never imports dlib, LiteRT or onnxruntime at all
(tests/core/test_footprint.py checks the process's mapped libraries).  The face
models load on the main loop (the first consented frame waits for them, once);
the plate models on the plate reader's own thread.

What is cheap is still checked at start-up, so a missing package remains an
error of ``edge-agent run`` rather than of the first consented frame: the
libraries must be importable and the model packages installed.  The models'
digests (which read 30 MB) are checked when they load.  The CLI (``enrol``,
``match``) keeps building the models eagerly through
:func:`drivers.vision.faces.build_detector` / ``build_embedder``: one command,
one use.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from agent.errors import EdgeAgentError
from agent.matching.calibration import Calibration
from agent.matching.plates import PlateReading
from agent.matching.plates_vote import LocatedReading
from agent.matching.settings import FaceDetectorKind, FaceEmbedderKind, MatchingSettings
from agent.matching.tracks import Box
from drivers import heap
from drivers.vision import blazeface, dlib_faces
from drivers.vision.blazeface import BlazeFaceDetector
from drivers.vision.dlib_faces import DlibEmbedder, FaceModelError, HogDetector, MmodDetector

log = logging.getLogger(__name__)
# What dlib_faces._dlib() says when dlib is missing, said at start-up instead.
DLIB_HINT = "the dlib face models need the dlib-bin package (pip install dlib-bin)"
Image = npt.NDArray[np.uint8]
Model = TypeVar("Model")


class LazyModel(Generic[Model]):
    """One model built by ``load`` on the first :meth:`get`, until :meth:`release`.

    Thread-safe: the plate worker's thread uses it while the main loop may release it;
    a caller keeps the model it got until it is done with it.
    """

    def __init__(self, what: str, load: Callable[[], Model]) -> None:
        self.what = what
        self._load = load
        self._lock = threading.Lock()
        self._model: Model | None = None
        # A load that failed (a changed model file): not retried on every frame, which
        # would hash 30 MB each time, until release() (consent withdrawn, then again).
        self._failed: EdgeAgentError | None = None
        self.loads = 0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def get(self) -> Model:
        """The model, loaded now if need be; the load's EdgeAgentError (logged once) if not."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._model is None:
                start = time.monotonic()
                try:
                    self._model = self._load()
                except EdgeAgentError as exc:
                    self._failed = exc
                    log.error("%s could not be loaded, it stays off: %s", self.what, exc)
                    raise
                self.loads += 1
                log.info("%s loaded (%.1f s)", self.what, time.monotonic() - start)
            return self._model

    def release(self) -> bool:
        """Drop the model; True if one was loaded.

        While another thread is loading it, nothing: the caller (a tick) asks again
        next time rather than wait seconds for the load.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            model, self._model = self._model, None
            self._failed = None
        finally:
            self._lock.release()
        if model is None:
            return False
        del model
        heap.trim()  # the models' tens of MiB, not just kept free inside the process
        log.info("%s released", self.what)
        return True


# --- faces ----------------------------------------------------------------------


class LazyDetector:
    """A dlib (HOG, MMOD) or BlazeFace (LiteRT) face detector that loads on its first frame."""

    def __init__(
        self, name: str, load: Callable[[], HogDetector | MmodDetector | BlazeFaceDetector]
    ) -> None:
        self.name = name
        self.model = LazyModel(f"face detector ({name})", load)

    def detect(self, image: Image) -> list[Box]:
        try:
            detector = self.model.get()
        except EdgeAgentError:
            return []  # logged once by the load: no face is found until it is fixed
        return detector.detect(image)

    def release(self) -> bool:
        return self.model.release()


class LazyEmbedder:
    """dlib's face descriptor, loading on its first face; what the gallery needs is known now."""

    name = DlibEmbedder.name
    dim = DlibEmbedder.dim

    def __init__(self, load: Callable[[], DlibEmbedder] = DlibEmbedder) -> None:
        self.default_threshold: float = DlibEmbedder.default_threshold
        self.snapshot_threshold: float = DlibEmbedder.snapshot_threshold
        self.calibration: Calibration = DlibEmbedder.calibration
        self.model = LazyModel("face embedder (dlib)", load)

    def embed(self, image: Image, box: Box) -> npt.NDArray[np.float32]:
        return self.model.get().embed(image, box)

    def release(self) -> bool:
        return self.model.release()


def require_module(module: str, error: Callable[[str], EdgeAgentError], hint: str) -> None:
    """``error(hint)`` unless ``module`` is importable (found, not imported)."""
    if importlib.util.find_spec(module) is None:
        raise error(hint)


def lazy_detector(settings: MatchingSettings) -> LazyDetector | None:
    """The configured dlib or BlazeFace detector as a lazy one; None for the others.

    (Haar is cheap; YuNet is the owner's file.)  BlazeFace: LiteRT is not imported
    before the first consented frame, but the package and the model must be there.
    """
    kind = settings.face_detector
    upsample = settings.face_detector_upsample
    if kind is FaceDetectorKind.BLAZEFACE:
        require_module("ai_edge_litert", FaceModelError, blazeface.RUNTIME_HINT)
        blazeface.model_dir()
        return LazyDetector(BlazeFaceDetector.name, BlazeFaceDetector)
    if kind not in (FaceDetectorKind.HOG, FaceDetectorKind.MMOD):
        return None
    require_module("dlib", FaceModelError, DLIB_HINT)
    if kind is FaceDetectorKind.HOG:
        return LazyDetector(HogDetector.name, lambda: HogDetector(upsample))
    dlib_faces.models_dir()
    return LazyDetector(MmodDetector.name, lambda: MmodDetector(upsample))


def lazy_embedder(settings: MatchingSettings) -> LazyEmbedder | None:
    """dlib's descriptor as a lazy one when configured; None for the others."""
    if settings.face_embedder is not FaceEmbedderKind.DLIB:
        return None
    require_module("dlib", FaceModelError, DLIB_HINT)
    dlib_faces.models_dir()
    return LazyEmbedder()


# --- plates ---------------------------------------------------------------------


class FrameReader(Protocol):
    """What the plate worker and service call on the shipped PP-OCR reader."""

    def locate(self, frame: Image) -> list[LocatedReading]: ...

    def read(self, image: Image) -> Sequence[PlateReading]: ...


class LazyPlateReader:
    """The PP-OCR reader, loading on the first frame read with consent (the worker's thread).

    A load that fails (a changed model file, a charset the model cannot read) is
    logged once as an error and plate reading from frames stays off until consent
    is withdrawn and given again; readings an upstream recogniser sends still work.
    """

    name = "ppocr"

    def __init__(self, load: Callable[[], FrameReader]) -> None:
        self.model = LazyModel("plate reader (PP-OCR)", load)

    def _reader(self) -> FrameReader | None:
        try:
            return self.model.get()
        except EdgeAgentError:
            return None  # logged once by the load

    def locate(self, frame: Image) -> list[LocatedReading]:
        reader = self._reader()
        return [] if reader is None else reader.locate(frame)

    def read(self, image: Image) -> Sequence[PlateReading]:
        reader = self._reader()
        return [] if reader is None else reader.read(image)

    def release(self) -> bool:
        return self.model.release()
