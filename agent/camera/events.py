"""Event schemas the camera feature declares."""

from __future__ import annotations

from agent.events import schema
from agent.purposes import Purpose

MOTION = schema("motion", Purpose.CLOUD_EVENTS, ("camera", "area", "duration"), image=True)

# What events name the device's one camera.  Not the serial number: events carry the
# device only as a pseudonym ("dev"), and a plain serial in a field would undo that.
CAMERA_NAME = "cam0"
