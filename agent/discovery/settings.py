"""Configuration of LAN discovery (section ``[discovery]``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DiscoverySettings:
    discoverable: bool = True
    http_port: int = dataclasses.field(default=8080, metadata={"min": 1, "max": 65535})
