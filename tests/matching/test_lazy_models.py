"""The daemon's face and plate models load on the first consented frame and go on withdrawal.

drivers/vision/lazy_models.py; tests/core/test_footprint.py checks the same on the
real ``edge-agent run`` process (which libraries it maps).
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.matching.settings import MatchingSettings
from agent.purposes import Purpose
from drivers.vision.dlib_faces import FaceModelError, HogDetector
from drivers.vision.lazy_models import (
    FrameReader,
    LazyDetector,
    LazyEmbedder,
    LazyPlateReader,
    require_module,
)
from drivers.vision.pipeline import build_service
from drivers.vision.plate_ocr import PlateModelError
from drivers.vision.plate_reader import reader_from_settings


def test_face_models_load_with_the_first_consented_frame_and_go_on_withdrawal(
    tmp_path: pathlib.Path,
) -> None:
    granted: set[Purpose] = set()
    service = build_service(AgentConfig(state_dir=tmp_path), lambda p: p in granted)
    detector, embedder = service.detector, service.embedder
    assert isinstance(detector, LazyDetector) and isinstance(embedder, LazyEmbedder)
    # What the gallery and the recogniser need is known before any model loads.
    assert (embedder.name, embedder.dim) == ("dlib", 128)
    frame = np.full((240, 320, 3), 128, np.uint8)
    service.process(frame, 0.0)
    assert not detector.model.loaded
    granted.add(Purpose.FACE_RECOGNITION)
    service.process(frame, 0.2)
    assert detector.model.loaded and detector.model.loads == 1
    assert not embedder.model.loaded  # no face in the frame: nothing to embed yet
    service.process(frame, 0.4)
    assert detector.model.loads == 1  # kept while consented
    granted.clear()
    service.process(frame, 0.6)
    assert not detector.model.loaded
    granted.add(Purpose.FACE_RECOGNITION)
    service.process(frame, 0.8)
    assert detector.model.loads == 2


def test_a_model_that_fails_to_load_is_logged_once_and_not_retried_per_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    def broken() -> HogDetector:
        attempts.append(1)
        raise FaceModelError("face model x.dat has SHA-256 00, expected 11")

    detector = LazyDetector("hog", broken)
    frame = np.zeros((48, 64, 3), np.uint8)
    with caplog.at_level(logging.ERROR):
        assert detector.detect(frame) == []
        assert detector.detect(frame) == []
    assert len(attempts) == 1
    errors = [r for r in caplog.records if "could not be loaded" in r.getMessage()]
    assert len(errors) == 1 and "SHA-256" in errors[0].getMessage()
    detector.release()  # consent withdrawn: the next consent tries again
    assert detector.detect(frame) == []
    assert len(attempts) == 2


def test_the_plate_reader_is_lazy_only_in_the_daemon_and_checks_settings_at_once() -> None:
    settings = MatchingSettings()
    lazy = reader_from_settings(settings, lazy=True)
    assert isinstance(lazy, LazyPlateReader) and not lazy.model.loaded
    with pytest.raises(ConfigError, match=r"matching\.plate_formats"):
        reader_from_settings(MatchingSettings(plate_formats=("(AB)+",)), lazy=True)
    attempts: list[int] = []

    def broken() -> FrameReader:
        attempts.append(1)
        raise PlateModelError("the plate recogniser cannot read 'Ж'")

    reader = LazyPlateReader(broken)
    frame = np.zeros((48, 64, 3), np.uint8)
    assert reader.locate(frame) == [] and list(reader.read(frame)) == []
    assert len(attempts) == 1


def test_a_missing_library_is_still_an_error_at_start_up() -> None:
    with pytest.raises(FaceModelError, match="pip install"):
        require_module("no_such_module_for_edge_agent", FaceModelError, "pip install it")
