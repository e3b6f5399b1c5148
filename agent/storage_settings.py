"""Configuration of the state directory's footprint (section ``[storage]``).

Kept apart from :mod:`agent.storage` so that :mod:`agent.config` can name the
section without importing the database code.
"""

from __future__ import annotations

import dataclasses

from agent.errors import ConfigError

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    """The state directory's footprint.

    Attributes:
        max_state_bytes: Everything under the state directory together (databases and
            their WAL, galleries, snapshots, logs, the reserve); at this size new events
            are refused.
        min_free_bytes: Free space on the state directory's file system below which the
            disk counts as full.
        reserve_bytes: Pre-allocated file, released under pressure, so the agent can
            still record its state.
        wal_max_bytes: SQLite write-ahead log size: checkpointed at half, cut back to it.
        check_interval_seconds: How often the whole directory is measured.
    """

    # Everything under the state directory together (databases and their WAL, galleries,
    # snapshots, logs, the reserve): at this size new events are refused.
    max_state_bytes: int = dataclasses.field(
        default=512 * MIB, metadata={"min": 1 * MIB, "max": 1 << 40}
    )
    # Free space on the state directory's file system below which the disk counts as full.
    min_free_bytes: int = dataclasses.field(
        default=8 * MIB, metadata={"min": 0, "max": 1 << 40}
    )
    # Pre-allocated file, released under pressure, so the agent can still record its state.
    reserve_bytes: int = dataclasses.field(
        default=1 * MIB, metadata={"min": 0, "max": 256 * MIB}
    )
    # The SQLite write-ahead log is checkpointed at half this size and cut back to it.
    wal_max_bytes: int = dataclasses.field(
        default=4 * MIB, metadata={"min": 64 * 1024, "max": 1 << 30}
    )
    # How often the whole directory is measured (the databases are watched every pass).
    check_interval_seconds: float = dataclasses.field(
        default=10.0, metadata={"min": 0.1, "max": 3600}
    )

    def __post_init__(self) -> None:
        if self.reserve_bytes + self.wal_max_bytes >= self.max_state_bytes:
            raise ConfigError(
                "storage.max_state_bytes",
                "must exceed reserve_bytes + wal_max_bytes, or nothing but them would fit",
            )

    @property
    def margin_bytes(self) -> int:
        """Hysteresis: room that must come back before events are accepted again."""
        return max(self.reserve_bytes, 64 * 1024)
