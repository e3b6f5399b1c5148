"""The face gallery on disk as a personal-data holder: exported as who is enrolled, not as files.

The gallery's files are internal and sealed under the ``face_recognition``
data key (a manifest, segments of float32/int8 vectors): a person asking for
their data gets each identity's name, label, id and sample count, read through
the gallery itself, never the vector files.  Erasure still shreds every file of
the directory (:class:`FileHolder`); the key was destroyed before, so what the
file system kept of older copies is unreadable.  A key rotation reseals the
files.  Enrolment crops, kept only with ``matching.keep_enrolment_crops``, are
exported as image files under their identity.  numpy loads only when there
is a gallery to export or reseal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.layout import StateLayout
from agent.matching.gallery_manifest import Sealer, read_manifest
from agent.sealing import KeyDestroyed
from drivers.logs.files import FileHolder

if TYPE_CHECKING:
    from agent.keystore import DataKeys
    from agent.matching.gallery import Gallery

log = logging.getLogger(__name__)


class StoredFaces(FileHolder):
    def __init__(self, layout: StateLayout, keys: DataKeys) -> None:
        super().__init__("face_gallery", layout.faces_dir)
        self.layout = layout
        self.keys = keys

    def _open(self) -> Gallery | None:
        """The committed gallery as it is on disk (its own dimension and storage), or None."""
        try:
            manifest = read_manifest(self.layout.faces_dir, Sealer(self.keys))
        except KeyDestroyed:
            # A rotation elsewhere may have resealed it and retired the key meanwhile.
            try:
                manifest = read_manifest(self.layout.faces_dir, Sealer(self.keys))
            except KeyDestroyed as exc:
                log.warning("face gallery: %s; removing its leftover files", exc)
                self.erase_personal_data()
                return None
        if manifest is None:
            return None
        # lazy: heavy (numpy)
        from agent.matching.gallery import Gallery

        return Gallery.open(self.layout.faces_dir, manifest.dim, manifest.storage, keys=self.keys)

    def export_personal_data(self) -> Mapping[str, object]:
        gallery = self._open()
        return {"identities": []} if gallery is None else gallery.export_personal_data()

    def reseal_personal_data(self) -> int:
        gallery = self._open()
        return 0 if gallery is None else gallery.reseal_personal_data()
