"""The camera feature: capture onto the shared frame bus, motion events, stored snapshots.

With ``[[camera.sources]]`` the device is an NVR hub (:mod:`drivers.camera.hub`):
one capture per camera, motion events and a state topic per camera, frames
handed to the shared pipeline in turn.  The owner gives each camera's user and
password with ``camera.set_credentials``; they are kept sealed, never logged,
and erased with the binding.

Importing this package costs nothing; OpenCV loads only when the daemon runs
an enabled camera (``tests/core/test_lazy_features.py`` keeps it that way).

With ``[camera] adopt_discovered`` the hub also adopts the cameras that answer
WS-Discovery (:mod:`drivers.camera.adopt`): ``camera.list`` shows them pending
until the owner sets their credentials, then they are captured like the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from typing import TYPE_CHECKING

from agent.camera.events import CAMERA_NAME, MOTION
from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import DecodeError, EdgeAgentError
from agent.feature import Feature, FeatureContext, Holding, RetainedMessages
from agent.ports import CommandArgs, CommandHandler, CommandResult, Service
from agent.purposes import Purpose
from agent.rights.registry import ErasureScope, RetentionKind
from drivers.camera.credentials import CameraCredentialsHolder, CameraCredentialStore
from drivers.camera.snapshots import SealedSnapshots
from drivers.discovery.onvif_store import check_username
from drivers.sealedparams import sealed_arguments, sealing_key

if TYPE_CHECKING:
    from drivers.camera.adopt import AdoptionService
    from drivers.camera.hub import HubService
    from drivers.camera.services import MotionService

SET_CREDENTIALS = "camera.set_credentials"
LIST = "camera.list"
SEALED_FIELDS = frozenset({"password"})
MAX_CAMERA_PASSWORD = 128

__all__ = ["CAMERA_NAME", "build_camera"]


def build_camera(ctx: FeatureContext) -> Feature:
    settings = ctx.config.camera
    # Sealed under the event_snapshots key: withdrawal destroys it, then shreds the files.
    snapshots = SealedSnapshots(ctx.layout.snapshots_dir, ctx.keys)
    store = CameraCredentialStore(ctx.layout, ctx.keys)
    holdings = (
        Holding(
            snapshots,
            purpose=Purpose.EVENT_SNAPSHOTS,
            retention=(RetentionKind.SNAPSHOTS, snapshots),
        ),
        # A cancelled account must not keep the cameras' passwords.
        Holding(CameraCredentialsHolder(store), scope=ErasureScope.BINDING),
    )

    def secrets() -> Iterable[str]:
        try:
            return [c.password for c in store.load().values()]
        except EdgeAgentError:
            return []

    if not (ctx.daemon and settings.enabled):
        return Feature("camera", event_schemas=(MOTION,), holdings=holdings, secrets=secrets)
    names = {source.name for source in settings.sources}
    hub_mode = bool(settings.sources) or settings.adopt_discovered
    adopted: list[AdoptionService] = []  # filled below in adoption mode

    def known(camera: object) -> bool:
        return isinstance(camera, str) and (
            camera in names or any(a.known(camera) for a in adopted)
        )

    sealing = sealing_key(ctx)

    def set_credentials(given: CommandArgs) -> CommandResult:
        # The password travels only sealed to the device (agent.sealedparams).
        args = sealed_arguments(ctx, sealing, SET_CREDENTIALS, given, SEALED_FIELDS)
        camera = args.get("camera")
        if not known(camera):
            raise DecodeError(f"no camera {str(camera)[:64]!r} in [[camera.sources]] or adopted")
        assert isinstance(camera, str)
        password = args.get("password")
        if password is None and args.get("username") is None:
            store.save(camera, None)
            ctx.audit.record(SET_CREDENTIALS, {"camera": camera, "cleared": True}, ctx.clock.now())
            for adoption in adopted:
                adoption.credentials_changed()
            return {"camera": camera, "cleared": True}
        if (
            not isinstance(password, str)
            or not 0 < len(password) <= MAX_CAMERA_PASSWORD
            or not password.isprintable()
        ):
            raise DecodeError(f"password must be 1 to {MAX_CAMERA_PASSWORD} printable characters")
        username = check_username(args.get("username"))
        ctx.redactor.remember(password)
        store.save(camera, OnvifCredentials(username, password))
        ctx.audit.record(SET_CREDENTIALS, {"camera": camera}, ctx.clock.now())
        for adoption in adopted:
            adoption.credentials_changed()
        return {"camera": camera, "username": username}

    motion_for = _motion_factory(ctx, hub_mode)
    services: list[Service]
    retained: list[RetainedMessages]
    commands: dict[str, CommandHandler] = {}
    if hub_mode:
        services, retained, listing = _hub_mode(ctx, store, motion_for, adopted)
        commands = {SET_CREDENTIALS: set_credentials, LIST: listing}
    else:
        # lazy: heavy (cv2, numpy)
        from drivers.camera.services import CameraService
        from drivers.vision.capture import open_source

        motion = motion_for(CAMERA_NAME)
        ctx.frames.subscribe("motion", motion.latest.offer)
        services = [CameraService(open_source(settings), settings.fps, ctx.frames, ctx.clock)]
        services.append(motion)
        retained = [motion.state]
    return Feature(
        "camera",
        services=tuple(services),
        commands=commands,
        event_schemas=(MOTION,),
        holdings=holdings,
        retained=tuple(retained),
        secrets=secrets,
    )


def _motion_factory(ctx: FeatureContext, hub_mode: bool) -> Callable[[str], MotionService]:
    settings = ctx.config.camera
    # lazy: heavy (cv2, numpy)
    from agent.camera.motion import MotionDetector, MotionSettings, MotionStateTopic
    from drivers.camera.services import MotionService

    def motion_for(name: str) -> MotionService:
        detector = MotionDetector(
            name, MotionSettings(update_seconds=settings.motion_update_seconds)
        )
        state = MotionStateTopic(name, ctx.consent.is_granted)
        motion = MotionService(detector, state, settings.fps)
        if hub_mode:
            motion.name = f"motion.{name}"
        return motion

    return motion_for


def _hub_mode(
    ctx: FeatureContext,
    store: CameraCredentialStore,
    motion_for: Callable[[str], MotionService],
    adopted: list[AdoptionService],
) -> tuple[list[Service], list[RetainedMessages], CommandHandler]:
    """NVR hub: the configured cameras, the adopted ones, ``camera.list``."""
    settings = ctx.config.camera
    from drivers.camera.hub import build_hub

    motions = {source.name: motion_for(source.name) for source in settings.sources}
    hub = build_hub(
        settings.sources,
        store,
        ctx.frames,
        fps=settings.fps,
        frames_per_tick=settings.hub_frames_per_tick,
        motion_offer=lambda name: motions[name].latest.offer,
    )
    services: list[Service] = [hub, *motions.values()]
    retained: list[RetainedMessages] = [m.state for m in motions.values()]
    if settings.adopt_discovered:
        from drivers.camera.adopt import build_adoption

        adoption = build_adoption(ctx, hub, store, motion_for)
        adopted.append(adoption)
        services.append(adoption)
        retained.append(adoption.states)
    names = set(motions)
    return services, retained, _list_command(store, hub, names, adopted[0] if adopted else None)


def _list_command(
    store: CameraCredentialStore,
    hub: HubService,
    names: Set[str],
    adoption: AdoptionService | None,
) -> CommandHandler:
    """``camera.list``: every camera, its state and whether it has credentials (never which)."""

    def list_cameras(args: CommandArgs) -> CommandResult:
        try:
            credentialed = set(store.load())
        except EdgeAgentError:
            credentialed = set()
        cameras: list[dict[str, object]] = [
            {
                "name": c.camera.name,
                "source": "configured",
                "status": c.status,
                "credentials": c.camera.name in credentialed,
                "frames": c.frames,
            }
            for c in hub.captures
            if c.camera.name in names
        ]
        if adoption is None:
            return {"cameras": cameras}
        return {"cameras": cameras + adoption.cameras(), "adoption": adoption.summary()}

    return list_cameras
