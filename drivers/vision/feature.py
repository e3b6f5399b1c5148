"""The faces and plates features.

Both declare their stores whether or not they run: enrolments made while
matching was on stay on disk and must still be exported, erased and purged on
withdrawal after it is switched off.  The pipelines (OpenCV, numpy) load only
when the daemon runs matching on an enabled camera; a store that is only
exported or erased costs nothing until then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from agent.auth.roles import Role
from agent.errors import EdgeAgentError
from agent.feature import Feature, FeatureContext, Holding
from agent.layout import StateLayout
from agent.matching.events import FACE_MATCH, PLATE_MATCH
from agent.matching.gallery_manifest import Sealer, read_manifest
from agent.purposes import Purpose
from agent.sealing import KeyDestroyed
from drivers.vision.stored_faces import StoredFaces

if TYPE_CHECKING:
    from agent.keystore import DataKeys
    from agent.matching.plates_store import PlateStore

log = logging.getLogger(__name__)


def _matching_runs(ctx: FeatureContext) -> bool:
    return ctx.daemon and ctx.config.camera.enabled and ctx.config.matching.enabled


class LiveGallery(Protocol):
    """The running pipeline's gallery (drivers.vision.pipeline.FaceService)."""

    def erase_personal_data(self) -> int: ...

    def reseal_personal_data(self) -> int: ...


class LiveFaceGallery:
    """The gallery while the pipeline runs: erasing it also forgets the tracks in memory.

    A reseal goes through the gallery in memory, so the pipeline keeps matching
    on what it holds and its view of the files stays in step.
    """

    name = "face_gallery"

    def __init__(self, files: StoredFaces, live: LiveGallery) -> None:
        self.files = files
        self.live = live

    def export_personal_data(self) -> Mapping[str, object]:
        return self.files.export_personal_data()

    def erase_personal_data(self) -> int:
        erased = self.live.erase_personal_data()
        return erased + self.files.erase_personal_data()

    def reseal_personal_data(self) -> int:
        return self.live.reseal_personal_data()


def enrolled_names(layout: StateLayout, keys: DataKeys) -> list[str]:
    """Names and labels in the (sealed) gallery manifest, read without numpy."""
    try:
        manifest = read_manifest(layout.faces_dir, Sealer(keys))
    except KeyDestroyed:
        return []  # erased: nothing left to redact
    except EdgeAgentError as exc:
        log.warning("could not read the gallery manifest for redaction: %s", exc)
        return []
    if manifest is None:
        return []
    return [text for r in manifest.identities for text in (r.name, r.label) if text]


def build_faces(ctx: FeatureContext) -> Feature:
    # Exported as who is enrolled (names, labels, sample counts), never the vector files.
    files = StoredFaces(ctx.layout, ctx.keys)

    def secrets() -> Iterable[str]:
        return enrolled_names(ctx.layout, ctx.keys)

    if not _matching_runs(ctx):
        holding = Holding(files, purpose=Purpose.FACE_RECOGNITION)
        return Feature("faces", event_schemas=(FACE_MATCH,), holdings=(holding,), secrets=secrets)
    # lazy: heavy (cv2, numpy)
    from agent.matching.face_commands import face_commands
    from drivers.vision.pipeline import build_service

    service = build_service(ctx.config, ctx.consent.is_granted, audit=ctx.audit, keys=ctx.keys)
    ctx.frames.subscribe_camera("faces", service.offer_frame)
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

    def __init__(self, layout: StateLayout, max_entries: int, keys: DataKeys) -> None:
        self.layout = layout
        self.max_entries = max_entries
        self.keys = keys

    def _open(self) -> PlateStore | None:
        if not self.layout.plates_files():
            return None
        # lazy: heavy (numpy, through the fuzzy matcher)
        from agent.matching.plates_store import PlateStore

        return PlateStore(self.layout.plates_db, keys=self.keys, max_entries=self.max_entries)

    def export_personal_data(self) -> Mapping[str, object]:
        store = self._open()
        if store is None:
            return {"plates": []}
        try:
            return store.export_personal_data()
        finally:
            store.close()

    def erase_personal_data(self) -> int:
        store = self._open()
        return 0 if store is None else store.erase_personal_data()

    def reseal_personal_data(self) -> int:
        store = self._open()
        if store is None:
            return 0
        try:
            return store.reseal_personal_data()
        finally:
            store.close()

    def texts(self) -> list[str]:
        """Plates and labels on the list: literals no log line may carry."""
        plates = self.export_personal_data().get("plates", [])
        found: list[str] = []
        for entry in plates if isinstance(plates, list) else []:
            if isinstance(entry, dict):
                found += [str(entry[k]) for k in ("plate", "label") if entry.get(k)]
        return found


def build_plates(ctx: FeatureContext) -> Feature:
    stored = StoredPlates(ctx.layout, ctx.config.matching.plate_max_entries, ctx.keys)

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
        ctx.config, is_granted=ctx.consent.is_granted, clock=ctx.clock, keys=ctx.keys,
        audit=ctx.audit,
    )
    ctx.frames.subscribe_camera("plates", service.offer_frame)
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
