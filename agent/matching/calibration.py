"""From a cosine score to a calibrated confidence: a fixed logistic mapping per embedder.

``confidence = 1 / (1 + exp(-slope * (score - midpoint)))``: the probability
that a face scoring ``score`` against an identity's template is that person,
for a probe that is as likely to be anyone else as that person (equal priors).
Its parameters are constants of each embedder (:mod:`drivers.vision.faces`,
:mod:`drivers.vision.dlib_faces`), fitted by :func:`fit_logistic` to the
genuine and impostor pair scores of ``make bench`` (tests/bench/bench_vision.py
prints the fit, so it can be redone when a model or the data changes).
Events carry it as ``confidence`` beside the raw ``score``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The logistic mapping of a cosine score to a probability-like confidence."""

    slope: float  # per unit of cosine score; > 0
    midpoint: float  # the score at which confidence is 0.5

    def confidence(self, score: float) -> float:
        """In [0, 1], monotonic in ``score``; never NaN."""
        if not math.isfinite(score):
            return 0.0 if score != math.inf else 1.0
        z = self.slope * (score - self.midpoint)
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-min(z, 700.0)))
        e = math.exp(max(z, -700.0))
        return e / (1.0 + e)


def fit_logistic(
    genuine: npt.NDArray[np.floating],
    impostor: npt.NDArray[np.floating],
    *,
    ridge: float = 1e-6,
    iterations: int = 100,
) -> Calibration:
    """Logistic regression of "same person" on the score, both classes weighted equally.

    Newton's method on the weighted log-likelihood with a small ``ridge`` on
    the slope (finite even when the two sets do not overlap).
    """
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0:
        raise ValueError("need genuine and impostor scores")
    x = np.concatenate([g, i])
    y = np.concatenate([np.ones(g.size), np.zeros(i.size)])
    w = np.concatenate([np.full(g.size, 0.5 / g.size), np.full(i.size, 0.5 / i.size)])
    centre = float(x.mean())
    xc = x - centre
    a, b = 0.0, 0.0  # logit = a * (x - centre) + b
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * xc + b)))
        r = w * (p - y)
        grad = np.array([float(r @ xc) + ridge * a, float(r.sum())])
        s = w * p * (1 - p)
        hess = np.array(
            [[float(s @ (xc * xc)) + ridge, float(s @ xc)], [float(s @ xc), float(s.sum())]]
        )
        step = np.linalg.solve(hess, grad)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-10:
            break
    if a <= 0:
        raise ValueError("genuine scores are not higher than impostor scores")
    return Calibration(slope=a, midpoint=centre - b / a)
