"""BlazeFace post-processing (agent/vision/blazeface.py): anchors, decoding, weighted NMS.

Pure arithmetic, fed by hand-built model outputs, including hostile ones (NaN,
infinities, huge logits, wrong shapes): no model is run here; the real model is
tested in tests/matching/test_blazeface_model.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import DecodeError
from agent.vision import blazeface
from agent.vision.blazeface import Letterbox

CELLS = blazeface.INPUT_SIZE // blazeface.STRIDE  # 48


def _outputs(hits: Mapping[int, tuple[float, float, float, float, float]] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs with every anchor at logit -20 except ``hits``:
    anchor -> (logit, dx, dy, w, h) in input pixels."""
    boxes = np.zeros((1, len(blazeface.ANCHORS), 16), np.float32)
    scores = np.full((1, len(blazeface.ANCHORS), 1), -20.0, np.float32)
    for anchor, (logit, dx, dy, w, h) in (hits or {}).items():
        scores[0, anchor, 0] = logit
        boxes[0, anchor, :4] = (dx, dy, w, h)
    return boxes, scores


def _anchor(col: int, row: int) -> int:
    return row * CELLS + col


def test_the_full_range_anchors_are_the_centres_of_a_48x48_grid_row_by_row() -> None:
    anchors = blazeface.ssd_anchors()
    assert anchors.shape == (2304, 2) and anchors.dtype == np.float32
    assert anchors[0] == pytest.approx((0.5 / 48, 0.5 / 48))
    assert anchors[1] == pytest.approx((1.5 / 48, 0.5 / 48))  # x moves first
    assert anchors[48] == pytest.approx((0.5 / 48, 1.5 / 48))
    assert anchors[-1] == pytest.approx((47.5 / 48, 47.5 / 48))
    assert len({tuple(a) for a in anchors.tolist()}) == 2304


@pytest.mark.parametrize(("size", "stride"), [(192, 5), (0, 4), (192, 0), (-8, 4)])
def test_anchors_refuse_a_grid_that_does_not_divide(size: int, stride: int) -> None:
    with pytest.raises(ValueError, match="stride"):
        blazeface.ssd_anchors(size, stride)


def test_the_letterbox_maps_the_input_back_to_frame_pixels() -> None:
    frame = Letterbox(640, 480)
    assert frame.scale == pytest.approx(0.3)
    assert (frame.inner_width, frame.inner_height, frame.pad_x, frame.pad_y) == (192, 144, 0, 24)
    corners = np.array([[0.0, 24 / 192, 1.0, 168 / 192]], np.float32)
    assert frame.to_frame(corners)[0] == pytest.approx((0, 0, 640, 480), abs=1e-3)
    portrait = Letterbox(300, 600)
    assert portrait.to_frame(np.array([[0.25, 0.0, 0.75, 1.0]], np.float32))[0] == (
        pytest.approx((0, 0, 300, 600), abs=1e-3)
    )
    # Whole pixels: 641 px scale to 191.7, drawn as 192; a 1x4000 sliver stays 1 px wide.
    odd = Letterbox(641, 200)
    assert (odd.inner_width, odd.pad_x) == (192, 0)
    assert odd.to_frame(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32))[0][2] == (
        pytest.approx(641, abs=1e-3)
    )
    sliver = Letterbox(1, 4000)
    assert (sliver.inner_width, sliver.inner_height, sliver.pad_x) == (1, 192, 95)


def test_one_confident_anchor_becomes_one_face_where_it_points() -> None:
    # Anchor at column 24, row 20 (centre x 24.5*4 = 98, y 20.5*4 = 82 input px), moved
    # by (+2, -2) px, 19.2 px wide and high: in a 640x480 frame (scale 0.3, 24 px bars)
    # the centre is (100/0.3, (80-24)/0.3) and the side 64 px.
    boxes, scores = _outputs({_anchor(24, 20): (4.0, 2.0, -2.0, 19.2, 19.2)})
    found = blazeface.detect(boxes, scores, Letterbox(640, 480))
    assert len(found) == 1
    face = found[0]
    assert (face.w, face.h) == (64, 64)
    assert face.x + face.w / 2 == pytest.approx(100 / 0.3, abs=1)
    assert face.y + face.h / 2 == pytest.approx(56 / 0.3, abs=1)
    assert face.score == pytest.approx(1 / (1 + np.exp(-4.0)), rel=1e-5)


def test_the_score_threshold_is_applied_to_the_sigmoid() -> None:
    just_below = float(np.log(0.59 / 0.41))
    boxes, scores = _outputs({_anchor(10, 10): (just_below, 0, 0, 20, 20)})
    assert blazeface.detect(boxes, scores, Letterbox(192, 192)) == []
    assert len(blazeface.detect(boxes, scores, Letterbox(192, 192), min_score=0.5)) == 1


def test_overlapping_hits_merge_into_their_score_weighted_mean() -> None:
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [50, 50, 60, 60]],
                     np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    kept = blazeface.weighted_nms(boxes, scores, 0.3)
    assert [score for _, score in kept] == pytest.approx([0.9, 0.7])  # best first
    merged = kept[0][0]
    x0 = (0.0 * 0.6 + 2.0 * 0.9) / 1.5
    assert merged == pytest.approx((x0, 0.0, x0 + 10, 10.0), rel=1e-5)
    assert kept[1][0] == pytest.approx((50, 50, 60, 60))


def test_several_anchors_on_one_face_give_one_box_and_two_faces_give_two() -> None:
    hits = {_anchor(c, r): (3.0, 0, 0, 24, 24) for c in (10, 11) for r in (10, 11)}
    hits[_anchor(40, 30)] = (2.0, 0, 0, 16, 16)
    boxes, scores = _outputs(hits)
    found = blazeface.detect(boxes, scores, Letterbox(192, 192))
    assert len(found) == 2
    assert found[0].score > found[1].score
    assert found[0].x + found[0].w / 2 == pytest.approx(11 * 4, abs=1)


def test_nan_scores_are_never_faces_and_nan_boxes_are_dropped() -> None:
    boxes, scores = _outputs({_anchor(5, 5): (5.0, 0, 0, 20, 20)})
    scores[0, :, 0] = np.nan
    assert blazeface.detect(boxes, scores, Letterbox(640, 480)) == []
    boxes, scores = _outputs({_anchor(5, 5): (5.0, 0, 0, 20, 20),
                              _anchor(30, 30): (6.0, 0, 0, 20, 20)})
    boxes[0, _anchor(30, 30), 2] = np.nan
    found = blazeface.detect(boxes, scores, Letterbox(192, 192))
    assert len(found) == 1 and found[0].x + found[0].w / 2 == pytest.approx(22, abs=1)


def test_huge_and_infinite_logits_give_scores_in_0_1_without_overflow() -> None:
    raw = np.array([1e30, -1e30, np.inf, -np.inf, 88.8, -88.8, np.nan], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = blazeface.sigmoid_scores(raw)
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[0] == 1.0 and scores[2] == 1.0 and scores[1] < 1e-30 and scores[6] < 1e-30


def test_inverted_tiny_and_outside_boxes_are_dropped() -> None:
    boxes, scores = _outputs({
        _anchor(1, 1): (5.0, 0, 0, -20, 20),  # negative width
        _anchor(2, 40): (5.0, 0, 0, 0.1, 0.1),  # under 2 frame px
        _anchor(3, 3): (5.0, -500, -500, 10, 10),  # entirely outside the frame
    })
    assert blazeface.detect(boxes, scores, Letterbox(640, 480)) == []


def test_a_box_reaching_past_the_edge_is_clipped_to_the_frame() -> None:
    boxes, scores = _outputs({_anchor(0, 6): (5.0, 0, 0, 30, 30)})  # left edge
    (face,) = blazeface.detect(boxes, scores, Letterbox(640, 480))
    assert face.x == 0 and face.w > 0 and face.x + face.w <= 640


@pytest.mark.parametrize(
    "shape",
    [(2304, 3), (2303, 16), (1, 2304), (2, 2304, 16), (2304,), (0, 16), (1, 1, 2304, 16)],
)
def test_outputs_of_the_wrong_shape_are_a_decode_error(shape: tuple[int, ...]) -> None:
    scores = np.zeros((1, 2304, 1), np.float32)
    with pytest.raises(DecodeError, match="shape"):
        blazeface.detect(np.zeros(shape, np.float32), scores, Letterbox(640, 480))


def test_scores_that_do_not_match_the_boxes_are_a_decode_error() -> None:
    boxes, _ = _outputs()
    with pytest.raises(DecodeError, match="2000 scores"):
        blazeface.detect(boxes, np.zeros((1, 2000, 1), np.float32), Letterbox(640, 480))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(2, 4000), height=st.integers(2, 4000),
       scale=st.sampled_from([1.0, 50.0, 1e6, 1e38]))
def test_any_output_gives_boxes_inside_the_frame_or_none(
    seed: int, width: int, height: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # 1e38 * a normal sample overflows float32: inf
        boxes = (rng.standard_normal((1, 2304, 16)) * scale).astype(np.float32)
        scores = (rng.standard_normal((1, 2304, 1)) * scale).astype(np.float32)
    poison = rng.random((1, 2304, 16)) < 0.01
    boxes[poison] = rng.choice([np.nan, np.inf, -np.inf], size=int(poison.sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning per frame, whatever the model says
        found = blazeface.detect(boxes, scores, Letterbox(width, height))
    for face in found:
        assert face.x >= 0 and face.y >= 0 and face.w >= 2 and face.h >= 2
        assert face.x + face.w <= width and face.y + face.h <= height
        assert 0.0 <= face.score <= 1.0
