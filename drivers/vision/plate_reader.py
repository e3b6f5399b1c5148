"""Plate recognition at the I/O edge: the readers and the runtime service.

By default plates are located and read in camera frames by the PP-OCRv6 models
of :mod:`drivers.vision.plate_ocr` on their own thread
(:mod:`drivers.vision.plate_worker`); readings are voted on across the frames of
a plate track (:mod:`agent.matching.plates_vote`) and the decided text is
matched against the watch-list.  ``OnnxPlateReader`` (an owner's model, setting
``plate_model``) runs a CTC text recogniser (CRNN/LPRNet style: plate crop
in, ``[T, C]`` logits out) through ``cv2.dnn``; the decoding is pure and lives
in :func:`agent.matching.plates.ctc_greedy_decode`.  ``build_service`` wires the
consent-gated core to the clock and the audit log, takes frames from the
shared camera, and returns the ``plate.match`` events both produce.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from agent.camera.events import CAMERA_NAME
from agent.config import AgentConfig
from agent.errors import ConfigError, DecodeError, DeviceIOError
from agent.events import Event
from agent.framebus import LatestFrame
from agent.matching.plates import (
    MatchPolicy,
    PlateMatch,
    PlateReader,
    PlateReading,
    compile_format,
    ctc_greedy_decode,
)
from agent.matching.plates_service import OBSERVE_COMMAND, PURPOSE, PlateRecognition
from agent.matching.plates_store import PlateStore
from agent.matching.plates_vote import PlateVoter
from agent.matching.settings import MatchingSettings, PlateReaderKind
from agent.ports import AuditSink, Clock, CommandHandler
from agent.purposes import Purpose
from drivers.vision.lazy_models import LazyPlateReader, require_module
from drivers.vision.plate_worker import PlateWorker

if TYPE_CHECKING:
    from agent.keystore import DataKeys

MAX_MODEL_BYTES = 256 * 1024 * 1024
_SETTING = "matching.plate_model"


class OnnxPlateReader:
    """Implements :class:`agent.matching.plates.PlateReader` with ``cv2.dnn``."""

    def __init__(
        self,
        model: pathlib.Path,
        *,
        charset: str,
        input_size: tuple[int, int],
        blank_last: bool = False,
    ) -> None:
        self.charset = charset
        self.input_size = input_size
        self.blank_last = blank_last
        try:
            size = model.stat().st_size
        except FileNotFoundError:
            raise ConfigError(_SETTING, f"model file not found: {model}") from None
        except OSError as exc:
            raise ConfigError(_SETTING, f"cannot read {model}: {exc.strerror}") from exc
        if not model.is_file() or size == 0 or size > MAX_MODEL_BYTES:
            raise ConfigError(_SETTING, f"{model} is not a model file of 1 B..256 MiB")
        try:
            self._net = cv2.dnn.readNetFromONNX(str(model))
        except cv2.error as exc:
            detail = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else ""
            raise ConfigError(_SETTING, f"{model} is not a loadable ONNX model: {detail}") from exc
        if self._net.empty():
            raise ConfigError(_SETTING, f"{model} loaded as an empty network")

    def read(self, image: npt.NDArray[np.uint8]) -> Sequence[PlateReading]:
        if image.ndim not in (2, 3) or image.size == 0:
            raise DecodeError(f"plate image must be a 2-D or 3-D array, got shape {image.shape}")
        try:
            blob = cv2.dnn.blobFromImage(
                image, scalefactor=1.0 / 255.0, size=self.input_size, swapRB=False
            )
            self._net.setInput(blob)
            output = self._net.forward()
        except cv2.error as exc:
            raise DecodeError(f"plate recogniser failed on this image: {exc}") from exc
        reading = ctc_greedy_decode(output, self.charset, blank_last=self.blank_last)
        return [reading] if reading.text else []


def reader_from_settings(
    settings: MatchingSettings, *, lazy: bool = False
) -> PlateReader | LazyPlateReader | None:
    """The configured reader, or None when plate reading from frames is off.

    Raises ConfigError for an unusable model or setting, PlateModelError when the
    shipped models are missing or changed.  ``lazy`` (the daemon): the shipped
    PP-OCR models load on the first frame read with consent
    (drivers.vision.lazy_models); only the settings and the packages are checked now.
    """
    if settings.plate_model is None:
        if settings.plate_reader is PlateReaderKind.OFF:
            return None
        if settings.plate_min_chars > settings.plate_max_chars:
            raise ConfigError(
                "matching.plate_min_chars", "must not be larger than plate_max_chars"
            )
        from drivers.vision import plate_ocr  # lazy: onnxruntime

        def load() -> plate_ocr.PpOcrPlateReader:
            try:
                return plate_ocr.PpOcrPlateReader(
                    charset=settings.plate_charset,
                    formats=settings.plate_formats,
                    min_chars=settings.plate_min_chars,
                    max_chars=settings.plate_max_chars,
                    min_confidence=settings.plate_min_confidence,
                    confusable_pairs=settings.plate_confusable_pairs,
                    threads=settings.plate_threads,
                )
            except DecodeError as exc:
                raise ConfigError("matching.plate_formats", str(exc)) from exc

        if not lazy:
            return load()
        try:
            for pattern in settings.plate_formats:
                compile_format(pattern)
        except DecodeError as exc:
            raise ConfigError("matching.plate_formats", str(exc)) from exc
        require_module("onnxruntime", plate_ocr.PlateModelError, plate_ocr.ONNXRUNTIME_HINT)
        plate_ocr.models_dir()
        return LazyPlateReader(load)
    return OnnxPlateReader(
        settings.plate_model,
        charset=settings.plate_charset,
        input_size=(settings.plate_input_width, settings.plate_input_height),
        blank_last=settings.plate_ctc_blank_last,
    )


def match_policy(settings: MatchingSettings) -> MatchPolicy:
    return MatchPolicy(
        max_cost=settings.plate_max_cost,
        confusable_cost=settings.plate_confusable_cost,
        confusable_pairs=settings.plate_confusable_pairs,
    )


def open_store(config: AgentConfig, keys: DataKeys) -> PlateStore:
    return PlateStore.in_state_dir(
        config.state_dir, keys=keys, max_entries=config.matching.plate_max_entries
    )


class PlateService:
    """The runtime's plate path: frames from the bus through the reader, ``plate.observe``.

    Implements ``agent.ports.Service``, ``PersonalDataHolder`` and ``Resealable``.  Frames are
    read only while ``plate_recognition`` is consented and a reader is configured.
    With a ``worker`` (the default PP-OCR reader) frames are read on the worker's
    thread and its readings voted on per track by ``voter`` in ``tick``; without
    one (an owner's crop model) ``tick`` reads the newest frame itself.
    """

    name = "plates"

    def __init__(
        self,
        core: PlateRecognition,
        clock: Clock,
        reader: PlateReader | None = None,
        *,
        worker: PlateWorker | None = None,
        voter: PlateVoter | None = None,
    ) -> None:
        self.core = core
        self.clock = clock
        self.reader = reader
        self.worker = worker
        self.voter = voter or PlateVoter()
        # Per camera its own plate tracks (``voter`` is the first camera's).
        self.voters: dict[str, PlateVoter] = {}
        # Without a worker: the newest frame and its camera (``latest``: of the first camera).
        self.latest: LatestFrame[npt.NDArray[np.uint8]] = LatestFrame()
        self.latest_from: LatestFrame[tuple[npt.NDArray[np.uint8], str]] = LatestFrame()

    def start(self) -> None:
        self.core.refresh_if_changed()
        if self.worker is not None:
            self.worker.start()

    def offer_frame(self, frame: npt.NDArray[np.uint8], camera: str = CAMERA_NAME) -> None:
        """The frame bus's callback (capture thread): cheap, never reads a plate itself."""
        if self.worker is not None:
            self.worker.offer(frame, camera)
        else:
            self.latest_from.offer((frame, camera))

    def voter_for(self, camera: str) -> PlateVoter:
        found = self.voters.get(camera)
        if found is None:
            first = self.voter
            found = first if not self.voters else PlateVoter(first.vote_frames, first.forget_after)
            self.voters[camera] = found
        return found

    def tick(self, now: float) -> Sequence[Event]:
        # Picks up enrolments made meanwhile by ``edge-agent enrol plate``.
        self.core.refresh_if_changed()
        if self.worker is None:
            taken = self.latest_from.take()
            frame, camera = (self.latest.take(), CAMERA_NAME) if taken is None else taken
            if frame is None:
                return ()
            return self.core.events(self.observe_image(frame), camera=camera, now=now)
        granted = self.core.is_granted(PURPOSE)
        self.worker.active = granted
        if not granted:
            self.worker.forget()
            self._clear_voters()
            # The PP-OCR models (loaded by the first consented frame) go until the next one.
            if isinstance(self.reader, LazyPlateReader):
                self.reader.release()
            return ()
        events: list[Event] = []
        for camera, readings in self.worker.drain():
            matches: list[PlateMatch] = []
            for text in self.voter_for(camera).add(readings, now):
                try:
                    matches += self.core.observe(text)
                except DecodeError:
                    continue
            if matches:
                events += self.core.events(matches, camera=camera, now=now)
        return tuple(events)

    def _clear_voters(self) -> None:
        self.voter.clear()
        for voter in self.voters.values():
            voter.clear()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.core.store.close()

    def commands(self) -> dict[str, CommandHandler]:
        return {OBSERVE_COMMAND: lambda args: self.core.handle_observe(args, self.clock.now())}

    def observe_image(self, image: npt.NDArray[np.uint8]) -> list[PlateMatch]:
        """Read plates in an image with the model and match them (nothing runs without consent)."""
        if self.reader is None or not self.core.is_granted(PURPOSE):
            return []
        matches: list[PlateMatch] = []
        for reading in self.reader.read(image):
            try:
                matches += self.core.observe(reading.text)
            except DecodeError:
                continue  # a reading that is no plate text is just noise
        return matches

    def export_personal_data(self) -> dict[str, object]:
        return dict(self.core.export_personal_data())

    def erase_personal_data(self) -> int:
        if self.worker is not None:
            self.worker.forget()
        self._clear_voters()
        return self.core.erase_personal_data()

    def reseal_personal_data(self) -> int:
        return self.core.store.reseal_personal_data()


def build_service(
    config: AgentConfig,
    *,
    is_granted: Callable[[Purpose], bool],
    clock: Clock,
    keys: DataKeys,
    audit: AuditSink | None = None,
) -> PlateService:
    """The runtime's plate service; raises ConfigError if a configured model is unusable."""
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceIOError(f"cannot create {config.state_dir}: {exc.strerror}") from exc
    policy = match_policy(config.matching)
    settings = config.matching
    reader = reader_from_settings(settings, lazy=True)
    core = PlateRecognition(open_store(config, keys), policy, is_granted, audit=audit)
    locate = getattr(reader, "locate", None)
    if locate is None:
        return PlateService(core, clock, reader)
    worker = PlateWorker(
        reader,  # type: ignore[arg-type]  # has locate(), checked above
        every_n_frames=settings.plate_every_n_frames,
        motion_level=settings.plate_motion_level,
    )
    voter = PlateVoter(settings.plate_vote_frames, settings.plate_track_seconds)
    return PlateService(core, clock, reader, worker=worker, voter=voter)
