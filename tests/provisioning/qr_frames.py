"""QR codes made by Debian's ``qrencode`` and placed into camera-like frames.

``qrencode`` (libqrencode) is an independent encoder: its default mode mixes
segments (numeric, alphanumeric, 8-bit), which is what phones and label
printers produce and what OpenCV's decoder stumbles on.  A frame is a blurred
random texture with the code placed at a given size in pixels per module,
resampled the way a lens and sensor do (area averaging at a fractional scale),
then a little optical blur and sensor noise.
"""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

QUIET_ZONE = 4  # modules of white around the symbol, as the standard asks
Grey = NDArray[np.uint8]


def qrencode_modules(text: str, *extra: str) -> Grey:
    """The symbol, one pixel per module, no margin (0 = dark, 255 = light)."""
    tool = shutil.which("qrencode")
    if tool is None:
        pytest.skip("qrencode is not installed (apt-get install -y qrencode; make test does)")
    png = subprocess.run(
        [tool, "-t", "PNG", "-s", "1", "-m", "0", "-o", "-", *extra, "--", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    image = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None, "qrencode wrote no PNG"
    return np.asarray(image, dtype=np.uint8)


def scaled_symbol(modules: Grey, px_per_module: float) -> Grey:
    """The symbol with its quiet zone at ``px_per_module`` (fractional: area-resampled)."""
    fine = 8
    big = cv2.resize(modules, None, fx=fine, fy=fine, interpolation=cv2.INTER_NEAREST)
    pad = QUIET_ZONE * fine
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    side = round((modules.shape[0] + 2 * QUIET_ZONE) * px_per_module)
    return np.asarray(cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA), np.uint8)


def camera_frame(
    symbol: Grey,
    size: tuple[int, int] = (640, 480),
    *,
    seed: int = 0,
    noise: float = 4.0,
    blur: float = 0.6,
    offset: tuple[float, float] = (0.5, 0.5),
) -> Grey:
    """``symbol`` placed into a ``size`` (width, height) frame of background texture."""
    width, height = size
    rng = np.random.default_rng(seed)
    texture = rng.integers(60, 200, (height, width)).astype(np.uint8)
    frame = cv2.GaussianBlur(texture, (0, 0), 3)
    side = symbol.shape[0]
    if side > min(width, height):
        raise ValueError(f"a {side} px symbol does not fit a {width}x{height} frame")
    top = int((height - side) * offset[1])
    left = int((width - side) * offset[0])
    frame[top : top + side, left : left + side] = symbol
    if blur:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    noisy = frame.astype(np.float32) + rng.normal(0, noise, frame.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)
