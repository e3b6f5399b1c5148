"""An image from a local file (USB stick, technician laptop) instead of the manifest's URI.

The signed manifest still decides: the bytes are hashed against its digest and
size exactly as a download is, so the file's name and origin are not trusted.
"""

from __future__ import annotations

import os
import pathlib

from agent.errors import DeviceIOError


class FileImageStream:
    def __init__(self, path: pathlib.Path, offset: int) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
            size = os.fstat(self._fd).st_size
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise DeviceIOError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
        self.start = offset
        self.length: int | None = max(size - offset, 0)

    def read(self, size: int) -> bytes:
        try:
            return os.read(self._fd, size)
        except OSError as exc:  # a stick pulled out mid-copy: resumable, like a cut download
            raise DeviceIOError(
                f"cannot read image file {self.path}: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        os.close(self._fd)


class FileImageSource:
    """:class:`agent.upgrade.ports.ImageSource` that ignores the URI and reads ``path``.

    A missing or unreadable file is a DeviceIOError (a transport fault): it fails
    the install without barring the release, as a cut download does.
    """

    fetches_uri = False  # so the manifest's URI may have any scheme (agent.upgrade.policy)

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def open(self, uri: str, offset: int) -> FileImageStream:
        return FileImageStream(self.path, offset)
