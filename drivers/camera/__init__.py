"""The camera feature: capture onto the shared frame bus, motion events, stored snapshots.

With ``[[camera.sources]]`` the device is an NVR hub (:mod:`drivers.camera.hub`):
one capture per camera, motion events and a state topic per camera, frames
handed to the shared pipeline in turn.  The owner gives each camera's user and
password with ``camera.set_credentials``; they are kept sealed, never logged,
and erased with the binding.

Importing this package costs nothing; OpenCV loads only when the daemon runs
an enabled camera (``tests/core/test_lazy_features.py`` keeps it that way).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.camera.events import CAMERA_NAME, MOTION
from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import DecodeError, EdgeAgentError
from agent.feature import Feature, FeatureContext, Holding
from agent.ports import CommandArgs, CommandResult, Service
from agent.purposes import Purpose
from agent.rights.registry import ErasureScope, RetentionKind
from drivers.camera.credentials import CameraCredentialsHolder, CameraCredentialStore
from drivers.camera.snapshots import SealedSnapshots
from drivers.discovery.onvif_store import check_username

SET_CREDENTIALS = "camera.set_credentials"
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

    def set_credentials(args: CommandArgs) -> CommandResult:
        camera = args.get("camera")
        if camera not in names:
            raise DecodeError(f"no camera {str(camera)[:64]!r} in [[camera.sources]]")
        assert isinstance(camera, str)
        password = args.get("password")
        if password is None and args.get("username") is None:
            store.save(camera, None)
            ctx.audit.record(SET_CREDENTIALS, {"camera": camera, "cleared": True}, ctx.clock.now())
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
        return {"camera": camera, "username": username}

    # lazy: heavy (cv2, numpy)
    from agent.camera.motion import MotionDetector, MotionSettings, MotionStateTopic
    from drivers.camera.services import CameraService, MotionService

    def motion_for(name: str) -> MotionService:
        detector = MotionDetector(
            name, MotionSettings(update_seconds=settings.motion_update_seconds)
        )
        state = MotionStateTopic(name, ctx.consent.is_granted)
        motion = MotionService(detector, state, settings.fps)
        if settings.sources:
            motion.name = f"motion.{name}"
        return motion

    capture: Service
    if settings.sources:
        from drivers.camera.hub import build_hub

        motions = {source.name: motion_for(source.name) for source in settings.sources}
        capture = build_hub(
            settings.sources,
            store,
            ctx.frames,
            fps=settings.fps,
            frames_per_tick=settings.hub_frames_per_tick,
            motion_offer=lambda name: motions[name].latest.offer,
        )
        motion_services: list[MotionService] = list(motions.values())
    else:
        from drivers.vision.capture import open_source

        capture = CameraService(open_source(settings), settings.fps, ctx.frames, ctx.clock)
        motion = motion_for(CAMERA_NAME)
        ctx.frames.subscribe("motion", motion.latest.offer)
        motion_services = [motion]
    return Feature(
        "camera",
        services=(capture, *motion_services),
        commands={SET_CREDENTIALS: set_credentials} if settings.sources else {},
        event_schemas=(MOTION,),
        holdings=holdings,
        retained=tuple(m.state for m in motion_services),
        secrets=secrets,
    )
