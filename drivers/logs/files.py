"""Personal data kept as plain files (snapshots, Wi-Fi credentials, the binding).

A :class:`FileHolder` exports the files' bytes, erases them by overwriting
with zeros, fsyncing and unlinking, and (for directories such as snapshots)
purges files older than a cutoff by modification time.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator, Mapping

from agent.atomicfile import shred
from agent.errors import DeviceIOError

MAX_EXPORT_FILE_BYTES = 32 * 1024 * 1024


class FileHolder:
    def __init__(self, name: str, *paths: pathlib.Path) -> None:
        self.name = name
        self._paths = paths

    def files(self) -> Iterator[pathlib.Path]:
        for path in self._paths:
            if path.is_file():
                yield path
            elif path.is_dir():
                yield from sorted(p for p in path.rglob("*") if p.is_file())

    def export_personal_data(self) -> Mapping[str, object]:
        exported: dict[str, object] = {}
        try:
            for path in self.files():
                if path.stat().st_size > MAX_EXPORT_FILE_BYTES:
                    exported[str(path)] = {"omitted": "larger than the export cap"}
                else:
                    exported[str(path)] = path.read_bytes()
        except OSError as exc:
            raise DeviceIOError(f"cannot export {self.name}: {exc}") from exc
        return {"files": exported}

    def _shred(self, doomed: Callable[[pathlib.Path], bool], action: str) -> int:
        count = 0
        try:
            for path in list(self.files()):
                if doomed(path) and shred(path):
                    count += 1
        except OSError as exc:
            raise DeviceIOError(f"cannot {action} {self.name}: {exc}") from exc
        return count

    def erase_personal_data(self) -> int:
        return self._shred(lambda _: True, "erase")

    def purge_older_than(self, cutoff: float) -> int:
        return self._shred(lambda path: os.stat(path).st_mtime < cutoff, "purge")
