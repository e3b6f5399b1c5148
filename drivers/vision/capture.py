"""Frame sources: OpenCV capture of a file, RTSP stream or V4L2 device, or SAMPLE.

SAMPLE synthesises frames with drawn faces (see :mod:`drivers.vision.synth`)
so ``make run`` works with no camera.  A source's ``read()`` returns the next
BGR frame or None when nothing is ready; failures become TransportError.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from agent.config import CameraSettings, CameraSource
from agent.errors import ConfigError, ConnectionLostError, DeviceIOError
from drivers.vision.synth import render_scene

Image = npt.NDArray[np.uint8]


class FrameSource(Protocol):
    def read(self) -> Image | None: ...

    def close(self) -> None: ...


class SampleSource:
    """Scenes of one or two synthetic people that change every few seconds."""

    def __init__(self, width: int, height: int, fps: float, seed: int = 0) -> None:
        self.width, self.height = width, height
        self._rng = np.random.default_rng(seed)
        self._frames_per_scene = max(1, int(fps * 4))
        self._frame = 0
        self._people: list[int] = []
        # The still scene lowered by the noise's 2 levels: a frame is one saturating add.
        self._base: Image = np.zeros((height, width, 3), np.uint8)

    def read(self) -> Image:
        if self._frame % self._frames_per_scene == 0:
            count = int(self._rng.integers(0, 3))
            self._people = [int(p) for p in self._rng.choice(8, size=count, replace=False)]
            # Like a fixed camera: the scene holds still until people come or go.
            self.show(render_scene(self._people, self._rng, self.width, self.height)[0])
        self._frame += 1
        # Sensor noise of +-2 levels: base + U{0..4}, saturating, in uint8.  No int16
        # copies (four 1.8 MiB temporaries a frame at 640x480 before): the noise and
        # the frame are all a frame allocates.
        noise = self._rng.integers(0, 5, size=self._base.shape, dtype=np.uint8)
        return np.asarray(cv2.add(self._base, noise), np.uint8)

    def show(self, scene: Image) -> None:
        """Hold ``scene`` still from the next frame on (until the next scene change)."""
        self._base = np.asarray(cv2.subtract(scene, np.full_like(scene, 2)), np.uint8)

    def close(self) -> None:
        self._frame = 0


class OpenCvSource:
    def __init__(self, settings: CameraSettings) -> None:
        if not settings.uri:
            raise ConfigError("camera.uri", f"needed for source {settings.source.value!r}")
        target: str | int = settings.uri
        if settings.source is CameraSource.V4L2 and settings.uri.isdigit():
            target = int(settings.uri)
        self._capture = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            raise ConnectionLostError(f"cannot open camera {settings.source.value} source")
        self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
        self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
        self._is_file = settings.source is CameraSource.FILE

    def read(self) -> Image | None:
        try:
            ok, frame = self._capture.read()
        except cv2.error as exc:
            raise DeviceIOError(f"camera read failed: {exc}") from exc
        if not ok:
            if self._is_file:
                return None
            raise ConnectionLostError("camera stream ended")
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self._capture.release()


def open_source(settings: CameraSettings) -> FrameSource:
    if settings.source is CameraSource.SAMPLE:
        return SampleSource(settings.width, settings.height, settings.fps)
    return OpenCvSource(settings)
