"""Crash-safe storage of a gallery's vectors: sealed on disk, plain in memory.

Layout of a gallery directory (every file sealed under the ``face_recognition``
data key, :mod:`agent.matching.gallery_manifest`)::

    manifest.json              committed state: dim, storage, generation, row count,
                               segments, identities (number, id, name, label)
    vectors-<gen>-<seq>.bin    one segment: int32 owner of each row, the rows
                               (float32 or int8), float32 scales (int8 only)

The files are opened once, when the gallery is opened (or reloaded after
another process changed it), into arrays in memory: matching scans those and
never touches the files or the keys.

Only the manifest commits anything.  Enrolment writes its rows as a new segment
(temp file + fsync + rename) and then replaces the manifest naming it; a crash
before that leaves the old manifest and an unnamed segment.  Segments merge as
they accumulate (each is kept over twice the size of the next), so a gallery
has O(log rows) files and every row is rewritten O(log rows) times.  Removing
rows writes a new generation and commits a manifest naming it.  After each
commit every file no manifest names any more (old generations, merged
segments, leftovers of a crash, a pre-sealing gallery) is overwritten and
unlinked; what the file system kept of them is ciphertext, gone with the key.

A gallery of the pre-sealing format (format 1: a clear manifest and memory-mapped
``vectors-<gen>.bin`` files) is read as it is and written sealed, as a new
generation, at the first write or reseal.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agent.atomicfile import shred, write_atomic
from agent.errors import DecodeError, DeviceIOError
from agent.matching import lbp
from agent.matching.crops import CropFiles
from agent.matching.gallery_manifest import (
    FORMAT_VERSION,
    HEADER_PROBE_BYTES,
    LEGACY_FORMAT,
    MANIFEST,
    MANIFEST_CONTEXT,
    ROWS_CONTEXT,
    EmbedderMismatch,
    IdentityRecord,
    Manifest,
    Sealer,
    read_manifest,
)
from agent.matching.search import quantise_rows
from agent.matching.settings import GalleryStorage
from agent.sealing import KeyDestroyed

if TYPE_CHECKING:
    from agent.keystore import DataKeys

__all__ = ["MANIFEST", "EmbedderMismatch", "IdentityRecord", "Manifest", "VectorStore"]

log = logging.getLogger(__name__)

_DATA_FILE = re.compile(r"(?:vectors|owners|scales)-(\d+)(?:-(\d+))?\.bin")
_SEAL_OVERHEAD = 128  # more than any sealed blob's header, nonce and tag
_MIN_CAPACITY = 64


def _probe(path: pathlib.Path) -> bytes | None:
    try:
        with path.open("rb") as handle:
            return handle.read(HEADER_PROBE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read(path: pathlib.Path, max_bytes: int) -> bytes:
    try:
        if path.stat().st_size > max_bytes:
            raise DecodeError(f"{path.name} is larger than its manifest says")
        return path.read_bytes()
    except FileNotFoundError:
        raise DecodeError(f"gallery in {path.parent}: a file is missing") from None
    except OSError as exc:
        raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc


# Galleries written before the embedder was recorded: LBP made lbp.DIM-d vectors,
# the only 128-d embedder was SFace.
LEGACY_EMBEDDERS = {lbp.DIM: "lbp", 128: "sface"}


class VectorStore:
    """The rows of one gallery, in memory, committed to sealed files crash-safely."""

    def __init__(
        self, directory: pathlib.Path, manifest: Manifest, sealer: Sealer | None = None
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.sealer = sealer if sealer is not None else Sealer(None)
        self._set_arrays(*self._empty(manifest.storage, 0))
        self._seen = self._manifest_stamp()

    # --- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: pathlib.Path,
        dim: int,
        storage: GalleryStorage,
        keys: DataKeys | None = None,
        embedder: str = "",
    ) -> VectorStore:
        """Open the gallery in ``directory`` (an empty one if none is committed).

        A gallery sealed under a destroyed key was erased: it opens empty and
        its leftover files are removed.
        """
        sealer = Sealer(keys)
        for attempt in (1, 2):
            try:
                return cls._load(directory, dim, storage, sealer, embedder)
            except KeyDestroyed as exc:
                # A rotation in another process may have resealed the files and
                # retired the key between our read and our open: look once more.
                if attempt == 2:
                    log.warning("face gallery: %s; its files are erased data, removing them", exc)
        store = cls(directory, Manifest(dim=dim, storage=storage, embedder=embedder), sealer)
        store.erase()
        return store

    @classmethod
    def _load(
        cls,
        directory: pathlib.Path,
        dim: int,
        storage: GalleryStorage,
        sealer: Sealer,
        embedder: str = "",
    ) -> VectorStore:
        manifest = read_manifest(directory, sealer)
        if manifest is None:
            return cls(directory, Manifest(dim=dim, storage=storage, embedder=embedder), sealer)
        stored = (manifest.embedder or LEGACY_EMBEDDERS.get(manifest.dim, "")) if embedder else ""
        if manifest.dim != dim or (stored and stored != embedder):
            if manifest.count == 0 and not manifest.identities:
                # Everyone was removed: nothing to lose, start over for this embedder.
                return cls(directory, Manifest(dim=dim, storage=storage, embedder=embedder), sealer)
            kept = CropFiles(directory, sealer).numbers()
            raise EmbedderMismatch(
                stored or f"{manifest.dim}-d",
                embedder or f"{dim}-d",
                len(manifest.identities),
                sum(r.number in kept for r in manifest.identities),
            )
        if embedder:
            manifest.embedder = embedder  # recorded with the next write of a legacy gallery
        store = cls(directory, manifest, sealer)
        if manifest.format == LEGACY_FORMAT:
            store._load_legacy()
        else:
            store._load_segments()
        if manifest.storage is not storage:
            store.convert(storage)
        return store

    def _load_segments(self) -> None:
        m = self.manifest
        owners, vectors, scales = self._empty(m.storage, m.count)
        start = 0
        for seq, rows in m.segments:
            path = self._segment_path(m.generation, seq)
            size = rows * self._row_bytes(m.storage)
            plain = self.sealer.open(_read(path, size + _SEAL_OVERHEAD), ROWS_CONTEXT)
            if len(plain) != size:
                raise DecodeError(f"gallery in {self.directory}: {path.name} is truncated")
            o, v, s = self._decode_segment(plain, rows, m.storage)
            owners[start : start + rows] = o
            vectors[start : start + rows] = v
            if scales is not None and s is not None:
                scales[start : start + rows] = s
            start += rows
        self._set_arrays(owners, vectors, scales)

    def _load_legacy(self) -> None:
        """Format 1: raw ``<kind>-<gen>.bin`` files, possibly longer than the committed count."""
        m = self.manifest
        int8 = m.storage is GalleryStorage.INT8
        parts: dict[str, np.ndarray] = {}
        wanted = {"owners": ("<i4", m.count), "vectors": ("i1" if int8 else "<f4", m.count * m.dim)}
        if int8:
            wanted["scales"] = ("<f4", m.count)
        for kind, (dtype, items) in wanted.items():
            path = self.directory / f"{kind}-{m.generation}.bin"
            try:
                data = np.fromfile(path, dtype=dtype, count=items) if items else np.zeros(0, dtype)
            except (OSError, ValueError):
                data = np.zeros(0, dtype)
            if data.size < items:
                raise DecodeError(
                    f"gallery in {self.directory}: vector file is missing or truncated"
                )
            parts[kind] = data
        self._set_arrays(
            parts["owners"].astype(np.int32),
            parts["vectors"].astype(self._dtype_of(m.storage)).reshape(m.count, m.dim),
            parts["scales"].astype(np.float32) if int8 else None,
        )

    # --- arrays ------------------------------------------------------------

    @staticmethod
    def _dtype_of(storage: GalleryStorage) -> type[np.generic]:
        return np.int8 if storage is GalleryStorage.INT8 else np.float32

    def _row_bytes(self, storage: GalleryStorage) -> int:
        width = 1 if storage is GalleryStorage.INT8 else 4
        return 4 + self.manifest.dim * width + (4 if storage is GalleryStorage.INT8 else 0)

    def _empty(
        self, storage: GalleryStorage, rows: int
    ) -> tuple[npt.NDArray[np.int32], np.ndarray, npt.NDArray[np.float32] | None]:
        return (
            np.zeros(rows, dtype=np.int32),
            np.zeros((rows, self.manifest.dim), dtype=self._dtype_of(storage)),
            np.zeros(rows, dtype=np.float32) if storage is GalleryStorage.INT8 else None,
        )

    def _set_arrays(
        self,
        owners: npt.NDArray[np.int32],
        vectors: np.ndarray,
        scales: npt.NDArray[np.float32] | None,
    ) -> None:
        self._owners, self._vectors, self._scales = owners, vectors, scales

    def _reserve(self, rows: int) -> None:
        """Room for ``rows`` rows in memory (rows past the committed count are scratch)."""
        capacity = self._owners.shape[0]
        if rows <= capacity:
            return
        owners, vectors, scales = self._empty(
            self.manifest.storage, max(rows, 2 * capacity, _MIN_CAPACITY)
        )
        owners[:capacity] = self._owners
        vectors[:capacity] = self._vectors
        if scales is not None and self._scales is not None:
            scales[:capacity] = self._scales
        self._set_arrays(owners, vectors, scales)

    def _decode_segment(
        self, plain: bytes, rows: int, storage: GalleryStorage
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        dim = self.manifest.dim
        int8 = storage is GalleryStorage.INT8
        owners = np.frombuffer(plain, "<i4", rows, 0)
        offset = 4 * rows
        vectors = np.frombuffer(plain, "i1" if int8 else "<f4", rows * dim, offset)
        offset += vectors.nbytes
        scales = np.frombuffer(plain, "<f4", rows, offset) if int8 else None
        return owners, vectors.reshape(rows, dim), scales

    def _encode_segment(self, start: int, end: int) -> bytes:
        parts = [self._owners[start:end].astype("<i4").tobytes()]
        if self.manifest.storage is GalleryStorage.INT8:
            parts.append(self._vectors[start:end].astype("i1").tobytes())
            assert self._scales is not None
            parts.append(self._scales[start:end].astype("<f4").tobytes())
        else:
            parts.append(self._vectors[start:end].astype("<f4").tobytes())
        return b"".join(parts)

    # --- files -------------------------------------------------------------

    def _segment_path(self, generation: int, seq: int) -> pathlib.Path:
        return self.directory / f"vectors-{generation}-{seq}.bin"

    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = (self.directory / MANIFEST).stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def changed_on_disk(self) -> bool:
        """True if the manifest was replaced since this store last read or wrote it."""
        return self._manifest_stamp() != self._seen

    def _write_segment(self, start: int, end: int) -> None:
        """Seal rows ``start:end`` into the next segment of the generation (not committed)."""
        m = self.manifest
        seq = m.next_segment
        sealed = self.sealer.seal(self._encode_segment(start, end), ROWS_CONTEXT)
        write_atomic(self._segment_path(m.generation, seq), sealed)
        m.next_segment = seq + 1
        m.segments.append((seq, end - start))

    def _new_generation(self) -> None:
        """Write every committed row as one segment of a new generation (not committed)."""
        m = self.manifest
        m.generation += 1
        m.segments = []
        m.next_segment = 0
        m.format = FORMAT_VERSION
        if m.count:
            self._write_segment(0, m.count)

    def _merge_tail(self) -> None:
        segments = self.manifest.segments
        while len(segments) >= 2 and segments[-2][1] <= 2 * segments[-1][1]:
            rows = segments[-2][1] + segments[-1][1]
            end = self.manifest.count
            del segments[-2:]
            self._write_segment(end - rows, end)

    # --- reading -----------------------------------------------------------

    @property
    def count(self) -> int:
        return self.manifest.count

    def vectors(self) -> npt.NDArray[np.float32] | npt.NDArray[np.int8]:
        return self._vectors[: self.count]

    def scales(self) -> npt.NDArray[np.float32] | None:
        if self._scales is None:
            return None
        return self._scales[: self.count]

    def owners(self) -> npt.NDArray[np.int32]:
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
        """Durably publish the in-memory manifest, then drop the files it no longer names."""
        if self.manifest.format == LEGACY_FORMAT:
            self._new_generation()
        write_atomic(
            self.directory / MANIFEST, self.sealer.seal(self.manifest.to_json(), MANIFEST_CONTEXT)
        )
        self._seen = self._manifest_stamp()
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Shred data files of older generations and unnamed segments below the next number."""
        m = self.manifest
        named = {seq for seq, _ in m.segments}
        for path in self.files():
            found = _DATA_FILE.fullmatch(path.name)
            if found is None:
                continue
            generation = int(found.group(1))
            seq = None if found.group(2) is None else int(found.group(2))
            stale = generation < m.generation or (
                generation == m.generation
                and seq is not None
                and seq < m.next_segment
                and seq not in named
            )
            if stale:
                try:
                    shred(path)
                except DeviceIOError as exc:
                    log.warning("could not remove an old gallery file: %s", exc)

    def append(self, rows: npt.NDArray[np.float32], owner: int) -> None:
        """Write ``rows`` as a new segment past the committed state; they count after commit."""
        if self.manifest.format == LEGACY_FORMAT:
            self._new_generation()
        start = self.count
        end = start + rows.shape[0]
        self._reserve(end)
        if self._scales is not None:
            codes, scales = quantise_rows(rows)
            self._vectors[start:end] = codes
            self._scales[start:end] = scales
        else:
            self._vectors[start:end] = rows
        self._owners[start:end] = owner
        self._write_segment(start, end)
        self.manifest.count = end
        self._merge_tail()

    def rewrite(self, keep: npt.NDArray[np.bool_], storage: GalleryStorage | None = None) -> None:
        """Keep the rows where ``keep`` is true, as a new generation (committed here)."""
        old_manifest = self.manifest.copy()
        old_arrays = (self._owners, self._vectors, self._scales)
        new_storage = storage or old_manifest.storage
        chosen = np.flatnonzero(keep)
        owners, vectors, scales = self._empty(new_storage, chosen.shape[0])
        owners[:] = self.owners()[chosen]
        if new_storage is old_manifest.storage:
            vectors[:] = self.vectors()[chosen]
            old_scales = self.scales()
            if scales is not None and old_scales is not None:
                scales[:] = old_scales[chosen]
        elif scales is not None:
            vectors[:], scales[:] = quantise_rows(self.float_rows(chosen))
        else:
            vectors[:] = self.float_rows(chosen)
        try:
            self.manifest.storage = new_storage
            self.manifest.count = int(chosen.shape[0])
            self._set_arrays(owners, vectors, scales)
            self._new_generation()
            self.commit()
        except BaseException:
            self.manifest = old_manifest
            self._set_arrays(*old_arrays)
            raise

    def replace(
        self,
        owners: npt.NDArray[np.int32],
        rows: npt.NDArray[np.float32],
        embedder: str,
        identities: list[IdentityRecord],
    ) -> None:
        """Every row replaced by ``rows`` (any dimension), as a new generation, committed here."""
        old_manifest = self.manifest.copy()
        old_arrays = (self._owners, self._vectors, self._scales)
        try:
            self.manifest.dim = int(rows.shape[1])
            self.manifest.embedder = embedder
            self.manifest.identities = list(identities)
            self.manifest.count = int(rows.shape[0])
            owners_new, vectors, scales = self._empty(self.manifest.storage, rows.shape[0])
            owners_new[:] = owners
            if scales is not None:
                vectors[:], scales[:] = quantise_rows(rows)
            else:
                vectors[:] = rows
            self._set_arrays(owners_new, vectors, scales)
            self._new_generation()
            self.commit()
        except BaseException:
            self.manifest = old_manifest
            self._set_arrays(*old_arrays)
            raise

    def convert(self, storage: GalleryStorage) -> None:
        self.rewrite(np.ones(self.count, dtype=bool), storage)

    # --- keys ---------------------------------------------------------------

    def reseal(self) -> int:
        """Seal every file of the committed gallery under the newest key; the files rewritten.

        Idempotent: a file already under the newest key is left alone, so a run
        cut short by a kill is finished by the next.
        """
        if not self.sealer.sealing or self._manifest_stamp() is None:
            return 0
        if self.manifest.format == LEGACY_FORMAT:
            committed = self.manifest.copy()
            try:
                self.commit()  # the migration: every row and the manifest, sealed
            except BaseException:
                self.manifest = committed
                raise
            return 1 + len(self.manifest.segments)
        in_step = not self.changed_on_disk()
        resealed = 0
        m = self.manifest
        files = [(self._segment_path(m.generation, seq), ROWS_CONTEXT) for seq, _ in m.segments]
        files.append((self.directory / MANIFEST, MANIFEST_CONTEXT))  # last: it names the rest
        for path, context in files:
            probe = _probe(path)
            if probe is None or not self.sealer.needs_reseal(probe):
                continue
            plain = self.sealer.open(_read(path, 1 << 40), context)
            write_atomic(path, self.sealer.seal(plain, context))
            resealed += 1
        if in_step:
            self._seen = self._manifest_stamp()
        return resealed

    # --- erasure -------------------------------------------------------------

    def files(self) -> Iterable[pathlib.Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.is_file())
        except FileNotFoundError:
            return []

    def erase(self) -> int:
        """Overwrite and unlink every file of the gallery; returns the number of files."""
        erased = sum(1 for path in self.files() if shred(path))
        self.manifest = Manifest(
            dim=self.manifest.dim, storage=self.manifest.storage, embedder=self.manifest.embedder
        )
        self._set_arrays(*self._empty(self.manifest.storage, 0))
        self._seen = None
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        return erased
