"""Reading QR codes from camera frames with OpenCV's detectors.

The classic ``cv2.QRCodeDetector`` is tried first; on sensor noise it often
misses finder patterns, so the ArUco-based ``cv2.QRCodeDetectorAruco`` (same
decoder, sturdier localisation) gets a second try on the same frame.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.errors import DecodeError

# Big frames are scaled down first: the detector's cost grows with area and a
# code held up to the lens is large anyway.
MAX_SIDE = 1280


class QrReader:
    def __init__(self) -> None:
        self._detectors = (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco())

    def read(self, frame: NDArray[np.uint8]) -> str | None:
        """The text of a QR code in ``frame`` (BGR or grey), or None if none is seen."""
        if frame.ndim not in (2, 3) or frame.size == 0:
            raise DecodeError(f"frame has unusable shape {frame.shape}")
        try:
            image = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            side = max(image.shape[:2])
            if side > MAX_SIDE:
                scale = MAX_SIDE / side
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            for detector in self._detectors:
                text, points, _ = detector.detectAndDecode(image)
                if points is not None and text:
                    return str(text)
        except cv2.error as exc:
            raise DecodeError(f"QR detection failed: {exc}") from exc
        return None


def render_qr(text: str, module_pixels: int = 8, border_modules: int = 4) -> NDArray[np.uint8]:
    """A grey image of ``text`` as a QR code (labels, tests)."""
    try:
        modules = cv2.QRCodeEncoder.create().encode(text)
    except cv2.error as exc:
        raise DecodeError(f"cannot encode QR: {exc}") from exc
    image = cv2.resize(
        modules, None, fx=module_pixels, fy=module_pixels, interpolation=cv2.INTER_NEAREST
    )
    pad = border_modules * module_pixels
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    return np.asarray(padded, dtype=np.uint8)
