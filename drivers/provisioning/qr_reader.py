"""Reading QR codes from camera frames: zxing-cpp decodes, OpenCV only helps locate.

zxing-cpp reads every QR mode and character set (``qrencode``'s mixed-mode
symbols with non-ASCII text among them, which OpenCV's decoder returns as empty
text) and needs fewer pixels per module.  When it finds nothing in the whole
frame, OpenCV's detector gets one try at locating a code: the region it points
at is cut out, enlarged and handed back to zxing-cpp, which then reads codes
down to about 1.5 pixels per module.  Minimum sizes, measured by
tests/provisioning/test_qr_sweep.py: zxing-cpp alone reads from 1.75 px per
module, with the located crop from 1.5; the stated minimum is 2 px per module.
"""

from __future__ import annotations

import cv2
import numpy as np
import zxingcpp
from numpy.typing import NDArray

from agent.errors import DecodeError

# Frames larger than this are scaled down first (zxing-cpp's cost grows with area).
MAX_SIDE = 1920
# The OpenCV detector is far slower than zxing-cpp: it looks at a smaller copy.
DETECT_SIDE = 1280
# Enlargement of the located region and the margin kept around it (of its side).
CROP_SCALE = 3.0
CROP_MARGIN = 0.25
MAX_CROP_SIDE = 1600
STATED_MIN_PX_PER_MODULE = 2.0
QR_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)

Grey = NDArray[np.uint8]


class QrReader:
    def __init__(self, *, locate_with_opencv: bool = True) -> None:
        self._detectors = (
            (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()) if locate_with_opencv else ()
        )

    def read(self, frame: NDArray[np.uint8]) -> str | None:
        """The text of a QR code in ``frame`` (BGR or grey), or None if none is seen."""
        if frame.ndim not in (2, 3) or frame.size == 0:
            raise DecodeError(f"frame has unusable shape {frame.shape}")
        try:
            image = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            image = _fit(np.ascontiguousarray(image, dtype=np.uint8), MAX_SIDE)
            text = _decode(image)
            if text is None:
                text = self._located(image)
        except cv2.error as exc:
            raise DecodeError(f"QR detection failed: {exc}") from exc
        return text

    def _located(self, image: Grey) -> str | None:
        """OpenCV finds where a code is; zxing-cpp reads the enlarged region."""
        small = _fit(image, DETECT_SIDE)
        factor = image.shape[1] / small.shape[1]
        for detector in self._detectors:
            found, points = detector.detect(small)
            if not found or points is None:
                continue
            corners = np.asarray(points, dtype=np.float64).reshape(-1, 2) * factor
            text = _decode(_crop(image, corners))
            if text is not None:
                return text
        return None


def _fit(image: Grey, side: int) -> Grey:
    largest = max(image.shape[:2])
    if largest <= side:
        return image
    scale = side / largest
    resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.asarray(resized, dtype=np.uint8)


def _crop(image: Grey, corners: NDArray[np.float64]) -> Grey:
    low, high = corners.min(axis=0), corners.max(axis=0)
    margin = CROP_MARGIN * float(max(high - low)) + 4
    rows, cols = image.shape[:2]
    x0, y0 = (max(0, int(v - margin)) for v in low)
    x1, y1 = int(min(cols, high[0] + margin + 1)), int(min(rows, high[1] + margin + 1))
    region = image[y0:y1, x0:x1]
    if region.size == 0:
        return region
    scale = min(CROP_SCALE, MAX_CROP_SIDE / max(region.shape[:2]))
    enlarged = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return np.asarray(enlarged, dtype=np.uint8)


def _decode(image: Grey) -> str | None:
    if image.size == 0:
        return None
    for barcode in zxingcpp.read_barcodes(image, formats=QR_ONLY):
        if barcode.valid and barcode.text:
            return barcode.text
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
