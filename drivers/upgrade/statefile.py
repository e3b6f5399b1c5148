"""The upgrade state machine's persisted state, one crash-safe file."""

from __future__ import annotations

import pathlib

from agent.atomicfile import read_optional, write_atomic


class FileStateStore:
    """:class:`agent.upgrade.ports.StateStore` on one file."""

    def __init__(self, path: pathlib.Path, max_bytes: int = 256 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def load(self) -> bytes | None:
        return read_optional(self.path, self.max_bytes)

    def save(self, data: bytes) -> None:
        write_atomic(self.path, data)
