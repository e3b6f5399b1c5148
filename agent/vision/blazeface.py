"""BlazeFace full-range post-processing: anchors, box decoding, weighted NMS (pure numpy).

The model (MediaPipe's ``face_detection_full_range.tflite``, Apache-2.0) sees a
192x192 RGB image scaled to [-1, 1] and answers, for each of 2304 anchors, one
raw score and 16 numbers: box centre x/y, width, height and six keypoints
(x, y), in input pixels relative to the anchor's centre.  What is done with them
follows MediaPipe's full-range face detection graph (SSD anchors: one layer,
stride 4, anchor offset 0.5, one anchor per cell, fixed anchor size; tensors to
detections: logits clipped then sigmoid, x/y/w/h scale 192; non-maximum
suppression: weighted, IoU 0.3).  Running the model is drivers' business
(drivers/vision/blazeface.py); everything here is arithmetic that a test can
feed hostile arrays.

The frame is letterboxed (aspect kept, padded) into the square input, so
:class:`Letterbox` maps the model's normalised coordinates back to frame pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from agent.errors import DecodeError
from agent.matching.tracks import Box

INPUT_SIZE = 192
STRIDE = 4  # one feature map of 48x48 cells
ANCHOR_OFFSET = 0.5
VALUES_PER_ANCHOR = 16  # box (4) + six keypoints (12)
# MediaPipe clips logits to +-100; float32 exp overflows past ~88, so 80 keeps
# sigmoid exact to float32 precision without an overflow warning.
RAW_SCORE_LIMIT = 80.0
# MediaPipe's face detection defaults to a minimum confidence of 0.5.  Measured in
# `make bench` (640x480 frames, 18 per size): at 0.5 recall is 1.00 / 1.00 / 0.94 at
# 80 / 48 / 32 px faces with 2 false positives beside the 32 px faces; at 0.6 it is
# 1.00 / 1.00 / 0.78 with none, and 1 false positive (a logo, 0.67) on the 18 no-face
# photos either way.  32 px faces are not identified anyway (0.17), so 0.6.
MIN_SCORE = 0.6
NMS_IOU = 0.3  # MediaPipe's face detection graphs
# A face lights up a few to a few dozen anchors; the NMS loop is quadratic, so a
# broken or hostile output (every anchor confident) is cut to the best ones.
MAX_CANDIDATES = 256

Floats = npt.NDArray[np.float32]


def ssd_anchors(input_size: int = INPUT_SIZE, stride: int = STRIDE) -> Floats:
    """Anchor centres (x, y), normalised to [0, 1], row by row: (cells, 2).

    A single SSD layer with ``interpolated_scale_aspect_ratio = 0`` has one
    anchor per cell, so the full-range model's 2304 anchors are the centres of
    its 48x48 grid.
    """
    if input_size <= 0 or stride <= 0 or input_size % stride:
        raise ValueError(f"input size {input_size} is not a multiple of stride {stride}")
    cells = input_size // stride
    centres = (np.arange(cells, dtype=np.float32) + ANCHOR_OFFSET) / cells
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


ANCHORS = ssd_anchors()


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How a ``width`` x ``height`` frame sits in the square model input (aspect kept).

    The frame is resized to ``inner_width`` x ``inner_height`` whole pixels and
    placed ``pad_x``/``pad_y`` pixels from the input's left/top; the driver
    builds the input from these same numbers, so boxes map back exactly.
    """

    width: int
    height: int
    size: int = INPUT_SIZE

    @property
    def scale(self) -> float:
        return self.size / max(self.width, self.height)

    @property
    def inner_width(self) -> int:
        return min(self.size, max(1, round(self.width * self.scale)))

    @property
    def inner_height(self) -> int:
        return min(self.size, max(1, round(self.height * self.scale)))

    @property
    def pad_x(self) -> int:
        return (self.size - self.inner_width) // 2

    @property
    def pad_y(self) -> int:
        return (self.size - self.inner_height) // 2

    def to_frame(self, boxes: Floats) -> Floats:
        """Normalised (xmin, ymin, xmax, ymax) of the input -> frame pixels."""
        pixels = boxes.astype(np.float32) * self.size
        pixels[:, 0::2] = (pixels[:, 0::2] - self.pad_x) * (self.width / self.inner_width)
        pixels[:, 1::2] = (pixels[:, 1::2] - self.pad_y) * (self.height / self.inner_height)
        return pixels


def sigmoid_scores(raw_scores: npt.ArrayLike) -> Floats:
    """Scores in [0, 1] from the model's logits; NaN becomes 0 (never a face)."""
    raw = np.asarray(raw_scores, dtype=np.float32).reshape(-1)
    raw = np.nan_to_num(raw, nan=-RAW_SCORE_LIMIT)
    clipped = np.clip(raw, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    return (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)


def decode_boxes(raw_boxes: npt.ArrayLike, anchors: Floats = ANCHORS,
                 size: int = INPUT_SIZE) -> Floats:
    """(xmin, ymin, xmax, ymax) normalised to the input, one row per anchor.

    ``raw_boxes``: the regressor output, (anchors, 16) or (1, anchors, 16).
    Keypoints are dropped: dlib's 5-point predictor finds its own landmarks in
    the box, the same way at enrolment and at run time.
    """
    raw = np.asarray(raw_boxes, dtype=np.float32)
    if raw.ndim == 3 and raw.shape[0] == 1:
        raw = raw[0]
    if raw.ndim != 2 or raw.shape[0] != len(anchors) or raw.shape[1] < 4:
        raise DecodeError(
            f"face detector output has shape {raw.shape}, expected ({len(anchors)}, "
            f"{VALUES_PER_ANCHOR})"
        )
    centre = raw[:, 0:2] / size + anchors
    half = raw[:, 2:4] / size / 2
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def iou(box: Floats, others: Floats) -> Floats:
    """IoU of one (xmin, ymin, xmax, ymax) box with each row of ``others``."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        result = np.where(union > 0, inter / union, 0.0)
    return result.astype(np.float32)


def weighted_nms(boxes: Floats, scores: Floats, iou_threshold: float = NMS_IOU
                 ) -> list[tuple[Floats, float]]:
    """MediaPipe's weighted non-maximum suppression, best first.

    The best remaining box and every box overlapping it by more than
    ``iou_threshold`` form a cluster; the cluster becomes one box, the
    score-weighted mean of its members, with the best member's score.  The
    dense anchors give several hits per face, and the mean is steadier from
    frame to frame than any one of them (which the tracker's IoU likes).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    kept: list[tuple[Floats, float]] = []
    remaining = np.ones(len(scores), dtype=bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlap = iou(boxes[i], boxes) > iou_threshold
        cluster = remaining & overlap
        cluster[i] = True
        remaining &= ~cluster
        weights = scores[cluster]
        merged = (boxes[cluster] * weights[:, None]).sum(axis=0) / max(float(weights.sum()), 1e-12)
        kept.append((merged.astype(np.float32), float(scores[i])))
    return kept


def detect(
    raw_boxes: npt.ArrayLike,
    raw_scores: npt.ArrayLike,
    frame: Letterbox,
    min_score: float = MIN_SCORE,
    iou_threshold: float = NMS_IOU,
) -> list[Box]:
    """The faces in a frame, in frame pixels, from one run of the model.

    Boxes with non-finite numbers, no area, or entirely outside the frame are
    dropped; the rest are clipped to the frame.
    """
    scores = sigmoid_scores(raw_scores)
    # Non-finite boxes are dropped below; a hostile output overflowing float32 is
    # not worth a warning per frame.
    with np.errstate(over="ignore", invalid="ignore"):
        boxes = decode_boxes(raw_boxes)
    if len(scores) != len(boxes):
        raise DecodeError(
            f"face detector gave {len(scores)} scores for {len(boxes)} boxes"
        )
    valid = (
        (scores >= min_score)
        & np.isfinite(boxes).all(axis=1)
        & (boxes[:, 2] > boxes[:, 0])
        & (boxes[:, 3] > boxes[:, 1])
    )
    boxes, scores = boxes[valid], scores[valid]
    if len(scores) > MAX_CANDIDATES:
        best = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        boxes, scores = boxes[best], scores[best]
    with np.errstate(over="ignore", invalid="ignore"):
        kept = [(frame.to_frame(merged[None, :])[0], score)
                for merged, score in weighted_nms(boxes, scores, iou_threshold)]
    found: list[Box] = []
    for corners, score in kept:
        if not np.isfinite(corners).all():
            continue
        x0, y0 = max(0.0, float(corners[0])), max(0.0, float(corners[1]))
        x1 = min(float(frame.width), float(corners[2]))
        y1 = min(float(frame.height), float(corners[3]))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        found.append(Box(round(x0), round(y0), round(x1 - x0), round(y1 - y0), score))
    return found
