"""NVR hub adoption: cameras that answer WS-Discovery become sources (``adopt_discovered``).

A :class:`~drivers.discovery.adoptsearch.DiscoveryWorker` thread searches the LAN every
``adopt_probe_seconds`` (the client of ``edge-agent discover``) and listens on the
WS-Discovery group for Hello (brings the next search forward) and Bye (the
camera is gone).  It only hands over what it heard: the main loop's
:class:`AdoptionService` applies it to the :class:`~agent.camera.adopt.AdoptionRegistry`
(names, caps, presence), persists the registry where the state layout says, and
starts a :class:`~drivers.camera.hub.HubCapture` for each present camera the
owner gave credentials, through the existing ONVIF client (GetCapabilities,
GetProfiles, GetStreamUri in the capture's own thread, with timeouts and a
doubling retry).  Until then ``camera.list`` shows it as pending credentials.

Nothing here blocks the main loop: the search, its socket waits and every
ONVIF call run in threads, a stopped capture is only told to end, and a
hostile LAN is bounded (replies parsed per search, group messages parsed per
second, reports queued, cameras adopted).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from agent.atomicfile import read_optional, write_atomic
from agent.camera.adopt import AdoptionRegistry
from agent.camera.hub import CameraSlot
from agent.config import HubCamera
from agent.discovery.responder import endpoint_for_serial
from agent.errors import DecodeError, DeviceIOError, EdgeAgentError
from agent.events import Event
from agent.feature import FeatureContext
from agent.layout import StateLayout
from drivers.camera.credentials import CameraCredentialStore
from drivers.camera.hub import HubCapture, HubService
from drivers.camera.services import MotionService
from drivers.discovery.adoptsearch import DiscoveryWorker, Searched
from drivers.vision.capture import Image

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 256 * 1024
CREDENTIALS_REFRESH_SECONDS = 5.0
MAX_TOMBSTONES = 64


class AdoptionStore:
    """The registry as JSON at ``layout.adopted_cameras`` (names and addresses, no secret)."""

    def __init__(self, layout: StateLayout) -> None:
        self.path = layout.adopted_cameras

    def load(self) -> object:
        raw = read_optional(self.path, MAX_RECORD_BYTES)
        if raw is None:
            return None
        if len(raw) > MAX_RECORD_BYTES:
            raise DecodeError(f"{self.path} is larger than {MAX_RECORD_BYTES} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise DecodeError(f"{self.path} is not JSON") from None

    def save(self, record: Mapping[str, object]) -> None:
        write_atomic(self.path, json.dumps(record, sort_keys=True).encode(), 0o600)


class AdoptedStates:
    """The adopted cameras' retained ``camera/<name>/motion`` topics, as one source."""

    def __init__(self, motions: Mapping[str, MotionService]) -> None:
        self._motions = motions
        self._base = 0
        # Changes whenever a payload does (only ever grows): the runtime republishes then.
        self.version = 0
        self._tombstones: collections.OrderedDict[str, None] = collections.OrderedDict()

    def refresh(self) -> None:
        self.version = self._base + sum(m.state.version for m in self._motions.values())

    def added(self) -> None:
        self._base += 1

    def removed(self, motion: MotionService) -> None:
        self._base += motion.state.version + 1
        self._tombstones[motion.state.topic] = None
        while len(self._tombstones) > MAX_TOMBSTONES:
            self._tombstones.popitem(last=False)

    def retained_messages(self) -> Mapping[str, bytes]:
        messages = {topic: b"" for topic in self._tombstones}
        for motion in self._motions.values():
            messages.update(motion.state.retained_messages())
        return messages


class AdoptionService:
    """``agent.ports.Service``: applies the worker's reports, starts and stops captures."""

    name = "camera.adopt"

    def __init__(
        self,
        registry: AdoptionRegistry,
        store: AdoptionStore,
        worker: DiscoveryWorker,
        hub: HubService,
        *,
        credentials: CameraCredentialStore,
        motion_for: Callable[[str], MotionService],
        fps: float,
        transport: str,
    ) -> None:
        self.registry = registry
        self.store = store
        self.worker = worker
        self.hub = hub
        self.credentials = credentials
        self.motion_for = motion_for
        self.fps = fps
        self.transport = transport
        self.motions: dict[str, MotionService] = {}
        self.states = AdoptedStates(self.motions)
        self._credentialed: frozenset[str] = frozenset()
        self._credentials_due = 0.0
        # name -> the XAddr its running capture was started with
        self._capturing: dict[str, str] = {}

    def start(self) -> None:
        try:
            record = self.store.load()
            if record is not None:
                self.registry.restore(record)
        except EdgeAgentError as exc:
            log.warning("camera adoption: %s; starting with no adopted camera", exc)
        self.registry.changed = False
        self._sync_motions()
        self.worker.start()

    def known(self, name: str) -> bool:
        return self.registry.by_name(name) is not None

    def credentials_changed(self) -> None:
        self._credentials_due = 0.0

    def tick(self, now: float) -> Sequence[Event]:
        if not self.worker.alive:
            raise DeviceIOError("camera adoption: search thread died")
        mono = time.monotonic()
        if mono >= self._credentials_due:
            self._credentials_due = mono + CREDENTIALS_REFRESH_SECONDS
            self._credentialed = self._load_credentialed()
        for report in self.worker.take():
            if isinstance(report, Searched):
                self.registry.probed(report.cameras, now, self._credentialed)
            else:
                self.registry.bye(report.endpoint)
        if self.registry.changed:
            self.registry.changed = False
            try:
                self.store.save(self.registry.record())
            except OSError as exc:
                log.warning("camera adoption: cannot save %s: %s", self.store.path, exc)
            self._sync_motions()
        self._reconcile()
        events: list[Event] = []
        for motion in self.motions.values():
            events.extend(motion.tick(now))
        self.states.refresh()
        return events

    def stop(self) -> None:
        self.worker.stop()

    def _load_credentialed(self) -> frozenset[str]:
        try:
            return frozenset(self.credentials.load())
        except EdgeAgentError:
            return frozenset()

    def _sync_motions(self) -> None:
        names = self.registry.names()
        for name in sorted(names - set(self.motions)):
            self.motions[name] = self.motion_for(name)
            self.states.added()
        for name in sorted(set(self.motions) - names):
            self.states.removed(self.motions.pop(name))

    def _reconcile(self) -> None:
        wanted = self.registry.wanted(self._credentialed)
        for name, xaddr in list(self._capturing.items()):
            camera = wanted.get(name)
            if camera is None or camera.xaddr != xaddr:
                self.hub.remove(name)
                del self._capturing[name]
                log.info("camera %s: capture stopped (%s)", name, "moved" if camera else "gone")
        for name, camera in wanted.items():
            if name in self._capturing or self.hub.retiring(name):
                continue
            motion = self.motions.get(name)
            if motion is None:
                continue
            slot = CameraSlot[Image](name)
            capture = HubCapture(
                HubCamera(name=name, onvif=camera.xaddr, transport=self.transport),
                self.credentials.get,
                (slot.offer, motion.latest.offer),
                self.fps,
                same_host=camera.address,
            )
            self.hub.add(capture, slot)
            self._capturing[name] = camera.xaddr
            log.info("camera %s: adopted camera captured", name)

    def cameras(self) -> list[dict[str, object]]:
        """The adopted cameras for ``camera.list`` (no URL with a password, no password)."""
        captures = {c.camera.name: c for c in self.hub.captures}
        listed: list[dict[str, object]] = []
        for camera in sorted(self.registry.cameras.values(), key=lambda c: c.name):
            capture = captures.get(camera.name)
            if not camera.present:
                status = "vanished"
            elif camera.name not in self._credentialed:
                status = "pending credentials"
            else:
                status = capture.status if capture is not None else "starting"
            listed.append(
                {
                    "name": camera.name,
                    "source": "discovered",
                    "status": status,
                    "present": camera.present,
                    "credentials": camera.name in self._credentialed,
                    "endpoint": camera.endpoint,
                    "address": camera.address,
                    "onvif": camera.xaddr,
                    "model": camera.model,
                    "frames": capture.frames if capture is not None else 0,
                }
            )
        return listed

    def summary(self) -> dict[str, object]:
        return {
            **dataclasses.asdict(self.registry.stats),
            "searches": self.worker.searches,
            "search_failures": self.worker.failures,
            "shed": self.worker.shed,
        }


def _hosts(cameras: Sequence[HubCamera]) -> list[str]:
    """The hosts of the ``[[camera.sources]]``: found again on the LAN, not adopted twice."""
    hosts = []
    for camera in cameras:
        try:
            hosts.append(urllib.parse.urlsplit(camera.url or camera.onvif).hostname or "")
        except ValueError:
            continue  # its capture reports the bad URL
    return hosts


def build_adoption(
    ctx: FeatureContext,
    hub: HubService,
    credentials: CameraCredentialStore,
    motion_for: Callable[[str], MotionService],
) -> AdoptionService:
    """The adoption service of the camera feature (``[camera] adopt_discovered``)."""
    settings = ctx.config.camera
    registry = AdoptionRegistry(
        own_endpoint=endpoint_for_serial(ctx.config.device.serial_number),
        reserved_names=[source.name for source in settings.sources],
        configured_hosts=_hosts(settings.sources),
        max_cameras=settings.adopt_max_cameras,
        missing_probes=settings.adopt_missing_probes,
    )
    return AdoptionService(
        registry,
        AdoptionStore(ctx.layout),
        DiscoveryWorker(ctx.config.discovery, interval=settings.adopt_probe_seconds),
        hub,
        credentials=credentials,
        motion_for=motion_for,
        fps=settings.fps,
        transport=settings.adopt_transport,
    )
