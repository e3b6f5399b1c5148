"""The MQTT topic layout (documented in README.md)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Topics:
    prefix: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def event(self, event_type: str) -> str:
        return f"{self.base}/events/{event_type}"

    @property
    def commands(self) -> str:
        return f"{self.base}/cmd/+"

    def command_name(self, topic: str) -> str | None:
        head = f"{self.base}/cmd/"
        if not topic.startswith(head):
            return None
        name = topic[len(head) :]
        return name if name and "/" not in name and len(name) <= 64 else None

    def default_reply(self, command: str) -> str:
        return f"{self.base}/reply/{command}"

    def is_reply_topic(self, topic: str) -> bool:
        """Replies go only under this device's own reply namespace, never elsewhere."""
        head = f"{self.base}/reply/"
        return (
            topic.startswith(head)
            and len(topic) > len(head)
            and len(topic) <= 256
            and not any(c in topic for c in "+#\x00")
        )
