"""The gallery: enrolled identities, their samples, templates and search.

Every identity has a stable random ``id`` (what events carry, pseudonymised by
the minimiser), a local ``name`` the owner uses on the command line, and an
optional display ``label`` that events may carry when the owner set one.  Each
identity keeps several L2-normalised samples; its *template* is the
coordinate-wise trimmed mean of its samples, re-normalised, so one bad
enrolment photo cannot drag it far.  Identification compares a query with the
templates and reports "unknown" below a threshold.

With ``keep_crops`` (``matching.keep_enrolment_crops``) enrolment also keeps
each sample's face crop, sealed (:mod:`agent.matching.crops`), so that
:meth:`Gallery.reembed` can rebuild every identity's vectors with another
embedder.
"""

from __future__ import annotations

import dataclasses
import pathlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agent.errors import BadDataError, NotFoundError, PolicyError
from agent.matching.crops import CropFiles, EnrolmentCrop
from agent.matching.search import F32, TopK, l2_normalise, top_k
from agent.matching.settings import GalleryStorage
from agent.matching.store import IdentityRecord, VectorStore
from agent.purposes import Purpose

if TYPE_CHECKING:
    from agent.keystore import DataKeys

MAX_NAME_CHARS = 64
KEPT_CROPS = (
    "enrolment face crops are kept (matching.keep_enrolment_crops) so that a change of face"
    " model can re-embed everyone: each identity's crops are listed under it as image files"
)


@dataclasses.dataclass(frozen=True)
class Match:
    identity: IdentityRecord | None
    score: float

    @property
    def known(self) -> bool:
        return self.identity is not None


def trimmed_mean(samples: F32, trim: float) -> F32:
    """Coordinate-wise mean after dropping ``trim`` of the values at each end."""
    count = samples.shape[0]
    cut = int(count * trim)
    if count < 3 or cut == 0:
        return np.asarray(samples.mean(axis=0), dtype=np.float32)
    ordered = np.sort(samples, axis=0)
    return np.asarray(ordered[cut : count - cut].mean(axis=0), dtype=np.float32)


def _check_name(name: str, what: str = "name") -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME_CHARS or not cleaned.isprintable():
        raise BadDataError(f"{what} must be 1..{MAX_NAME_CHARS} printable characters")
    return cleaned


class Gallery:
    """Identities and their sample vectors, stored in ``directory``."""

    name = "face_gallery"

    def __init__(
        self,
        store: VectorStore,
        *,
        trim: float = 0.2,
        max_samples_per_identity: int = 64,
        max_identities: int = 10_000,
        executor: Executor | None = None,
        workers: int = 1,
        keep_crops: bool = False,
    ) -> None:
        self.store = store
        self.keep_crops = keep_crops
        self.trim = trim
        self.max_samples = max_samples_per_identity
        self.max_identities = max_identities
        self.executor = executor
        self.workers = workers
        self._templates: F32 | None = None
        self._template_owners: list[IdentityRecord] = []

    @classmethod
    def open(
        cls,
        directory: pathlib.Path,
        dim: int,
        storage: GalleryStorage = GalleryStorage.FLOAT32,
        *,
        trim: float = 0.2,
        max_samples_per_identity: int = 64,
        max_identities: int = 10_000,
        executor: Executor | None = None,
        workers: int = 1,
        keys: DataKeys | None = None,
        embedder: str = "",
        keep_crops: bool = False,
    ) -> Gallery:
        """The gallery in ``directory``, sealed under ``keys`` (None: in clear, for tests)."""
        return cls(
            VectorStore.open(directory, dim, storage, keys, embedder),
            trim=trim,
            max_samples_per_identity=max_samples_per_identity,
            max_identities=max_identities,
            executor=executor,
            workers=workers,
            keep_crops=keep_crops,
        )

    @property
    def crops(self) -> CropFiles:
        """The kept enrolment crops, sealed like the rest of the gallery."""
        return CropFiles(self.store.directory, self.store.sealer)

    @property
    def dim(self) -> int:
        return self.store.manifest.dim

    # --- identities --------------------------------------------------------

    def identities(self) -> list[IdentityRecord]:
        return list(self.store.manifest.identities)

    def sample_counts(self) -> dict[int, int]:
        numbers, counts = np.unique(self.store.owners(), return_counts=True)
        return {int(n): int(c) for n, c in zip(numbers, counts, strict=True)}

    def find(self, name_or_id: str) -> IdentityRecord:
        for record in self.store.manifest.identities:
            if name_or_id in (record.name, record.id):
                return record
        raise NotFoundError(f"no identity named {name_or_id[:MAX_NAME_CHARS]!r}")

    def _by_number(self, number: int) -> IdentityRecord:
        for record in self.store.manifest.identities:
            if record.number == number:
                return record
        raise NotFoundError(f"no identity number {number}")

    def enrol(
        self,
        name: str,
        samples: npt.NDArray[np.floating],
        label: str | None = None,
        crops: Sequence[EnrolmentCrop] | None = None,
    ) -> IdentityRecord:
        """Add ``samples`` to identity ``name``, creating it (with ``label``) if new.

        ``crops``: the face crop of each sample, kept only if :attr:`keep_crops`.
        """
        name = _check_name(name)
        rows = l2_normalise(np.atleast_2d(samples))
        if rows.shape[1] != self.dim:
            raise BadDataError(f"samples have {rows.shape[1]} components, gallery wants {self.dim}")
        if not np.all(np.isfinite(rows)) or not rows.any(axis=1).all():
            raise BadDataError("samples must be finite, non-zero vectors")
        self.refresh()  # never commit over a change another process made
        manifest = self.store.manifest
        try:
            record = self.find(name)
            created = False
        except NotFoundError:
            if len(manifest.identities) >= self.max_identities:
                raise PolicyError(f"gallery is full ({self.max_identities} identities)") from None
            record = IdentityRecord(
                manifest.next_number,
                "id-" + secrets.token_hex(8),
                name,
                None if label is None else _check_name(label, "label"),
            )
            created = True
        have = self.sample_counts().get(record.number, 0)
        if have + rows.shape[0] > self.max_samples:
            raise PolicyError(
                f"{name!r} would have {have + rows.shape[0]} samples (limit {self.max_samples})"
            )
        if crops is not None and len(crops) != rows.shape[0]:
            raise BadDataError(f"{len(crops)} crops for {rows.shape[0]} samples")
        committed = manifest.copy()
        try:
            if self.keep_crops and crops is not None:
                # A new identity's number may name leftovers of a crashed enrolment: replaced.
                kept = [] if created else self.crops.read(record.number)
                self.crops.write(record.number, kept + list(crops))
            self.store.append(rows, record.number)
            if created:
                manifest.identities.append(record)
                manifest.next_number += 1
            self.store.commit()
        except BaseException:
            self.store.manifest = committed
            raise
        self._templates = None
        return record

    def remove(self, name_or_id: str) -> IdentityRecord:
        self.refresh()
        record = self.find(name_or_id)
        keep = self.store.owners() != record.number
        committed = self.store.manifest.copy()
        self.store.manifest.identities.remove(record)
        try:
            self.store.rewrite(keep)
        except BaseException:
            self.store.manifest = committed
            raise
        self._templates = None
        self.crops.remove(record.number)
        keys = self.store.sealer.keys
        if keys is not None:
            # The old manifest still names them in freed blocks, sealed under the live key.
            keys.request_rotation(Purpose.FACE_RECOGNITION.value)
        return record

    def rename(
        self, name_or_id: str, new_name: str | None = None, label: str | None = None
    ) -> IdentityRecord:
        """Give an identity a new local name and/or display label (``""`` clears it)."""
        self.refresh()
        record = self.find(name_or_id)
        new_name = record.name if new_name is None else _check_name(new_name)
        if new_name != record.name and any(
            r.name == new_name for r in self.store.manifest.identities
        ):
            raise PolicyError(f"an identity named {new_name!r} exists")
        if label is None:
            new_label = record.label
        else:
            new_label = _check_name(label, "label") if label else None
        updated = dataclasses.replace(record, name=new_name, label=new_label)
        committed = self.store.manifest.copy()
        identities = self.store.manifest.identities
        identities[identities.index(record)] = updated
        try:
            self.store.commit()
        except BaseException:
            self.store.manifest = committed
            raise
        self._templates = None
        return updated

    # --- search ------------------------------------------------------------

    def _queries(self, queries: npt.NDArray[np.floating]) -> F32:
        rows = np.atleast_2d(queries)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise BadDataError(f"query has shape {rows.shape}, gallery vectors have {self.dim}")
        return l2_normalise(rows)

    def search(self, queries: npt.NDArray[np.floating], k: int) -> TopK:
        """Top-``k`` samples by cosine similarity for each query row."""
        return top_k(
            self.store.vectors(),
            self._queries(queries),
            k,
            scales=self.store.scales(),
            executor=self.executor,
            workers=self.workers,
        )

    def templates(self) -> tuple[F32, list[IdentityRecord]]:
        """One trimmed-mean template per identity, and the identity of each row."""
        if self._templates is None:
            owners = np.asarray(self.store.owners())
            records = self.identities()
            rows = np.zeros((len(records), self.dim), dtype=np.float32)
            for i, record in enumerate(records):
                mine = np.flatnonzero(owners == record.number)
                if mine.size:
                    rows[i] = trimmed_mean(self.store.float_rows(mine), self.trim)
            self._templates = l2_normalise(rows)
            self._template_owners = records
        return self._templates, self._template_owners

    def identify(self, query: npt.NDArray[np.floating], threshold: float) -> Match:
        """The best identity for ``query``, or an unknown match below ``threshold``."""
        templates, owners = self.templates()
        if not owners:
            return Match(None, 0.0)
        best = top_k(templates, self._queries(query), 1)
        score = float(best.scores[0, 0])
        row = int(best.rows[0, 0])
        return Match(owners[row] if score >= threshold else None, score)

    def refresh(self) -> bool:
        """Re-read the gallery if another process (the CLI) committed a change."""
        if not self.store.changed_on_disk():
            return False
        manifest = self.store.manifest
        self.store = VectorStore.open(
            self.store.directory, manifest.dim, manifest.storage, self.store.sealer.keys
        )
        self._templates = None
        return True

    # --- personal data -----------------------------------------------------

    def _identity_items(
        self, crops: Callable[[IdentityRecord], object]
    ) -> tuple[list[dict[str, object]], bool]:
        """One item per identity (id, names, sample count), with ``crops(record)`` for those
        whose enrolment crops are kept; and whether any are."""
        counts = self.sample_counts()
        kept = self.crops.numbers()
        identities: list[dict[str, object]] = []
        for r in self.identities():
            item: dict[str, object] = {
                "id": r.id,
                "name": r.name,
                "label": r.label,
                "samples": counts.get(r.number, 0),
            }
            if r.number in kept:
                item["crops"] = crops(r)
            identities.append(item)
        return identities, bool(kept)

    def listing(self) -> Mapping[str, object]:
        """Who is enrolled, with sample (and kept crop) counts: no image, no vector."""
        identities, _ = self._identity_items(lambda r: len(self.crops.read(r.number)))
        return {"identities": identities}

    def export_personal_data(self) -> Mapping[str, object]:
        """:meth:`listing` with the kept crops themselves (bytes: image files of the export)."""
        identities, kept = self._identity_items(
            lambda r: [
                {"name": f"{r.id}-{k}.jpg", "content": c.image, "face_box": list(c.box)}
                for k, c in enumerate(self.crops.read(r.number), start=1)
            ]
        )
        section: dict[str, object] = {"identities": identities}
        if kept:
            section["face_crops"] = KEPT_CROPS
        return section

    def reseal_personal_data(self) -> int:
        """Seal every file under the newest ``face_recognition`` key (a key rotation)."""
        self.refresh()
        return self.store.reseal() + self.crops.reseal()

    # --- another embedder ----------------------------------------------------

    def reembed(
        self,
        embed: Callable[[EnrolmentCrop], npt.NDArray[np.float32] | None],
        embedder: str,
    ) -> Reembedded:
        """Rebuild every identity's vectors from its kept crops with ``embed``, atomically.

        Identities without crops (or whose crops no longer show a usable face)
        keep their id, name and label but no samples: they must enrol again.
        Nothing changes (BadDataError) if no crop gives a vector at all.
        """
        self.refresh()
        kept = self.crops.numbers()
        owners: list[int] = []
        rows: list[npt.NDArray[np.float32]] = []
        done: list[tuple[IdentityRecord, int]] = []
        missing: list[IdentityRecord] = []
        for record in self.identities():
            vectors = []
            if record.number in kept:
                vectors = [v for v in map(embed, self.crops.read(record.number)) if v is not None]
            if vectors:
                rows += vectors
                owners += [record.number] * len(vectors)
                done.append((record, len(vectors)))
            else:
                missing.append(record)
        if not rows:
            raise BadDataError(
                "no kept enrolment crop gives a face to re-embed: everyone must re-enrol"
            )
        self.store.replace(
            np.asarray(owners, dtype=np.int32), l2_normalise(np.stack(rows)), embedder,
            self.identities(),
        )
        self._templates = None
        return Reembedded(done, missing)

    def erase_personal_data(self) -> int:
        count = len(self.store.manifest.identities)
        self.store.erase()
        self._templates = None
        return count


@dataclasses.dataclass(frozen=True)
class Reembedded:
    """What :meth:`Gallery.reembed` did: (identity, samples) re-embedded, and who must re-enrol."""

    done: list[tuple[IdentityRecord, int]]
    missing: list[IdentityRecord]


def counts_by_name(gallery: Gallery) -> Sequence[tuple[IdentityRecord, int]]:
    counts = gallery.sample_counts()
    return [(r, counts.get(r.number, 0)) for r in gallery.identities()]
