"""The face gallery's manifest and its sealing, without numpy.

Everything in the gallery directory is sealed (:mod:`agent.sealing`) under the
``face_recognition`` data key; the manifest names who is enrolled.  Kept apart
from :mod:`agent.matching.store` so that reading the names (redaction, the
export's first look) needs no numpy.

Without data keys (:class:`Sealer` with ``keys=None``, tests of the gallery
alone) files are written in clear; a clear file (a gallery from before sealing,
``format`` 1 or 2) is always accepted and sealed on the next write or reseal.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import TYPE_CHECKING

from agent.atomicfile import read_optional
from agent.errors import DecodeError
from agent.matching.settings import GalleryStorage
from agent.purposes import Purpose
from agent.sealing import SealedDataError, is_sealed, read_header

if TYPE_CHECKING:
    from agent.keystore import DataKeys

DOMAIN = Purpose.FACE_RECOGNITION.value
MANIFEST = "manifest.json"
MANIFEST_CONTEXT = b"gallery:manifest"
ROWS_CONTEXT = b"gallery:rows"
# Format 1: plaintext manifest, memory-mapped vectors-<gen>.bin files (read, never written).
LEGACY_FORMAT = 1
FORMAT_VERSION = 2
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
HEADER_PROBE_BYTES = 128  # enough of a blob to read its header (agent.sealing)


class Sealer:
    """Seals and opens the gallery's blobs under the ``face_recognition`` key."""

    def __init__(self, keys: DataKeys | None) -> None:
        self.keys = keys

    @property
    def sealing(self) -> bool:
        return self.keys is not None

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        if self.keys is None:
            return plaintext
        return self.keys.seal(DOMAIN, plaintext, context)

    def open(self, blob: bytes, context: bytes) -> bytes:
        """The plaintext; clear (legacy) data as it is; :class:`KeyDestroyed` if erased."""
        if not is_sealed(blob):
            return blob
        if self.keys is None:
            raise DecodeError("the face gallery is sealed and no data keys were given")
        header = read_header(blob)
        if header.domain != DOMAIN:
            raise SealedDataError(f"a gallery file is sealed under {header.domain!r}")
        return self.keys.open(blob, context)

    def needs_reseal(self, probe: bytes) -> bool:
        """True if a blob (or its first HEADER_PROBE_BYTES) is clear or not under the newest key."""
        if self.keys is None:
            return False
        if not is_sealed(probe):
            return True
        header = read_header(probe)
        live = self.keys.live_numbers(DOMAIN)
        return header.domain != DOMAIN or not live or header.number != live[-1]


class EmbedderMismatch(DecodeError):
    """The gallery holds vectors of another embedder than the configured one."""

    def __init__(
        self, stored: str, configured: str, identities: int = 0, with_crops: int = 0
    ) -> None:
        if with_crops:
            kept = (
                f"{with_crops} of {identities} enrolled people have kept enrolment crops:"
                " `edge-agent gallery reembed` re-embeds them with the new embedder"
                + (" and lists who must re-enrol" if with_crops < identities else "")
            )
        else:
            kept = (
                "no enrolment crops were kept (matching.keep_enrolment_crops), so everyone must"
                " re-enrol (`edge-agent gallery list`, `edge-agent gallery remove NAME` for each,"
                " then `edge-agent enrol face NAME IMAGES...`)"
            )
        super().__init__(
            f"the face gallery holds vectors of the {stored!r} embedder but matching.face_embedder"
            f" is now {configured!r}: its vectors cannot be compared. {kept[0].upper()}{kept[1:]};"
            f" or set face_embedder back to {stored!r}"
        )
        self.stored = stored
        self.configured = configured


@dataclasses.dataclass(frozen=True)
class IdentityRecord:
    number: int
    id: str
    name: str
    label: str | None = None


@dataclasses.dataclass
class Manifest:
    """The committed state of a gallery.

    ``segments``: (sequence number, rows) of each vector file of the generation,
    in row order; file ``vectors-<generation>-<sequence>.bin``.
    """

    dim: int
    storage: GalleryStorage
    generation: int = 0
    count: int = 0
    next_number: int = 0
    identities: list[IdentityRecord] = dataclasses.field(default_factory=list)
    segments: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    next_segment: int = 0
    format: int = FORMAT_VERSION
    # The embedder that made the vectors ("dlib", "lbp", "sface"); "" in galleries
    # written before it was recorded.
    embedder: str = ""

    def copy(self) -> Manifest:
        return dataclasses.replace(
            self, identities=list(self.identities), segments=list(self.segments)
        )

    def to_json(self) -> bytes:
        if self.format != FORMAT_VERSION:
            raise ValueError("only the current gallery format is ever written")
        body = {
            "format": FORMAT_VERSION,
            "dim": self.dim,
            "storage": self.storage.value,
            "generation": self.generation,
            "count": self.count,
            "next_number": self.next_number,
            "next_segment": self.next_segment,
            "segments": [list(s) for s in self.segments],
            "identities": [dataclasses.asdict(i) for i in self.identities],
            "embedder": self.embedder,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
            version = body["format"]
            if version not in (LEGACY_FORMAT, FORMAT_VERSION):
                raise DecodeError(f"unsupported gallery format {version!r}")
            manifest = cls(
                dim=int(body["dim"]),
                storage=GalleryStorage(body["storage"]),
                generation=int(body["generation"]),
                count=int(body["count"]),
                next_number=int(body["next_number"]),
                identities=[
                    IdentityRecord(
                        int(i["number"]),
                        str(i["id"]),
                        str(i["name"]),
                        None if i["label"] is None else str(i["label"]),
                    )
                    for i in body["identities"]
                ],
                format=int(version),
                embedder=str(body.get("embedder", "")),
            )
            if version == FORMAT_VERSION:
                manifest.next_segment = int(body["next_segment"])
                manifest.segments = [(int(s), int(n)) for s, n in body["segments"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"gallery manifest is corrupt: {exc}") from exc
        if manifest.dim <= 0 or manifest.count < 0 or any(
            n <= 0 or s < 0 for s, n in manifest.segments
        ):
            raise DecodeError("gallery manifest is corrupt: bad sizes")
        if manifest.format == FORMAT_VERSION and sum(n for _, n in manifest.segments) != (
            manifest.count
        ):
            raise DecodeError("gallery manifest is corrupt: segments do not add up")
        return manifest


def read_manifest(directory: pathlib.Path, sealer: Sealer) -> Manifest | None:
    """The committed manifest of the gallery in ``directory``; None if there is none.

    Raises :class:`agent.sealing.KeyDestroyed` if it was sealed under a destroyed
    key (the gallery was erased), DecodeError if it is damaged.
    """
    path = directory / MANIFEST
    raw = read_optional(path, MAX_MANIFEST_BYTES)
    if raw is None:
        return None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise DecodeError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    return Manifest.from_json(sealer.open(raw, MANIFEST_CONTEXT))
