"""Synthetic faces drawn with OpenCV primitives, for the SAMPLE camera and tests.

Each identity is a seed: it fixes face shape, skin tone, eye spacing and size,
brows, nose, mouth and hair.  Every rendering then jitters pose (shift, scale,
in-plane rotation), lighting (gain, offset, gradient) and adds sensor noise, so
an embedder has to generalise across captures of the same person.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


@dataclasses.dataclass(frozen=True)
class FaceTraits:
    face_w: float
    face_h: float
    skin: int
    eye_dx: float
    eye_y: float
    eye_r: float
    brow_tilt: float
    brow_thick: int
    nose_len: float
    mouth_w: float
    mouth_y: float
    mouth_curve: float
    hair: int
    hair_h: float
    freckles: tuple[tuple[float, float], ...]

    @classmethod
    def for_identity(cls, identity: int) -> FaceTraits:
        rng = np.random.default_rng(10_007 * identity + 17)
        return cls(
            face_w=float(rng.uniform(0.36, 0.46)),
            face_h=float(rng.uniform(0.48, 0.58)),
            skin=int(rng.integers(130, 220)),
            eye_dx=float(rng.uniform(0.14, 0.22)),
            eye_y=float(rng.uniform(-0.14, -0.04)),
            eye_r=float(rng.uniform(0.035, 0.065)),
            brow_tilt=float(rng.uniform(-0.05, 0.05)),
            brow_thick=int(rng.integers(1, 4)),
            nose_len=float(rng.uniform(0.08, 0.18)),
            mouth_w=float(rng.uniform(0.10, 0.22)),
            mouth_y=float(rng.uniform(0.18, 0.30)),
            mouth_curve=float(rng.uniform(-0.05, 0.06)),
            hair=int(rng.integers(10, 120)),
            hair_h=float(rng.uniform(0.06, 0.2)),
            freckles=tuple(
                (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.1, 0.35)))
                for _ in range(int(rng.integers(0, 6)))
            ),
        )


def _pt(cx: float, cy: float, x: float, y: float, size: float) -> tuple[int, int]:
    return round(cx + x * size), round(cy + y * size)


def draw_face(
    canvas: Image, traits: FaceTraits, cx: float, cy: float, size: float
) -> tuple[int, int, int, int]:
    """Draw one upright face centred at (cx, cy); returns its box (x, y, w, h)."""
    s = size
    axes = (int(traits.face_w * s), int(traits.face_h * s))
    color = (traits.skin,) * 3
    cv2.ellipse(canvas, _pt(cx, cy, 0, 0, s), axes, 0, 0, 360, color, -1, cv2.LINE_AA)
    hair_axes = (axes[0], int((traits.face_h * 0.55 + traits.hair_h) * s))
    cv2.ellipse(
        canvas, _pt(cx, cy, 0, -traits.face_h * 0.55, s), hair_axes, 0, 180, 360,
        (traits.hair,) * 3, -1, cv2.LINE_AA,
    )
    eye_r = max(1, int(traits.eye_r * s))
    for side in (-1, 1):
        centre = _pt(cx, cy, side * traits.eye_dx, traits.eye_y, s)
        cv2.ellipse(canvas, centre, (int(eye_r * 1.6), eye_r), 0, 0, 360, (235,) * 3, -1)
        cv2.circle(canvas, centre, max(1, int(eye_r * 0.7)), (25,) * 3, -1, cv2.LINE_AA)
        brow_a = _pt(cx, cy, side * (traits.eye_dx - 0.07), traits.eye_y - 0.09, s)
        brow_b = _pt(cx, cy, side * (traits.eye_dx + 0.07), traits.eye_y - 0.09 + side *
                     traits.brow_tilt, s)
        thickness = max(1, int(traits.brow_thick * s / 60))
        cv2.line(canvas, brow_a, brow_b, (40,) * 3, thickness, cv2.LINE_AA)
    nose_top = _pt(cx, cy, 0, traits.eye_y + 0.04, s)
    nose_tip = _pt(cx, cy, 0.03, traits.eye_y + 0.04 + traits.nose_len, s)
    nose_shade = max(0, traits.skin - 70)
    cv2.line(canvas, nose_top, nose_tip, (nose_shade,) * 3, max(1, int(s / 50)), cv2.LINE_AA)
    cv2.line(canvas, nose_tip, _pt(cx, cy, -0.03, traits.eye_y + 0.05 + traits.nose_len, s),
             (nose_shade,) * 3, max(1, int(s / 50)), cv2.LINE_AA)
    mouth = _pt(cx, cy, 0, traits.mouth_y, s)
    mouth_axes = (max(1, int(traits.mouth_w * s)), max(1, int(abs(traits.mouth_curve) * s) + 1))
    start, end = (0, 180) if traits.mouth_curve >= 0 else (180, 360)
    cv2.ellipse(canvas, mouth, mouth_axes, 0, start, end, (60, 40, 40), max(1, int(s / 40)),
                cv2.LINE_AA)
    for fx, fy in traits.freckles:
        freckle = (max(0, traits.skin - 50),) * 3
        cv2.circle(canvas, _pt(cx, cy, fx, fy, s), max(1, int(s / 70)), freckle, -1)
    half_w, half_h = traits.face_w * s, traits.face_h * s
    return int(cx - half_w), int(cy - half_h), int(2 * half_w), int(2 * half_h)


def render_face(
    identity: int, rng: np.random.Generator, size: int = 160, jitter: float = 1.0
) -> Image:
    """One BGR capture of ``identity`` with pose and lighting jitter (0 = none)."""
    background = int(rng.integers(60, 200))
    canvas = np.full((size, size, 3), background, dtype=np.uint8)
    traits = FaceTraits.for_identity(identity)
    shift = jitter * size * 0.04
    scale = size * (1.0 + jitter * float(rng.uniform(-0.08, 0.08)))
    draw_face(
        canvas, traits,
        size / 2 + float(rng.uniform(-shift, shift)),
        size / 2 + float(rng.uniform(-shift, shift)),
        scale,
    )
    angle = jitter * float(rng.uniform(-8, 8))
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    rotated = cv2.warpAffine(canvas, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)
    gain = 1.0 + jitter * float(rng.uniform(-0.25, 0.25))
    offset = jitter * float(rng.uniform(-25, 25))
    ramp = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None]
    gradient = jitter * float(rng.uniform(-20, 20)) * ramp
    noise = rng.normal(0, 4 * jitter, canvas.shape).astype(np.float32)
    lit = rotated.astype(np.float32) * gain + offset + gradient + noise
    blurred = cv2.GaussianBlur(np.clip(lit, 0, 255).astype(np.uint8), (3, 3), 0.6)
    return np.asarray(blurred, dtype=np.uint8)


def render_scene(
    identities: list[int], rng: np.random.Generator, width: int, height: int
) -> tuple[Image, list[tuple[int, int, int, int]]]:
    """A frame with one face per identity side by side; returns the frame and face boxes."""
    frame = np.full((height, width, 3), int(rng.integers(70, 180)), dtype=np.uint8)
    cv2.rectangle(frame, (0, int(height * 0.8)), (width, height), (90, 110, 90), -1)
    boxes: list[tuple[int, int, int, int]] = []
    if not identities:
        return frame, boxes
    slot = width / len(identities)
    size = min(slot * 0.7, height * 0.6)
    for i, identity in enumerate(identities):
        cx = slot * (i + 0.5) + float(rng.uniform(-2, 2))
        cy = height * 0.45 + float(rng.uniform(-2, 2))
        boxes.append(draw_face(frame, FaceTraits.for_identity(identity), cx, cy, size))
    return frame, boxes


def face_set(
    identities: int, per_identity: int, seed: int = 0, size: int = 160, jitter: float = 0.5
) -> list[tuple[int, Image]]:
    """``per_identity`` jittered captures of each of ``identities`` faces."""
    rng = np.random.default_rng(seed)
    return [
        (identity, render_face(identity, rng, size, jitter))
        for identity in range(identities)
        for _ in range(per_identity)
    ]


