"""Configuration of local face and plate matching (section ``[matching]``)."""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class MatchingSettings:
    enabled: bool = True
    blas_threads: int = dataclasses.field(default=1, metadata={"min": 1, "max": 64})
    face_model: pathlib.Path | None = None
    face_detector_model: pathlib.Path | None = None
    plate_model: pathlib.Path | None = None
