"""Event snapshots that fail closed: only a positively matched enrolled face is ever sharp.

Blurring the faces a detector found fails open: a face it misses (too small,
turned away, badly lit) and a stranger it matched falsely both go out sharp.
So the snapshot starts from the other end: the whole frame is pixelated, and
exactly one box -- the face the event is about, matched to an enrolled identity
above the snapshot threshold -- is copied back in.  Whatever the detector or
the matcher got wrong elsewhere in the frame stays a coarse mosaic.

The pixel blocks are sized from the frame, not from any face (which may never
have been found): the frame's short side is at most :data:`BLOCKS_ACROSS`
blocks, so no face anywhere in it keeps more detail than that.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import DecodeError
from agent.matching.tracks import Box

Image = npt.NDArray[np.uint8]
BLOCKS_ACROSS = 8


def pixelate(image: Image) -> Image:
    """``image`` as a mosaic of blocks, at most BLOCKS_ACROSS along its short side."""
    h, w = image.shape[:2]
    block = max(1, min(h, w) // BLOCKS_ACROSS)
    small = cv2.resize(
        image, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA
    )
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), np.uint8)


def only_sharp_in(image: Image, box: Box) -> Image:
    """``image`` pixelated everywhere but inside ``box`` (clipped to the image)."""
    out = pixelate(image)
    h, w = image.shape[:2]
    x0, y0 = max(0, box.x), max(0, box.y)
    x1, y1 = min(w, box.x + box.w), min(h, box.y + box.h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise DecodeError("JPEG encoding failed")
    return bytes(data.tobytes())
