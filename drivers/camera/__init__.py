"""The camera feature: capture onto the shared frame bus, motion events, stored snapshots.

Importing this package costs nothing; OpenCV loads only when the daemon runs
an enabled camera (``tests/core/test_lazy_features.py`` keeps it that way).
"""

from __future__ import annotations

from agent.camera.events import CAMERA_NAME, MOTION
from agent.feature import Feature, FeatureContext, Holding
from agent.purposes import Purpose
from agent.rights.registry import RetentionKind
from drivers.camera.snapshots import SealedSnapshots

__all__ = ["CAMERA_NAME", "build_camera"]


def build_camera(ctx: FeatureContext) -> Feature:
    settings = ctx.config.camera
    # Sealed under the event_snapshots key: withdrawal destroys it, then shreds the files.
    snapshots = SealedSnapshots(ctx.layout.snapshots_dir, ctx.keys)
    holdings = (
        Holding(
            snapshots,
            purpose=Purpose.EVENT_SNAPSHOTS,
            retention=(RetentionKind.SNAPSHOTS, snapshots),
        ),
    )
    if not (ctx.daemon and settings.enabled):
        return Feature("camera", event_schemas=(MOTION,), holdings=holdings)
    # lazy: heavy (cv2, numpy)
    from agent.camera.motion import MotionDetector, MotionSettings, MotionStateTopic
    from drivers.camera.services import CameraService, MotionService
    from drivers.vision.capture import open_source

    camera = CameraService(open_source(settings), settings.fps, ctx.frames, ctx.clock)
    detector = MotionDetector(
        CAMERA_NAME, MotionSettings(update_seconds=settings.motion_update_seconds)
    )
    state = MotionStateTopic(CAMERA_NAME, ctx.consent.is_granted)
    motion = MotionService(detector, state, settings.fps)
    ctx.frames.subscribe("motion", motion.latest.offer)
    return Feature(
        "camera",
        services=(camera, motion),
        event_schemas=(MOTION,),
        holdings=holdings,
        retained=(state,),
    )
