"""The faces and plates features.

Both declare their stores whether or not they run: enrolments made while
matching was on stay on disk and must still be exported, erased and purged on
withdrawal after it is switched off.  The pipelines (OpenCV, numpy) load only
when the daemon runs matching on an enabled camera; a store that is only
exported or erased costs nothing until then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping

from agent.auth.roles import Role
from agent.errors import EdgeAgentError
from agent.feature import Feature, FeatureContext, Holding
from agent.layout import StateLayout
from agent.matching.events import FACE_MATCH, PLATE_MATCH
from agent.ports import PersonalDataHolder
from agent.purposes import Purpose
from drivers.logs.files import FileHolder
from drivers.vision.stored_faces import StoredFaces

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def _matching_runs(ctx: FeatureContext) -> bool:
    return ctx.daemon and ctx.config.camera.enabled and ctx.config.matching.enabled


class LiveFaceGallery:
    """The gallery while the pipeline runs: erasing it also forgets the tracks in memory."""

    name = "face_gallery"

    def __init__(self, files: FileHolder, erase_live: PersonalDataHolder) -> None:
        self.files = files
        self.erase_live = erase_live

    def export_personal_data(self) -> Mapping[str, object]:
        return self.files.export_personal_data()

    def erase_personal_data(self) -> int:
        erased = self.erase_live.erase_personal_data()
        return erased + self.files.erase_personal_data()


def enrolled_names(layout: StateLayout) -> list[str]:
    """Names and labels in the gallery manifest, read as plain JSON (no numpy)."""
    path = layout.faces_manifest
    try:
        if not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return []
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        log.warning("could not read the gallery manifest for redaction")
        return []
    identities = document.get("identities", []) if isinstance(document, dict) else []
    found: list[str] = []
    for identity in identities if isinstance(identities, list) else []:
        if isinstance(identity, dict):
            found += [str(identity[k]) for k in ("name", "label") if identity.get(k)]
    return found


def build_faces(ctx: FeatureContext) -> Feature:
    # Exported as who is enrolled (names, labels, sample counts), never the vector files.
    files = StoredFaces(ctx.layout)

    def secrets() -> Iterable[str]:
        return enrolled_names(ctx.layout)

    if not _matching_runs(ctx):
        holding = Holding(files, purpose=Purpose.FACE_RECOGNITION)
        return Feature("faces", event_schemas=(FACE_MATCH,), holdings=(holding,), secrets=secrets)
    # lazy: heavy (cv2, numpy)
    from agent.matching.face_commands import face_commands
    from drivers.vision.pipeline import build_service

    service = build_service(ctx.config, ctx.consent.is_granted, audit=ctx.audit)
    ctx.frames.subscribe("faces", service.offer_frame)
    live = LiveFaceGallery(files, service)
    return Feature(
        "faces",
        services=(service,),
        commands=face_commands(lambda: service.recogniser.gallery, ctx.clock, ctx.audit),
        event_schemas=(FACE_MATCH,),
        holdings=(Holding(live, purpose=Purpose.FACE_RECOGNITION),),
        secrets=secrets,
    )


class StoredPlates:
    """The plate watch-list as a holder that loads its code only when there is a file.

    Registering it costs nothing: every composition registers it, but exports
    and erasures are rare.
    """

    name = "plates"

    def __init__(self, layout: StateLayout, max_entries: int) -> None:
        self.layout = layout
        self.max_entries = max_entries

    def _open(self) -> PersonalDataHolder | None:
        if not self.layout.plates_files():
            return None
        # lazy: heavy (numpy, through the fuzzy matcher)
        from agent.matching.plates_store import PlateStore

        return PlateStore(self.layout.plates_db, max_entries=self.max_entries)

    def export_personal_data(self) -> Mapping[str, object]:
        store = self._open()
        return {"plates": []} if store is None else store.export_personal_data()

    def erase_personal_data(self) -> int:
        store = self._open()
        return 0 if store is None else store.erase_personal_data()

    def texts(self) -> list[str]:
        """Plates and labels on the list: literals no log line may carry."""
        plates = self.export_personal_data().get("plates", [])
        found: list[str] = []
        for entry in plates if isinstance(plates, list) else []:
            if isinstance(entry, dict):
                found += [str(entry[k]) for k in ("plate", "label") if entry.get(k)]
        return found


def build_plates(ctx: FeatureContext) -> Feature:
    stored = StoredPlates(ctx.layout, ctx.config.matching.plate_max_entries)

    def secrets() -> Iterable[str]:
        try:
            return stored.texts()
        except EdgeAgentError:
            log.warning("could not list plates for redaction")
            return []

    if not _matching_runs(ctx):
        holding = Holding(stored, purpose=Purpose.PLATE_RECOGNITION)
        return Feature(
            "plates", event_schemas=(PLATE_MATCH,), holdings=(holding,), secrets=secrets
        )
    # lazy: heavy (cv2, numpy)
    from drivers.vision.plate_reader import build_service

    service = build_service(
        ctx.config, is_granted=ctx.consent.is_granted, clock=ctx.clock, audit=ctx.audit
    )
    ctx.frames.subscribe("plates", service.latest.offer)
    return Feature(
        "plates",
        services=(service,),
        commands=service.commands(),
        # A recogniser (an ANPR camera or service) may submit readings; the
        # owner manages the lists.
        command_roles={"plate.observe": frozenset({Role.RECOGNISER})},
        event_schemas=(PLATE_MATCH,),
        holdings=(Holding(service, purpose=Purpose.PLATE_RECOGNITION),),
        secrets=secrets,
    )
