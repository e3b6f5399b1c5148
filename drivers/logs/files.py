"""Personal data kept as files (snapshots, Wi-Fi credentials, the binding).

A :class:`FileHolder` exports each file under a name relative to what it
holds (never an absolute path) with its size and time -- a JSON file parsed,
anything else as bytes the export archive keeps as a file of its own -- erases
them by overwriting with zeros, fsyncing and unlinking, and (for directories
such as snapshots) purges files older than a cutoff by modification time.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Iterator, Mapping

from agent.atomicfile import shred, write_atomic
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

    def _relative(self, path: pathlib.Path) -> str:
        """``snapshots/ev1.jpg`` for a file in a held directory, the bare name otherwise."""
        for held in self._paths:
            if held != path and held in path.parents:
                return f"{held.name}/{path.relative_to(held).as_posix()}"
        return path.name

    def export_personal_data(self) -> Mapping[str, object]:
        exported: list[dict[str, object]] = []
        try:
            for path in self.files():
                info = path.stat()
                item: dict[str, object] = {
                    "name": self._relative(path),
                    "bytes": info.st_size,
                    "modified_at": info.st_mtime,
                }
                if info.st_size > MAX_EXPORT_FILE_BYTES:
                    item["omitted"] = "larger than the export cap"
                else:
                    item["content"] = _content(path, path.read_bytes())
                exported.append(item)
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


def replace_shredding_old(path: pathlib.Path, data: bytes | None) -> None:
    """Replace ``path`` crash-safely (``write_atomic``; None: delete it), then zero the old file.

    For a file that held personal data in the clear (written before sealing): the
    new content is in place first, so a kill loses nothing; the old bytes are
    then overwritten through the replaced inode instead of left in freed blocks.
    """
    try:
        old = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        old = -1
    except OSError as exc:
        raise DeviceIOError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        if data is not None:
            write_atomic(path, data)
        elif old >= 0:
            path.unlink()
        if old >= 0:
            size = os.fstat(old).st_size
            os.pwrite(old, b"\0" * size, 0)
            os.fsync(old)
            os.ftruncate(old, 0)
            os.fsync(old)
    except OSError as exc:
        raise DeviceIOError(f"cannot replace {path}: {exc.strerror or exc}") from exc
    finally:
        if old >= 0:
            os.close(old)


def _content(path: pathlib.Path, data: bytes) -> object:
    """A JSON file as its parsed value (readable in the export), anything else as bytes."""
    if path.suffix == ".json":
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            pass
    return data
