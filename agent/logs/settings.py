"""Configuration of logging, retention and audit (sections ``[logs]``, ``[retention]``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LogSettings:
    max_store_bytes: int = dataclasses.field(
        default=8 * 1024 * 1024, metadata={"min": 64 * 1024, "max": 1 << 30}
    )


@dataclasses.dataclass(frozen=True)
class RetentionSettings:
    events_days: int = dataclasses.field(default=30, metadata={"min": 0, "max": 3650})
