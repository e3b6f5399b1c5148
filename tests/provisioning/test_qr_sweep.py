"""How small a QR code the camera reads: a sweep of module size against frame size.

Codes are made by Debian's ``qrencode`` (its default mixed-mode encoding, with
non-ASCII text among the payloads) and placed into camera-like frames.  The
stated minimum is ``STATED_MIN_PX_PER_MODULE`` (2 px per module, measured in the
frame as analysed: frames wider than ``MAX_SIDE`` are scaled down first): at
and above it every frame of the sweep decodes.  Below it the OpenCV-located
crop still reads codes that zxing-cpp alone misses.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.provisioning.wifi import Security, WifiCredentials
from agent.provisioning.wifi_qr import format_wifi_qr, parse_wifi_qr
from drivers.provisioning.qr_reader import MAX_SIDE, STATED_MIN_PX_PER_MODULE, QrReader
from tests.provisioning.qr_frames import camera_frame, qrencode_modules, scaled_symbol

PAYLOADS = {
    "wifi-ascii": "WIFI:T:WPA;S:HomeNet;P:correct horse battery;;",
    # qrencode's default mode splits this into 8-bit and alphanumeric segments.
    "wifi-non-ascii": "WIFI:T:WPA;S:Café Ünïcode;P:pässwörd-ÄÖÜ-123;;",
    "binding-json": (
        '{"v":2,"account":"acme-7","token":"bind_' + "Zx9" * 8 + '","exp":1800003600,'
        '"key":"' + "ab" * 32 + '","proof":"' + "cd" * 16 + '"}'
    ),
}
SIZES_AT_OR_ABOVE_MINIMUM = (2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 6.0)
SEEDS = range(4)


def _placements(seed: int) -> tuple[float, float]:
    # Spread over the frame, corners included.
    return ((seed * 0.37) % 1.0, (seed * 0.61) % 1.0)


@pytest.fixture(scope="module")
def reader() -> QrReader:
    return QrReader()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("frame_size", [(640, 480), (1280, 720)], ids=["480p", "720p"])
def test_every_code_at_or_above_the_stated_minimum_decodes(
    reader: QrReader, payload: str, frame_size: tuple[int, int]
) -> None:
    text = PAYLOADS[payload]
    modules = qrencode_modules(text)
    missed = []
    for px in SIZES_AT_OR_ABOVE_MINIMUM:
        symbol = scaled_symbol(modules, px)
        if symbol.shape[0] > frame_size[1]:
            continue
        for seed in SEEDS:
            frame = camera_frame(symbol, frame_size, seed=seed, offset=_placements(seed))
            if reader.read(frame) != text:
                missed.append((px, seed))
    assert STATED_MIN_PX_PER_MODULE == 2.0
    assert missed == [], f"{payload} in {frame_size}: missed (px/module, seed) {missed}"


@pytest.mark.parametrize("angle", [15, 30, 45])
def test_rotated_codes_at_the_minimum_decode(reader: QrReader, angle: float) -> None:
    text = PAYLOADS["wifi-non-ascii"]
    symbol = scaled_symbol(qrencode_modules(text), STATED_MIN_PX_PER_MODULE)
    canvas = int(symbol.shape[0] * 1.5)
    placed = np.full((canvas, canvas), 255, dtype=np.uint8)
    corner = (canvas - symbol.shape[0]) // 2
    placed[corner : corner + symbol.shape[0], corner : corner + symbol.shape[0]] = symbol
    turn = cv2.getRotationMatrix2D((canvas / 2, canvas / 2), angle, 1.0)
    rotated = cv2.warpAffine(placed, turn, (canvas, canvas), flags=cv2.INTER_AREA, borderValue=255)
    for seed in SEEDS:
        frame = camera_frame(np.asarray(rotated, dtype=np.uint8), seed=seed)
        assert reader.read(frame) == text, (angle, seed)


def test_large_frames_are_judged_at_the_analysed_size(reader: QrReader) -> None:
    """A 2560x1440 frame is scaled to MAX_SIDE: its codes need 2 px per module after that."""
    text = PAYLOADS["wifi-ascii"]
    modules = qrencode_modules(text)
    scale = 2560 / MAX_SIDE
    symbol = scaled_symbol(modules, STATED_MIN_PX_PER_MODULE * scale)
    for seed in SEEDS:
        frame = camera_frame(symbol, (2560, 1440), seed=seed, offset=_placements(seed))
        assert reader.read(frame) == text


def test_the_opencv_located_crop_reads_codes_zxing_alone_misses() -> None:
    """Below the minimum (1.5 px per module) locating with OpenCV is what still reads."""
    located, alone = QrReader(), QrReader(locate_with_opencv=False)
    hits_located = hits_alone = total = 0
    for text in PAYLOADS.values():
        symbol = scaled_symbol(qrencode_modules(text), 1.5)
        for seed in range(6):
            frame = camera_frame(symbol, seed=seed, offset=_placements(seed))
            hits_located += located.read(frame) == text
            hits_alone += alone.read(frame) == text
            total += 1
    assert hits_alone < hits_located
    assert hits_located >= total * 2 // 3, (hits_located, total)


@pytest.mark.parametrize(
    ("extra", "name"), [((), "mixed"), (("-8",), "8-bit"), (("-l", "H"), "level H")]
)
def test_qrencode_modes_of_a_wifi_code_decode_to_the_credentials(
    reader: QrReader, extra: tuple[str, ...], name: str
) -> None:
    credentials = WifiCredentials("Café;Net", "pässwörd:123")
    text = format_wifi_qr(credentials, Security.WPA2_PSK)
    frame = camera_frame(scaled_symbol(qrencode_modules(text, *extra), 3.0), seed=1)
    read = reader.read(frame)
    assert read == text, name
    assert parse_wifi_qr(read).credentials == credentials
