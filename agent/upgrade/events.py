"""Event schema the upgrade feature declares."""

from __future__ import annotations

from agent.events import schema
from agent.purposes import Purpose

UPGRADE_STATE = schema(
    "upgrade.state",
    Purpose.DEVICE_OPERATION,
    ("state", "version", "sequence", "received", "total", "reason"),
)
