"""Calibrated confidence of face matches: the fixed mapping, and events that carry it."""

from __future__ import annotations

import itertools
import math
import pathlib

import numpy as np
import pytest

from agent import cbor
from agent.events import SchemaCatalogue
from agent.matching.calibration import Calibration, fit_logistic
from agent.matching.events import FACE_MATCH
from agent.matching.faces import FaceRecogniser
from agent.matching.gallery import Gallery
from agent.matching.tracks import Box, Tracker
from agent.minimise import Minimiser, Pseudonymiser
from agent.purposes import Purpose
from drivers.vision.dlib_faces import DLIB_CALIBRATION, DLIB_THRESHOLD
from drivers.vision.faces import LBP_CALIBRATION, SFACE_CALIBRATION, SFACE_THRESHOLD, LbpEmbedder

SHIPPED = [
    (DLIB_CALIBRATION, DLIB_THRESHOLD),
    (LBP_CALIBRATION, LbpEmbedder.default_threshold),
    (SFACE_CALIBRATION, SFACE_THRESHOLD),
]


@pytest.mark.parametrize(("calibration", "threshold"), SHIPPED)
def test_confidence_is_monotonic_bounded_and_about_half_at_the_threshold(
    calibration: Calibration, threshold: float
) -> None:
    scores = np.linspace(-1.0, 1.0, 2001)
    values = [calibration.confidence(float(s)) for s in scores]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[-1] > values[0]
    # Even odds near the default threshold (dlib's fit: 0.919 against 0.93), and
    # decisive a few hundredths either side of it.
    assert abs(calibration.midpoint - threshold) <= 0.02, calibration
    assert calibration.confidence(calibration.midpoint) == pytest.approx(0.5)
    assert calibration.confidence(threshold - 0.1) < 0.05
    assert calibration.confidence(threshold + 0.1) > 0.95
    # Far from the threshold it says so, and never leaves [0, 1].
    assert calibration.confidence(threshold - 0.3) < 0.05
    assert calibration.confidence(1.0) > calibration.confidence(threshold)
    for extreme in (-1e9, 1e9, -math.inf, math.inf, math.nan):
        assert 0.0 <= calibration.confidence(extreme) <= 1.0
    assert calibration.confidence(math.inf) == 1.0 and calibration.confidence(-math.inf) == 0.0


def test_the_fit_recovers_a_known_logistic_and_refuses_reversed_data() -> None:
    rng = np.random.default_rng(3)
    truth = Calibration(slope=40.0, midpoint=0.9)
    scores = rng.uniform(0.7, 1.1, 200_000)
    same = rng.random(scores.size) < [truth.confidence(float(s)) for s in scores]
    # Equal priors: as many genuine as impostor scores behind the weights.
    fit = fit_logistic(scores[same], scores[~same])
    prior = np.log(same.mean() / (1 - same.mean())) / 40.0  # the fit removes the class prior
    assert fit.slope == pytest.approx(40.0, rel=0.05)
    assert fit.midpoint == pytest.approx(0.9 + prior, abs=0.005)
    with pytest.raises(ValueError, match="not higher"):
        fit_logistic(np.array([0.1, 0.2, 0.3]), np.array([0.8, 0.9, 0.7]))
    with pytest.raises(ValueError):
        fit_logistic(np.array([]), np.array([0.5]))


def test_face_match_events_carry_the_confidence_through_the_minimiser(
    tmp_path: pathlib.Path,
) -> None:
    gallery = Gallery.open(tmp_path / "faces", 4)
    granted = {Purpose.FACE_RECOGNITION}
    calibration = Calibration(slope=50.0, midpoint=0.9)
    recogniser = FaceRecogniser(
        gallery, lambda p: p in granted, threshold=0.9, tracker=Tracker(1, 1), camera="door",
        calibration=calibration,
    )
    recogniser.enrol("ada", np.array([[1.0, 0.0, 0.0, 0.0]]), 0.0)
    box = Box(10, 10, 40, 40, 1.0)
    probe = np.array([0.97, 0.2, 0.1, 0.0], dtype=np.float32)
    probe /= np.linalg.norm(probe)
    [report] = recogniser.observe([box], [probe], 1.0).reports
    fields = report.event.fields
    assert isinstance(fields["score"], float) and isinstance(fields["confidence"], float)
    assert fields["confidence"] == pytest.approx(calibration.confidence(fields["score"]), abs=1e-4)
    assert fields["known"] is True and 0.5 < fields["confidence"] < 1.0

    assert "confidence" in FACE_MATCH.fields
    minimiser = Minimiser(
        device_id="EA-TEST",
        schemas=SchemaCatalogue([FACE_MATCH]),
        is_granted=lambda p: p in granted,
        pseudonymiser=Pseudonymiser(b"k" * 32, lambda _p: 0),
    )
    message = minimiser.minimise(report.event)
    assert message is not None
    body = cbor.loads_untrusted(message.payload, max_bytes=len(message.payload))
    assert isinstance(body, dict)
    assert body["f"]["confidence"] == fields["confidence"]
    assert body["f"]["score"] == fields["score"]

    # Without a fitted calibration: even odds at the recogniser's threshold.
    plain = FaceRecogniser(
        gallery, lambda p: p in granted, threshold=0.8, tracker=Tracker(1, 1), camera="door"
    )
    assert plain.calibration.confidence(0.8) == pytest.approx(0.5)
