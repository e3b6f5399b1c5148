"""Atomic small-file persistence: temp file + fsync + os.replace + directory fsync."""

from __future__ import annotations

import os
import pathlib

from agent.errors import DeviceIOError


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DeviceIOError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_optional(path: pathlib.Path, max_bytes: int) -> bytes | None:
    try:
        with path.open("rb") as handle:
            return handle.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc


class FileStateStore:
    """:class:`agent.upgrade.ports.StateStore` on one file."""

    def __init__(self, path: pathlib.Path, max_bytes: int = 256 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def load(self) -> bytes | None:
        return read_optional(self.path, self.max_bytes)

    def save(self, data: bytes) -> None:
        write_atomic(self.path, data)
