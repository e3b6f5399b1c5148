"""Snapshot files sealed under the ``event_snapshots`` data key.

Every picture in ``layout.snapshots_dir`` is a sealed blob (:mod:`agent.sealing`);
:meth:`SealedSnapshots.store` is the one way to write one.  The export opens
them (the archive carries the pictures, never ciphertext), retention purges by
the file's time, erasure shreds.  A file sealed under a destroyed key is erased
data: skipped and removed.  A clear file (written before sealing) is exported
as it is and sealed by the next reseal.

A reseal rewrites the file with its old time (set on the finished temp file
before the rename), so a key rotation never extends a snapshot's retention.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from agent.atomicfile import read_optional, shred, write_atomic
from agent.errors import BadDataError, DeviceIOError
from agent.purposes import Purpose
from agent.sealing import KeyDestroyed, SealedDataError, is_sealed, read_header
from drivers.logs.files import MAX_EXPORT_FILE_BYTES, FileHolder

if TYPE_CHECKING:
    from agent.keystore import DataKeys

log = logging.getLogger(__name__)

DOMAIN = Purpose.EVENT_SNAPSHOTS.value
CONTEXT = b"snapshot"
MAX_NAME_CHARS = 128
_PROBE_BYTES = 128


def _is_temp(path: pathlib.Path) -> bool:
    """A temp file a killed write_atomic left behind (``.<name>.<pid>.<hex>.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


class SealedSnapshots(FileHolder):
    """The snapshot directory: sealed files, exported open, purged by age."""

    def __init__(self, directory: pathlib.Path, keys: DataKeys) -> None:
        super().__init__("snapshots", directory)
        self.directory = directory
        self.keys = keys

    def pictures(self) -> Iterator[pathlib.Path]:
        return (p for p in self.files() if not _is_temp(p))

    # --- writing and reading --------------------------------------------------

    def store(self, name: str, image: bytes, taken_at: float | None = None) -> pathlib.Path:
        """Seal ``image`` into ``name`` (crash-safe); ``taken_at`` sets its time for retention."""
        if (
            not name
            or len(name) > MAX_NAME_CHARS
            or name.startswith(".")
            or "/" in name
            or "\0" in name
            or not name.isprintable()
        ):
            raise BadDataError(f"bad snapshot name {name[:MAX_NAME_CHARS]!r}")
        path = self.directory / name
        write_atomic(path, self.keys.seal(DOMAIN, image, CONTEXT))
        if taken_at is not None:
            _set_time(path, taken_at)
        return path

    def read(self, path: pathlib.Path) -> bytes | None:
        """The picture in ``path``; None if it is gone or was erased (its key destroyed).

        A file under a destroyed key is removed on the way.
        """
        raw = read_optional(path, MAX_EXPORT_FILE_BYTES + _PROBE_BYTES)
        if raw is None:
            return None
        if not is_sealed(raw):
            return raw  # written before sealing: sealed by the next reseal
        try:
            return self.keys.open(raw, CONTEXT)
        except KeyDestroyed:
            shred(path)
            return None

    # --- personal data ----------------------------------------------------------

    def export_personal_data(self) -> Mapping[str, object]:
        exported: list[dict[str, object]] = []
        for path in self.pictures():
            try:
                info = path.stat()
            except FileNotFoundError:
                continue  # purged meanwhile
            except OSError as exc:
                raise DeviceIOError(f"cannot export {self.name}: {exc}") from exc
            item: dict[str, object] = {
                "name": self._relative(path),
                "modified_at": info.st_mtime,
            }
            if info.st_size > MAX_EXPORT_FILE_BYTES + _PROBE_BYTES:
                item["bytes"] = info.st_size
                item["omitted"] = "larger than the export cap"
            else:
                try:
                    image = self.read(path)
                except SealedDataError:
                    item["bytes"] = info.st_size
                    item["omitted"] = "damaged (fails authentication)"
                    exported.append(item)
                    continue
                if image is None:
                    continue  # erased
                item["bytes"] = len(image)
                item["content"] = image
            exported.append(item)
        return {"files": exported}

    def reseal_personal_data(self) -> int:
        """Seal every picture under the newest ``event_snapshots`` key; the files rewritten."""
        resealed = 0
        for path in list(self.pictures()):
            try:
                probe = read_optional(path, _PROBE_BYTES)
                if probe is None or not self._needs_reseal(probe):
                    continue
                image = self.read(path)
            except SealedDataError as exc:
                # Damaged: nothing to carry over; once the old key goes it is unreadable.
                log.warning("snapshot %s not resealed: %s", path.name, exc)
                continue
            if image is None:
                continue
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DeviceIOError(f"cannot reseal {path.name}: {exc}") from exc
            _replace_keeping_time(path, self.keys.seal(DOMAIN, image, CONTEXT), info)
            resealed += 1
        return resealed

    def _needs_reseal(self, probe: bytes) -> bool:
        if not is_sealed(probe):
            return True
        header = read_header(probe)
        live = self.keys.live_numbers(DOMAIN)
        return header.domain != DOMAIN or not live or header.number != live[-1]


def _set_time(path: pathlib.Path, mtime: float) -> None:
    try:
        os.utime(path, (mtime, mtime))
    except OSError as exc:
        log.warning("could not set the time of snapshot %s: %s", path.name, exc)


def _replace_keeping_time(path: pathlib.Path, data: bytes, info: os.stat_result) -> None:
    """Replace ``path`` with ``data`` and its old times, so that a crash leaves one or the other.

    The new file is finished (written, fsync'd, its times set and fsync'd) under
    a temp name first; only then does it replace the old one.  A kill before
    leaves the temp file: the next reseal reuses its name, retention purges it
    by its time, erasure shreds it.
    """
    tmp = path.with_name(f".{path.name}.reseal.tmp")
    write_atomic(tmp, data)
    try:
        os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))
        fd = os.open(tmp, os.O_RDONLY)
        try:
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
        raise DeviceIOError(f"cannot reseal {path.name}: {exc.strerror or exc}") from exc
