"""The cv2.dnn ONNX plate reader with a real (tiny, hand-encoded) ONNX model."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from agent.config import AgentConfig
from agent.errors import ConfigError, DecodeError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.plates import MatchPolicy
from agent.matching.plates_service import PlateRecognition
from agent.matching.plates_store import PlateStore
from agent.matching.settings import MatchingSettings
from drivers.vision.plate_reader import OnnxPlateReader, PlateService, build_service

CHARSET = "0123456789ABC"
STEPS, CLASSES = 24, len(CHARSET) + 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _value_info(name: str, dims: list[int]) -> bytes:
    shape = b"".join(_field(1, _int_field(1, d)) for d in dims)
    tensor = _int_field(1, 1) + _field(2, shape)  # elem_type FLOAT, shape
    return _field(1, name.encode()) + _field(2, _field(1, tensor))


def onnx_model(op: str, dims: list[int]) -> bytes:
    """ModelProto{ir 7, opset 13, graph: y = op(x)} in protobuf wire format."""
    node = _field(1, b"x") + _field(2, b"y") + _field(3, b"n0") + _field(4, op.encode())
    graph = (
        _field(1, node)
        + _field(2, b"g")
        + _field(11, _value_info("x", dims))
        + _field(12, _value_info("y", dims))
    )
    return _int_field(1, 7) + _field(8, _field(1, b"") + _int_field(2, 13)) + _field(7, graph)


@pytest.fixture
def model(tmp_path: pathlib.Path) -> pathlib.Path:
    # A Relu "recogniser": the plate image itself is the [T, C] logit map.
    path = tmp_path / "plate.onnx"
    path.write_bytes(onnx_model("Relu", [1, 1, STEPS, CLASSES]))
    return path


def logit_image(labels: list[int]) -> np.ndarray:
    image = np.zeros((STEPS, CLASSES), dtype=np.uint8)
    image[np.arange(STEPS), labels] = 255
    return image


def test_reads_text_through_cv2_dnn(model: pathlib.Path) -> None:
    reader = OnnxPlateReader(model, charset=CHARSET, input_size=(CLASSES, STEPS))
    # A=11 B=12 1=2 2=3 3=4 with blanks (0) and repeats between.
    labels = [11, 11, 0, 12, 0, 0, 2, 2, 3, 0, 4] + [0] * 13
    (reading,) = reader.read(logit_image(labels))
    assert reading.text == "AB123"
    assert 0 < reading.confidence <= 1


def test_blank_image_reads_nothing(model: pathlib.Path) -> None:
    reader = OnnxPlateReader(model, charset=CHARSET, input_size=(CLASSES, STEPS))
    assert reader.read(logit_image([0] * STEPS)) == []


def test_missing_model_is_a_clear_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"matching.plate_model: model file not found"):
        OnnxPlateReader(tmp_path / "absent.onnx", charset=CHARSET, input_size=(94, 24))


@pytest.mark.parametrize("content", [b"", b"not a model at all" * 10, b"\x08\x07\x42\xff\xff"])
def test_wrong_model_file_is_a_clear_config_error(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"matching.plate_model"):
        OnnxPlateReader(path, charset=CHARSET, input_size=(94, 24))


def test_model_directory_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError):
        OnnxPlateReader(tmp_path, charset=CHARSET, input_size=(94, 24))


def test_output_not_fitting_the_charset_is_a_decode_error(model: pathlib.Path) -> None:
    reader = OnnxPlateReader(model, charset="AB", input_size=(CLASSES, STEPS))
    with pytest.raises(DecodeError, match="no axis"):
        reader.read(logit_image([0] * STEPS))


def test_build_service_with_missing_model_fails_clearly(tmp_path: pathlib.Path) -> None:
    config = AgentConfig(
        state_dir=tmp_path, matching=MatchingSettings(plate_model=tmp_path / "nope.onnx")
    )

    class Clock:
        def now(self) -> float:
            return 0.0

        def monotonic(self) -> float:
            return 0.0

    with pytest.raises(ConfigError, match="not found"):
        build_service(
            config, is_granted=lambda p: True, clock=Clock(), keys=DataKeys(StateLayout(tmp_path))
        )


def test_image_readings_are_matched_only_with_consent(
    model: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    granted = {"on": True}
    core = PlateRecognition(
        PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path))),
        MatchPolicy(), lambda p: granted["on"]
    )
    core.enrol("AB123", now=1.0)

    class Clock:
        def now(self) -> float:
            return 5.0

        def monotonic(self) -> float:
            return 0.0

    reader = OnnxPlateReader(model, charset=CHARSET, input_size=(CLASSES, STEPS))
    service = PlateService(core, Clock(), reader)
    image = logit_image([11, 0, 12, 0, 2, 0, 3, 0, 9] + [0] * 15)  # "AB128": one off
    assert [m.entry.plate for m in service.observe_image(image)] == ["AB123"]
    # The same frame through the shared camera's bus: one plate.match event per tick.
    service.latest.offer(image)
    (event,) = service.tick(6.0)
    assert (event.type, event.identifiers["plate"], event.fields["camera"]) == (
        "plate.match",
        "AB123",
        "cam0",
    )
    assert list(service.tick(7.0)) == []  # the frame was taken
    granted["on"] = False
    assert service.observe_image(image) == []
    service.latest.offer(image)
    assert list(service.tick(8.0)) == []
