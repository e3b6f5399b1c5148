"""Camera frames with a licence plate drawn in, for the plate tests and the bench.

A 640x480 street-ish scene (a gradient, a car body, a kerb) with a white plate
rectangle of a chosen pixel width whose text is drawn by ``cv2.putText``; a
``degrade`` step adds what a camera adds (blur, sensor noise, JPEG).
"""

from __future__ import annotations

import random
import string

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
# The format the tests configure (``matching.plate_formats``): two letters, three
# digits, two letters, as in many European series.
FORMAT = r"[A-Z]{2}\d{3}[A-Z]{2}"


def plate_text(rng: random.Random) -> str:
    letters = string.ascii_uppercase
    return (
        "".join(rng.choice(letters) for _ in range(2))
        + "".join(rng.choice(string.digits) for _ in range(3))
        + "".join(rng.choice(letters) for _ in range(2))
    )


def scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[:] = np.linspace(70, 170, WIDTH, dtype=np.float32)[None, :, None].astype(np.uint8)
    frame[380:] = (90, 95, 100)  # road
    cv2.rectangle(frame, (0, 370), (WIDTH, 380), (150, 150, 150), -1)  # kerb
    colour = tuple(int(c) for c in rng.integers(20, 200, 3))
    cv2.rectangle(frame, (120, 200), (520, 400), colour, -1)  # car body
    cv2.rectangle(frame, (170, 140), (470, 210), (60, 60, 60), -1)  # windows
    cv2.circle(frame, (190, 400), 35, (20, 20, 20), -1)
    cv2.circle(frame, (450, 400), 35, (20, 20, 20), -1)
    return frame


def draw_plate(frame: np.ndarray, text: str, width: int, x: int, y: int) -> np.ndarray:
    """``frame`` with a white plate ``width`` px wide (height 0.22 width) at (x, y)."""
    out = frame.copy()
    height = max(8, round(width * 0.22))
    cv2.rectangle(out, (x, y), (x + width, y + height), (255, 255, 255), -1)
    cv2.rectangle(out, (x, y), (x + width, y + height), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, _), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = width * 0.88 / tw
    thickness = max(1, round(scale * 2))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = (x + (width - tw) // 2, y + (height + th) // 2)
    cv2.putText(out, text, origin, font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return out


def degrade(frame: np.ndarray, rng: np.random.Generator, *, jpeg: int = 80) -> np.ndarray:
    """Slight defocus, sensor noise and JPEG, as a camera stream has."""
    out = cv2.GaussianBlur(frame, (3, 3), 0.6)
    noisy = out.astype(np.int16) + rng.normal(0, 3.0, out.shape).astype(np.int16)
    out = np.clip(noisy, 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
    assert ok
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)


def plate_frame(
    text: str, width: int, *, seed: int = 0, x: int = 240, y: int = 300, camera: bool = True
) -> np.ndarray:
    """A 640x480 frame of a car with plate ``text`` ``width`` px wide at (x, y)."""
    frame = draw_plate(scene(seed), text, width, x - width // 2 + 80, y)
    return degrade(frame, np.random.default_rng(seed)) if camera else frame
