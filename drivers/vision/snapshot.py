"""Event snapshots: strangers' faces blurred before a frame may leave the device."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import DecodeError
from agent.matching.tracks import Box

Image = npt.NDArray[np.uint8]


def blur_faces(image: Image, boxes: Iterable[Box], margin: float = 0.15) -> Image:
    """A copy of ``image`` with each box (grown by ``margin``) pixelated and blurred.

    Pixelating before blurring removes the fine detail a plain Gaussian leaves
    recoverable; the result keeps the scene readable but not the face.
    """
    out = image.copy()
    h, w = out.shape[:2]
    for box in boxes:
        dx, dy = int(box.w * margin), int(box.h * margin)
        x0, y0 = max(0, box.x - dx), max(0, box.y - dy)
        x1, y1 = min(w, box.x + box.w + dx), min(h, box.y + box.h + dy)
        if x1 <= x0 or y1 <= y0:
            continue
        region = out[y0:y1, x0:x1]
        small = cv2.resize(
            region, (max(1, (x1 - x0) // 12), max(1, (y1 - y0) // 12)),
            interpolation=cv2.INTER_AREA,
        )
        coarse = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        kernel = max(3, ((min(x1 - x0, y1 - y0) // 4) | 1))
        out[y0:y1, x0:x1] = cv2.GaussianBlur(coarse, (kernel, kernel), 0)
    return out


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise DecodeError("JPEG encoding failed")
    return bytes(data.tobytes())
