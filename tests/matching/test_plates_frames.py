"""Plates read from camera frames by the shipped PP-OCRv6 models, voted per track, matched.

Every test here runs the real localiser and recogniser (onnxruntime on the
digest-checked files of the rapidocr wheel) on frames rendered with
``cv2.putText``; the plate service runs its real worker thread and is fed
through the real frame bus.
"""

from __future__ import annotations

import pathlib
import shutil
import time

import numpy as np
import pytest

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.events import Event
from agent.framebus import FrameBus
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.plates import PlateList, PlateReading, compile_format, fit_format
from agent.matching.plates_vote import LocatedReading, PlateVoter
from agent.matching.settings import MatchingSettings, PlateReaderKind
from agent.matching.tracks import Box
from drivers.vision import plate_ocr
from drivers.vision.plate_ocr import PlateModelError, PpOcrPlateReader, restricted_decode
from drivers.vision.plate_reader import PlateService, build_service
from drivers.vision.plate_worker import PlateWorker, thumbnail
from tests.matching.plate_frames import FORMAT, plate_frame, scene

CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def reader() -> PpOcrPlateReader:
    return PpOcrPlateReader(charset=CHARSET, formats=(FORMAT,))


def _service(tmp_path: pathlib.Path, granted: dict[str, bool], **settings: object) -> PlateService:
    chosen: dict[str, object] = {"plate_formats": (FORMAT,), **settings}
    config = AgentConfig(
        state_dir=tmp_path, matching=MatchingSettings(**chosen)  # type: ignore[arg-type]
    )
    return build_service(
        config,
        is_granted=lambda purpose: granted["on"],
        clock=Clock(),
        keys=DataKeys(StateLayout(tmp_path)),
    )


def _tick_until(service: PlateService, deadline: float, now: float) -> list[Event]:
    while time.monotonic() < deadline:
        events = list(service.tick(now))
        if events:
            return events
        time.sleep(0.02)
    return []


# --- the real models on rendered frames ----------------------------------------------


@pytest.mark.parametrize("width", [100, 140])
def test_plate_in_a_camera_frame_is_located_and_read(
    reader: PpOcrPlateReader, width: int
) -> None:
    frame = plate_frame("KX904TR", width, seed=width)
    (found,) = reader.locate(frame)
    assert found.reading.text == "KX904TR"
    assert found.reading.confidence >= 0.5
    # The box is where the plate was drawn (centre x = 320, top y = 300).
    assert abs(found.box.x + found.box.w / 2 - 320) < width / 4
    assert 290 <= found.box.y <= 310 and width * 0.8 <= found.box.w <= width * 1.4


def test_text_outside_the_configured_format_is_not_a_plate(reader: PpOcrPlateReader) -> None:
    frame = plate_frame("GARAGE", 140)  # a sign, not a plate of the format
    assert reader.locate(frame) == []
    free = PpOcrPlateReader(charset=CHARSET)  # no formats: any 4..10 characters
    assert [f.reading.text for f in free.locate(frame)] == ["GARAGE"]


def test_charset_restriction_reads_lower_case_as_capitals_and_drops_the_rest() -> None:
    characters = ["-", "a", "A", "1", "中"]  # classes 1..5 after the blank
    groups = plate_ocr.class_groups(characters, "A1")
    assert groups.tolist() == [0, 0, 1, 1, 2, 0]

    def steps(*classes: int) -> np.ndarray:
        out = np.full((len(classes), 6), 0.01, np.float32)
        for step, cls in enumerate(classes):
            out[step, cls] = 0.95
        return out

    # "a", "-", "A", "中", "1": the dash and the hanzi separate, lower case folds.
    reading = restricted_decode(steps(2, 1, 3, 5, 4, 4), groups, "A1")
    assert reading.text == "AA1"
    assert 0.9 < reading.confidence <= 1.0


def test_readings_are_fitted_to_the_format_by_confusable_swaps(
    reader: PpOcrPlateReader,
) -> None:
    formats = [compile_format(FORMAT)]
    pairs = ("O0", "I1", "B8", "S5", "Z2")
    assert fit_format("S0841RP", formats, pairs) == "SO841RP"
    assert fit_format("MF6630V", formats, pairs) == "MF663OV"
    assert fit_format("AB12CD", formats, pairs) is None  # a character short: no guess
    assert fit_format("0O0O0O0", formats, pairs) is None
    # In a frame: this font draws O and 0 alike; the format decides which it is.
    (found,) = reader.locate(plate_frame("SO841RP", 140, seed=4))
    assert found.reading.text == "SO841RP"


# --- the service: frame bus -> worker thread -> vote -> watch-list -> event ------------


def test_plate_on_the_watch_list_seen_by_the_camera_becomes_one_event(
    tmp_path: pathlib.Path,
) -> None:
    granted = {"on": True}
    service = _service(tmp_path, granted, plate_every_n_frames=1, plate_vote_frames=2)
    service.core.enrol("KX904TR", plate_list=PlateList.DENY, label="van", now=1.0)
    service.core.enrol("AB123CD", now=1.0)
    bus: FrameBus[np.ndarray] = FrameBus()
    bus.subscribe("plates", service.offer_frame)
    service.start()
    try:
        assert list(service.tick(1.0)) == []  # the tick that lets the worker read
        events: list[Event] = []
        # The car drives a little between frames; the frames are degraded like a camera's.
        for step in range(12):
            bus.publish(plate_frame("KX904TR", 100, seed=step, x=230 + 3 * step))
            events += _tick_until(service, time.monotonic() + 1.5, 2.0 + step)
            if events:
                break
        assert [e.identifiers["plate"] for e in events] == ["KX904TR"]
        (event,) = events
        assert event.type == "plate.match"
        assert (event.fields["list"], event.fields["label"], event.fields["camera"]) == (
            "deny", "van", "cam0",
        )
        # The same car keeps being seen: its track has reported, no second event.
        for step in range(4):
            bus.publish(plate_frame("KX904TR", 100, seed=50 + step, x=270 + 3 * step))
        assert service.worker is not None
        read_before = service.worker.stats.read
        deadline = time.monotonic() + 10
        while service.worker.stats.read < read_before + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert service.worker.stats.read > read_before
        # A second later, as the camera goes on: within the voter's memory of the car
        # (3 s), so a second event would be the same car reported twice.  (At 20.0 the
        # track was long forgotten, and two reads under CPU load made a new one.)
        assert list(service.tick(event.occurred_at + 1.0)) == []
    finally:
        service.stop()


def test_without_consent_no_frame_is_read(tmp_path: pathlib.Path) -> None:
    granted = {"on": True}
    service = _service(tmp_path, granted, plate_every_n_frames=1)
    service.core.enrol("KX904TR", now=1.0)
    assert service.worker is not None
    service.start()
    try:
        granted["on"] = False
        service.tick(1.0)
        for _ in range(5):
            service.offer_frame(plate_frame("KX904TR", 140))
        assert service.worker.stats.sampled == 0
        # Granted again: frames are taken on the next tick.
        granted["on"] = True
        service.tick(2.0)
        service.offer_frame(plate_frame("KX904TR", 140))
        assert service.worker.stats.sampled == 1
    finally:
        service.stop()


def test_sampling_takes_every_nth_frame_or_motion_and_drops_while_busy() -> None:
    class Slow:
        calls = 0

        def locate(self, frame: np.ndarray) -> list[LocatedReading]:
            Slow.calls += 1
            time.sleep(0.3)
            return []

    still = scene(1)
    worker = PlateWorker(Slow(), every_n_frames=5, motion_level=0.0)
    worker.active = True
    for _ in range(100):
        worker.offer(still)
    assert worker.stats.sampled == 20  # not started: the one-slot queue kept replacing
    assert worker.stats.dropped == 19
    moving = PlateWorker(Slow(), every_n_frames=1000, motion_level=3.0)
    moving.active = True
    moving._last_thumb = None
    moving.offer(still)  # nothing read yet: the first frame counts as motion
    moving.read_now(still)
    moving._last_thumb = thumbnail(still)
    moving.offer(still)  # the same scene: not moved
    moving.offer(plate_frame("KX904TR", 140, seed=3))  # a car arrived
    assert moving.stats.sampled == 2
    # The worker thread never holds up the camera: offers return while it reads.
    worker.start()
    try:
        started = time.monotonic()
        for _ in range(50):
            worker.offer(still)
        assert time.monotonic() - started < 0.25
    finally:
        worker.stop()


def test_voting_needs_agreeing_frames_of_one_track() -> None:
    voter = PlateVoter(vote_frames=2, forget_after=3.0)

    def seen(text: str, x: int, conf: float = 0.9) -> LocatedReading:
        return LocatedReading(PlateReading(text, conf), Box(x, 300, 100, 24, 1.0))

    assert voter.add([seen("KX9O4TR", 200)], 1.0) == []
    assert voter.add([seen("KX904TR", 205), seen("AB123CD", 500)], 1.2) == []
    assert voter.add([seen("KX904TR", 210)], 1.4) == ["KX904TR"]
    assert voter.add([seen("KX904TR", 215)], 1.6) == []  # reported once per track
    assert voter.add([seen("AB123CD", 505)], 1.8) == ["AB123CD"]
    # After the track was forgotten the same car coming back is reported again.
    assert voter.add([seen("KX904TR", 210)], 9.0) == []
    assert voter.add([seen("KX904TR", 212)], 9.2) == ["KX904TR"]


# --- hostile frames and models ---------------------------------------------------------


def test_hostile_frames_never_crash_the_reader(reader: PpOcrPlateReader) -> None:
    rng = np.random.default_rng(7)
    huge = np.full((480, 640, 3), 255, np.uint8)
    import cv2

    cv2.putText(huge, "AB123CD", (0, 400), cv2.FONT_HERSHEY_SIMPLEX, 7.0, (0, 0, 0), 25)
    many = scene(2)
    for row in range(0, 480, 14):
        cv2.putText(many, "AB123CD KX904TR", (0, row), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1)
    frames = [
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 255, np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        huge,
        many,
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((3000, 8, 3), np.uint8),
        rng.integers(0, 256, (480, 640), dtype=np.uint8),
        rng.integers(0, 256, (480, 640, 4), dtype=np.uint8),
    ]
    for frame in frames:
        found = reader.locate(frame)
        assert all(f.reading.text and len(f.reading.text) == 7 for f in found)
    worker = PlateWorker(reader)
    for bad in (np.zeros((4, 4, 7), np.uint8), np.zeros((0, 0, 3), np.uint8)):
        assert worker.read_now(bad) == []
    assert worker.stats.failed == 2


def test_changed_model_file_is_refused_with_its_name(tmp_path: pathlib.Path) -> None:
    for name in plate_ocr.DIGESTS:
        shutil.copy(plate_ocr.models_dir() / name, tmp_path / name)
    PpOcrPlateReader(charset=CHARSET, directory=tmp_path)  # the copies load
    with (tmp_path / plate_ocr.RECOGNISER).open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00" * 16)
    with pytest.raises(PlateModelError, match=r"PP-OCRv6_rec_small.onnx has SHA-256"):
        PpOcrPlateReader(charset=CHARSET, directory=tmp_path)
    (tmp_path / plate_ocr.DETECTOR).unlink()
    with pytest.raises(PlateModelError, match=r"PP-OCRv6_det_small.onnx cannot be read"):
        PpOcrPlateReader(charset=CHARSET, directory=tmp_path)


def test_bad_plate_settings_are_config_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"matching\.plate_formats"):
        _service(tmp_path, {"on": True}, plate_formats=("(AB)+",))
    with pytest.raises(PlateModelError, match="cannot read"):
        PpOcrPlateReader(charset=CHARSET + "Ж")
    off = build_service(
        AgentConfig(
            state_dir=tmp_path, matching=MatchingSettings(plate_reader=PlateReaderKind.OFF)
        ),
        is_granted=lambda p: True, clock=Clock(), keys=DataKeys(StateLayout(tmp_path)),
    )
    assert off.reader is None and off.worker is None
    off.stop()
