"""Event schemas the face and plate features declare."""

from __future__ import annotations

from agent.events import schema
from agent.purposes import Purpose

FACE_MATCH = schema(
    "face.match",
    Purpose.FACE_RECOGNITION,
    ("score", "label", "known", "track_id", "camera"),
    ("person_id",),
    image=True,
)
PLATE_MATCH = schema(
    "plate.match",
    Purpose.PLATE_RECOGNITION,
    ("score", "label", "list", "distance", "camera"),
    ("plate",),
    image=True,
)
