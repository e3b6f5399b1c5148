"""The face gallery on disk as a personal-data holder: exported as who is enrolled, not as files.

The gallery's files are internal (a JSON manifest, memory-mapped float32/int8
vectors): a person asking for their data gets each identity's name, label, id
and sample count, read through the gallery itself, never the vector files.
Erasure still shreds every file of the directory (:class:`FileHolder`).
numpy loads only when there is a gallery to export.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.atomicfile import read_optional
from agent.errors import DecodeError
from agent.layout import StateLayout
from drivers.logs.files import FileHolder

MAX_MANIFEST_BYTES = 256 * 1024 * 1024


class StoredFaces(FileHolder):
    def __init__(self, layout: StateLayout) -> None:
        super().__init__("face_gallery", layout.faces_dir)
        self.layout = layout

    def export_personal_data(self) -> Mapping[str, object]:
        raw = read_optional(self.layout.faces_manifest, MAX_MANIFEST_BYTES)
        if raw is None:
            return {"identities": []}
        if len(raw) > MAX_MANIFEST_BYTES:
            raise DecodeError(f"{self.layout.faces_manifest} is too large to export")
        # lazy: heavy (numpy)
        from agent.matching.gallery import Gallery
        from agent.matching.store import Manifest

        manifest = Manifest.from_json(raw)
        gallery = Gallery.open(self.layout.faces_dir, manifest.dim, manifest.storage)
        return gallery.export_personal_data()
