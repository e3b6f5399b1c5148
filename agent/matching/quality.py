"""Quality gates for a face crop: big enough and sharp enough to be worth embedding."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt


def blur_score(grey: npt.NDArray[np.uint8]) -> float:
    """Variance of the 4-neighbour Laplacian: low for blurred or flat crops."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    g = grey.astype(np.float32)
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(laplacian.var())


@dataclasses.dataclass(frozen=True)
class QualityGate:
    min_area: int
    min_blur: float

    def rejects(self, width: int, height: int, grey: npt.NDArray[np.uint8]) -> str | None:
        """Why the crop is rejected, or None if it passes."""
        if width * height < self.min_area:
            return "small"
        if blur_score(grey) < self.min_blur:
            return "blurred"
        return None
