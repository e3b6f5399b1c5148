"""Crash-safe, memory-mapped storage of a gallery's vectors.

Layout of a gallery directory::

    manifest.json          committed state: dim, storage, generation, row count,
                           identities (number, id, name, label)
    vectors-<gen>.bin      rows x dim, float32 or int8, memory-mapped
    owners-<gen>.bin       int32 identity number of every row
    scales-<gen>.bin       float32 scale of every row (int8 storage only)

Only the manifest commits anything.  Adding rows writes them *past* the
committed count, fsyncs, then replaces the manifest (temp file + fsync +
``os.replace``); a crash before the replace leaves the old count, so the new
rows are ignored.  Removing rows writes a compacted new generation and then
commits a manifest naming it; the old generation is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from agent.atomicfile import shred
from agent.errors import DecodeError, DeviceIOError
from agent.matching.search import quantise_rows
from agent.matching.settings import GalleryStorage

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class IdentityRecord:
    number: int
    id: str
    name: str
    label: str | None = None


@dataclasses.dataclass
class Manifest:
    dim: int
    storage: GalleryStorage
    generation: int = 0
    count: int = 0
    next_number: int = 0
    identities: list[IdentityRecord] = dataclasses.field(default_factory=list)

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT_VERSION,
            "dim": self.dim,
            "storage": self.storage.value,
            "generation": self.generation,
            "count": self.count,
            "next_number": self.next_number,
            "identities": [dataclasses.asdict(i) for i in self.identities],
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
            if body["format"] != FORMAT_VERSION:
                raise DecodeError(f"unsupported gallery format {body['format']!r}")
            return cls(
                dim=int(body["dim"]),
                storage=GalleryStorage(body["storage"]),
                generation=int(body["generation"]),
                count=int(body["count"]),
                next_number=int(body["next_number"]),
                identities=[
                    IdentityRecord(int(i["number"]), str(i["id"]), str(i["name"]), i["label"])
                    for i in body["identities"]
                ],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"gallery manifest is corrupt: {exc}") from exc


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DeviceIOError(f"cannot write {path}: {exc.strerror or exc}") from exc
    # Once replaced the new file is what readers see; reporting a failed directory
    # fsync as a failed write would make callers roll back files it already names.
    with contextlib.suppress(OSError):
        _fsync_dir(path.parent)


class VectorStore:
    """The rows of one gallery, memory-mapped, with crash-safe commits."""

    def __init__(self, directory: pathlib.Path, manifest: Manifest) -> None:
        self.directory = directory
        self.manifest = manifest
        self._capacity = 0
        self._vectors: np.memmap | None = None
        self._owners: np.memmap | None = None
        self._scales: np.memmap | None = None
        self._seen = self._manifest_stamp()
        self._map()

    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = (self.directory / MANIFEST).stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def changed_on_disk(self) -> bool:
        """True if the manifest was replaced since this store last read or wrote it."""
        return self._manifest_stamp() != self._seen

    # --- opening -----------------------------------------------------------

    @classmethod
    def open(cls, directory: pathlib.Path, dim: int, storage: GalleryStorage) -> VectorStore:
        """Open the gallery in ``directory``, creating an empty one if none is committed."""
        path = directory / MANIFEST
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise DecodeError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(directory, Manifest(dim=dim, storage=storage))
        except OSError as exc:
            raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc
        manifest = Manifest.from_json(raw)
        if manifest.dim != dim:
            raise DecodeError(
                f"gallery in {directory} holds {manifest.dim}-d vectors, the embedder makes {dim}-d"
            )
        store = cls(directory, manifest)
        if manifest.storage is not storage:
            store.convert(storage)
        return store

    def _file(self, kind: str, generation: int | None = None) -> pathlib.Path:
        gen = self.manifest.generation if generation is None else generation
        return self.directory / f"{kind}-{gen}.bin"

    @property
    def _dtype(self) -> type[np.generic]:
        return np.int8 if self.manifest.storage is GalleryStorage.INT8 else np.float32

    def _map(self) -> None:
        """Map the current generation's files (their size may exceed the committed count)."""
        self._vectors = self._owners = self._scales = None
        row_bytes = self.manifest.dim * np.dtype(self._dtype).itemsize
        widths = {"vectors": row_bytes, "owners": 4}
        if self.manifest.storage is GalleryStorage.INT8:
            widths["scales"] = 4
        try:
            # A crash while growing can leave the files with different sizes.
            capacity = min(self._file(k).stat().st_size // w for k, w in widths.items())
        except FileNotFoundError:
            self._capacity = 0
            if self.manifest.count:
                raise DecodeError(f"gallery in {self.directory}: a file is missing") from None
            return
        if capacity < self.manifest.count:
            raise DecodeError(f"gallery in {self.directory}: vector file is truncated")
        self._capacity = capacity
        if capacity == 0:
            return
        try:
            self._vectors = np.memmap(
                self._file("vectors"), self._dtype, "r+", shape=(capacity, self.manifest.dim)
            )
            self._owners = np.memmap(self._file("owners"), np.int32, "r+", shape=(capacity,))
            if self.manifest.storage is GalleryStorage.INT8:
                self._scales = np.memmap(
                    self._file("scales"), np.float32, "r+", shape=(capacity,)
                )
        except (OSError, ValueError) as exc:
            raise DecodeError(f"gallery in {self.directory} is unreadable: {exc}") from exc

    # --- reading -----------------------------------------------------------

    @property
    def count(self) -> int:
        return self.manifest.count

    def vectors(self) -> npt.NDArray[np.float32] | npt.NDArray[np.int8]:
        if self._vectors is None:
            return np.zeros((0, self.manifest.dim), dtype=self._dtype)
        return self._vectors[: self.count]

    def scales(self) -> npt.NDArray[np.float32] | None:
        if self.manifest.storage is not GalleryStorage.INT8:
            return None
        if self._scales is None:
            return np.zeros(0, dtype=np.float32)
        return self._scales[: self.count]

    def owners(self) -> npt.NDArray[np.int32]:
        if self._owners is None:
            return np.zeros(0, dtype=np.int32)
        return self._owners[: self.count]

    def float_rows(self, rows: npt.NDArray[np.intp] | slice) -> npt.NDArray[np.float32]:
        """Rows ``rows`` decoded to float32."""
        data = np.asarray(self.vectors()[rows], dtype=np.float32)
        scales = self.scales()
        if scales is not None:
            data = data * scales[rows][:, None]
        return data

    # --- writing -----------------------------------------------------------

    def commit(self) -> None:
        """Durably publish the in-memory manifest."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceIOError(f"cannot create {self.directory}: {exc.strerror or exc}") from exc
        write_atomically(self.directory / MANIFEST, self.manifest.to_json())
        self._seen = self._manifest_stamp()

    def _grow(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        capacity = max(needed, 2 * self._capacity, 64)
        row_bytes = self.manifest.dim * np.dtype(self._dtype).itemsize
        self._release()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for kind, width in (("vectors", row_bytes), ("owners", 4), ("scales", 4)):
                if kind == "scales" and self.manifest.storage is not GalleryStorage.INT8:
                    continue
                with open(self._file(kind), "ab") as handle:
                    handle.truncate(capacity * width)
        except OSError as exc:
            raise DeviceIOError(f"cannot grow gallery files: {exc.strerror or exc}") from exc
        self._map()

    def _release(self) -> None:
        for mapped in (self._vectors, self._owners, self._scales):
            if mapped is not None:
                mapped.flush()
        self._vectors = self._owners = self._scales = None

    def _flush_files(self) -> None:
        try:
            for mapped in (self._vectors, self._owners, self._scales):
                if mapped is not None:
                    mapped.flush()
            for kind in ("vectors", "owners", "scales"):
                path = self._file(kind)
                if path.exists():
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        except OSError as exc:
            raise DeviceIOError(f"cannot flush gallery files: {exc.strerror or exc}") from exc

    def append(self, rows: npt.NDArray[np.float32], owner: int) -> None:
        """Write ``rows`` past the committed count; they count after :meth:`commit`."""
        start = self.count
        self._grow(start + rows.shape[0])
        assert self._vectors is not None and self._owners is not None
        end = start + rows.shape[0]
        if self._scales is not None:
            codes, scales = quantise_rows(rows)
            self._vectors[start:end] = codes
            self._scales[start:end] = scales
        else:
            self._vectors[start:end] = rows
        self._owners[start:end] = owner
        self._flush_files()
        self.manifest.count = end

    def rewrite(self, keep: npt.NDArray[np.bool_], storage: GalleryStorage | None = None) -> None:
        """Write the rows where ``keep`` is true to a new generation (committed here)."""
        rows = self.float_rows(np.flatnonzero(keep)) if self.count else None
        owners = np.array(self.owners()[keep], dtype=np.int32)
        old = self.manifest.generation
        old_storage = self.manifest.storage
        old_count = self.manifest.count
        self._release()
        self.manifest.generation = old + 1
        self.manifest.storage = storage or old_storage
        self.manifest.count = 0
        self._capacity = 0
        try:
            if rows is not None and rows.shape[0]:
                self._grow(rows.shape[0])
                assert self._vectors is not None and self._owners is not None
                if self._scales is not None:
                    codes, scales = quantise_rows(rows)
                    self._vectors[: rows.shape[0]] = codes
                    self._scales[: rows.shape[0]] = scales
                else:
                    self._vectors[: rows.shape[0]] = rows
                self._owners[: rows.shape[0]] = owners
                self._flush_files()
            self.manifest.count = owners.shape[0]
            self.commit()
        except BaseException:
            self._discard_generation(self.manifest.generation, self.manifest.storage)
            self.manifest.generation, self.manifest.storage = old, old_storage
            self.manifest.count = old_count
            self._map()
            raise
        self._discard_generation(old, old_storage)
        self._map()

    def convert(self, storage: GalleryStorage) -> None:
        self.rewrite(np.ones(self.count, dtype=bool), storage)

    def _discard_generation(self, generation: int, storage: GalleryStorage) -> None:
        for kind in ("vectors", "owners", "scales"):
            with contextlib.suppress(OSError):
                self._file(kind, generation).unlink()

    def files(self) -> Iterable[pathlib.Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.is_file())
        except FileNotFoundError:
            return []

    def erase(self) -> int:
        """Overwrite and unlink every file of the gallery; returns the number of files."""
        self._release()
        erased = sum(1 for path in self.files() if shred(path))
        self.manifest = Manifest(dim=self.manifest.dim, storage=self.manifest.storage)
        self._capacity = 0
        self._seen = None
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        return erased
