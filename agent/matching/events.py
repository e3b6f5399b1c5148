"""Event schemas the face and plate features declare."""

from __future__ import annotations

from agent.events import schema
from agent.purposes import Purpose

FACE_MATCH = schema(
    "face.match",
    Purpose.FACE_RECOGNITION,
    ("score", "confidence", "label", "known", "track_id", "camera"),
    ("person_id",),
    image=True,
)
# No image: a plate event says which listed plate was seen, and no plate path
# makes a snapshot; should one ever be attached, the minimiser drops it.
PLATE_MATCH = schema(
    "plate.match",
    Purpose.PLATE_RECOGNITION,
    ("score", "label", "list", "distance", "camera"),
    ("plate",),
    image=False,
)
