"""The purposes personal data may be processed for; each needs its own consent."""

from __future__ import annotations

import enum

from agent.errors import DecodeError


class Purpose(enum.Enum):
    FACE_RECOGNITION = "face_recognition"
    PLATE_RECOGNITION = "plate_recognition"
    EVENT_SNAPSHOTS = "event_snapshots"
    USAGE_STATISTICS = "usage_statistics"
    TROUBLESHOOTING_LOGS = "troubleshooting_logs"
    CLOUD_EVENTS = "cloud_events"
    # Device operation (status, upgrade progress, availability) carries no
    # personal data and needs no consent; it is never purged by a withdrawal.
    DEVICE_OPERATION = "device_operation"

    @property
    def needs_consent(self) -> bool:
        return self is not Purpose.DEVICE_OPERATION

    @classmethod
    def parse(cls, value: object) -> Purpose:
        for member in cls:
            if member.value == value:
                return member
        raise DecodeError(f"unknown purpose {str(value)[:40]!r}")


CONSENTABLE = tuple(p for p in Purpose if p.needs_consent)

# The data-key domain (agent.keystore) of Wi-Fi credentials: not a purpose, erased
# only by an erasure that asks for Wi-Fi (or cancels the account).
WIFI_DOMAIN = "wifi"
# The data-key domain of the cloud binding (the account named in key labels):
# erased only when the binding is (an account cancellation).
BINDING_DOMAIN = "binding"
# The data-key domain of the ONVIF user's password (the digest scheme needs it in
# clear on the device): erased with the binding.
ONVIF_DOMAIN = "onvif"
# The data-key domain of the hub's camera credentials (the RTSP/ONVIF users the owner
# gave it for the cameras it records): erased with the binding.
CAMERAS_DOMAIN = "cameras"
