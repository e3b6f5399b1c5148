"""NVR hub mode: one capture thread per camera, fair scheduling onto the shared frame bus.

Each ``[[camera.sources]]`` entry is a :class:`HubCapture`: a thread that
resolves the stream (the RTSP URL, or asks the camera's ONVIF service for it
with the owner's credentials), opens it with OpenCV/FFmpeg and keeps only the
newest frame in its :class:`~agent.camera.hub.CameraSlot` and its motion
detector's :class:`~agent.framebus.LatestFrame`.  :class:`HubService` takes the
frames round-robin on the main loop (``hub_frames_per_tick`` a pass) and
publishes them on the frame bus, with the camera's name, for faces, plates and QR
(``face.match`` and ``plate.match`` name the camera), so a slow pipeline
drops frames instead of falling behind and no camera starves another.

The owner's camera users and passwords are in
:class:`drivers.camera.credentials.CameraCredentialStore`; a URL with a password
in it never reaches a log line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from agent.camera.hub import (
    GET_CAPABILITIES,
    GET_PROFILES,
    MAX_ONVIF_REPLY_BYTES,
    CameraSlot,
    FairScheduler,
    first_profile,
    get_stream_uri,
    media_xaddr,
    onvif_request,
    stream_uri,
)
from agent.config import HubCamera
from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import (
    ConnectionLostError,
    DecodeError,
    DeviceIOError,
    EdgeAgentError,
    TransportError,
)
from agent.events import Event
from agent.framebus import FrameBus
from drivers.camera.credentials import CameraCredentialStore
from drivers.vision.capture import Image

log = logging.getLogger(__name__)

CONTEXT = b"edge-agent camera credentials v1"
MAX_FILE_BYTES = 64 * 1024
ONVIF_TIMEOUT = 5.0
RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 60.0
CREDENTIALS_POLL_SECONDS = 0.5
FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPEN_LOCK = threading.Lock()


# --- the ONVIF client ----------------------------------------------------------------


def _post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the caller
        url,
        data=body,
        headers={"Content-Type": "application/soap+xml; charset=utf-8"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=ONVIF_TIMEOUT) as reply:  # noqa: S310
            return bytes(reply.read(MAX_ONVIF_REPLY_BYTES + 1))
    except urllib.error.HTTPError as exc:
        # A SOAP fault comes with a 400/500 status: its body says why.
        return bytes(exc.read(MAX_ONVIF_REPLY_BYTES + 1))
    except (OSError, ValueError) as exc:
        raise ConnectionLostError(f"ONVIF service unreachable: {exc}") from None


def _on_host(url: str, host: str | None, what: str) -> None:
    if host is not None and (urllib.parse.urlsplit(url).hostname or "").lower() != host.lower():
        raise DecodeError(f"the camera's {what} is on another host")


def onvif_stream_uri(
    device_url: str,
    credentials: OnvifCredentials | None,
    profile: str = "",
    *,
    same_host: str | None = None,
) -> str:
    """Ask a camera's ONVIF device service for its RTSP stream URI.

    ``same_host``: the media service and the stream must be on that host (an
    adopted camera: its answers cannot send the hub, and the owner's user, elsewhere).
    """
    if urllib.parse.urlsplit(device_url).scheme not in ("http", "https"):
        raise DecodeError("an ONVIF address must be http:// or https://")

    def call(url: str, body: str) -> bytes:
        return _post(url, onvif_request(body, credentials, time.time(), os.urandom(16)))

    media = media_xaddr(call(device_url, GET_CAPABILITIES))
    if urllib.parse.urlsplit(media).scheme not in ("http", "https"):
        raise DecodeError("the camera's media address is not http:// or https://")
    _on_host(media, same_host, "media address")
    token = first_profile(call(media, GET_PROFILES), profile)
    uri = stream_uri(call(media, get_stream_uri(token)))
    _on_host(uri, same_host, "stream URI")
    return uri


def with_credentials(url: str, credentials: OnvifCredentials | None) -> str:
    """``url`` with the camera's user and password in its authority (RTSP basic/digest)."""
    if credentials is None:
        return url
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = urllib.parse.quote(credentials.username, safe="")
    password = urllib.parse.quote(credentials.password, safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


# --- capture -----------------------------------------------------------------------------


class HubCapture:
    """One camera's capture thread: resolve, open, read, offer; reconnect on loss."""

    def __init__(
        self,
        camera: HubCamera,
        credentials: Callable[[str], OnvifCredentials | None],
        consumers: Sequence[Callable[[Image], object]],
        fps: float,
        *,
        same_host: str | None = None,
    ) -> None:
        self.camera = camera
        self.same_host = same_host
        self.credentials = credentials
        self.consumers = consumers
        self.interval = 1.0 / fps
        self.frames = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported = ""

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"camera-{self.camera.name}", daemon=True
        )
        self._thread.start()

    @property
    def status(self) -> str:
        """For ``camera.list``: never the URL (it may carry a password)."""
        if not self.alive:
            return "stopped"
        if self._reported:
            return f"retrying: {self._reported}"
        return "streaming" if self.frames else "connecting"

    def signal_stop(self) -> None:
        """Ask the thread to end, without waiting (the main loop must not block on it)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _report(self, problem: str) -> None:
        self.errors += 1
        # Once per distinct problem; the message never holds the URL (it may carry a password).
        if problem != self._reported:
            self._reported = problem
            log.warning("camera %s: %s", self.camera.name, problem)

    def _open(self, credentials: OnvifCredentials | None) -> cv2.VideoCapture:
        if self.camera.onvif:
            url = onvif_stream_uri(
                self.camera.onvif, credentials, self.camera.profile, same_host=self.same_host
            )
        else:
            url = self.camera.url
        with _OPEN_LOCK:
            # OpenCV reads its FFmpeg options from the environment at each open.
            os.environ[FFMPEG_OPTIONS] = f"rtsp_transport;{self.camera.transport}"
            capture = cv2.VideoCapture(with_credentials(url, credentials), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise ConnectionLostError("cannot open the stream")
        return capture

    def _run(self) -> None:
        delay = RETRY_SECONDS
        while not self._stop.is_set():
            used = self._credentials()
            try:
                capture = self._open(used)
            except (TransportError, EdgeAgentError) as exc:
                self._report(str(exc))
                # Longer and longer (a camera locks out a hub that keeps failing its
                # login), but at once when the owner sets new credentials.
                self._retry_after(delay, used)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            delay = RETRY_SECONDS
            try:
                self._read(capture)
            finally:
                capture.release()
            self._stop.wait(RETRY_SECONDS)

    def _credentials(self) -> OnvifCredentials | None:
        try:
            return self.credentials(self.camera.name)
        except EdgeAgentError as exc:
            self._report(f"credentials unreadable: {exc}")
            return None

    def _retry_after(self, delay: float, used: OnvifCredentials | None) -> None:
        deadline = time.monotonic() + delay
        while not self._stop.wait(min(CREDENTIALS_POLL_SECONDS, delay)):
            if time.monotonic() >= deadline or self._credentials() != used:
                return

    def _read(self, capture: cv2.VideoCapture) -> None:
        if self._reported:
            log.info("camera %s: streaming", self.camera.name)
            self._reported = ""
        next_due = time.monotonic()
        while not self._stop.is_set():
            try:
                ok, frame = capture.read()
            except cv2.error as exc:
                self._report(f"read failed: {exc}")
                return
            if not ok:
                self._report("stream ended")
                return
            now = time.monotonic()
            if now < next_due:
                continue  # read on (the stream's own rate), keep only ``fps`` a second
            next_due = max(next_due + self.interval, now - self.interval)
            image = np.asarray(frame, dtype=np.uint8)
            self.frames += 1
            for consume in self.consumers:
                consume(image)


class HubService:
    """``agent.ports.Service``: the captures, and the fair hand-over to the frame bus."""

    name = "camera"

    def __init__(
        self,
        captures: Sequence[HubCapture],
        scheduler: FairScheduler[Image],
        frames: FrameBus[Image],
        frames_per_tick: int,
    ) -> None:
        self.captures = list(captures)
        self.scheduler = scheduler
        self.bus = frames
        self.frames_per_tick = frames_per_tick
        self.published: dict[str, int] = {c.camera.name: 0 for c in captures}
        # Removed at run time and told to stop; joined when the hub stops.
        self._retired: list[HubCapture] = []
        self._started = False

    def start(self) -> None:
        self._started = True
        for capture in self.captures:
            capture.start()

    def add(self, capture: HubCapture, slot: CameraSlot[Image]) -> None:
        """A camera joins at run time (adopted): its slot into the round-robin, its thread on."""
        self.scheduler.add(slot)
        self.captures.append(capture)
        self.published.setdefault(capture.camera.name, 0)
        if self._started:
            capture.start()

    def remove(self, name: str) -> HubCapture | None:
        """A camera leaves at run time: out of the round-robin, its thread told to end."""
        capture = next((c for c in self.captures if c.camera.name == name), None)
        if capture is None:
            return None
        self.captures.remove(capture)
        self.scheduler.remove(name)
        capture.signal_stop()
        self._retired = [c for c in self._retired if c.alive] + [capture]
        return capture

    def retiring(self, name: str) -> bool:
        """A removed capture of ``name`` has not ended yet (start no second one meanwhile)."""
        return any(c.camera.name == name and c.alive for c in self._retired)

    def tick(self, now: float) -> Sequence[Event]:
        for capture in self.captures:
            if not capture.alive:
                raise DeviceIOError(f"camera {capture.camera.name}: capture thread died")
        for name, frame in self.scheduler.take(self.frames_per_tick):
            self.published[name] += 1
            self.bus.publish(frame, name)
        return ()

    def stop(self) -> None:
        for capture in [*self.captures, *self._retired]:
            capture.signal_stop()
        for capture in [*self.captures, *self._retired]:
            capture.stop()


def build_hub(
    cameras: Sequence[HubCamera],
    store: CameraCredentialStore,
    frames: FrameBus[Image],
    *,
    fps: float,
    frames_per_tick: int,
    motion_offer: Callable[[str], Callable[[Image], object]],
) -> HubService:
    """The hub: per camera a slot (for the pipeline) and ``motion_offer(name)`` fed."""

    def credentials(name: str) -> OnvifCredentials | None:
        return store.get(name)

    slots = [CameraSlot[Image](camera.name) for camera in cameras]
    captures = [
        HubCapture(camera, credentials, (slot.offer, motion_offer(camera.name)), fps)
        for camera, slot in zip(cameras, slots, strict=True)
    ]
    return HubService(captures, FairScheduler(slots), frames, frames_per_tick)
