"""Event schemas the camera feature declares."""

from __future__ import annotations

from agent.events import schema
from agent.purposes import Purpose

# One motion event is several messages (Frigate's lifecycle): ``phase`` is new, update
# or end; ``event_id`` is the same for all of them; ``duration`` is seconds so far.
MOTION = schema(
    "motion",
    Purpose.CLOUD_EVENTS,
    ("camera", "phase", "event_id", "area", "duration"),
    image=True,
)

# What events name the device's one camera.  Not the serial number: events carry the
# device only as a pseudonym ("dev"), and a plain serial in a field would undo that.
CAMERA_NAME = "cam0"
