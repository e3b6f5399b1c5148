"""Publishes the discovery configs of :mod:`agent.homeassistant.discovery`, retained.

One service re-evaluates, once a pass, what Home Assistant should see (consent
and the device id may change at any time) and bumps ``version`` when that
changed; the runtime then republishes every retained message, as on each new
connection.  These topics lie outside ``<prefix>/<device>/`` (Home Assistant's
discovery prefix), so the source says ``absolute = True``.  A topic published
once and no longer wanted (a withdrawal, a rebinding) is cleared with an empty
retained message for as long as the agent runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from agent import __version__
from agent.camera.events import CAMERA_NAME
from agent.config import PayloadFormat
from agent.events import Event
from agent.feature import ConsentView, Feature, FeatureContext
from agent.homeassistant.discovery import DeviceInfo, discovery_configs

# The outbox depth changes with every event: republished at most this often.
DEPTH_INTERVAL_SECONDS = 60.0


class DiscoveryPublisher:
    """The retained discovery configs and their state topics (a RetainedMessages source)."""

    name = "homeassistant"
    absolute = True  # keys are whole topics, not suffixes under <prefix>/<device>/

    def __init__(
        self,
        prefix: str,
        info: Callable[[], DeviceInfo],
        consent: ConsentView,
        depth: Callable[[], int] | None = None,
    ) -> None:
        self.prefix = prefix
        self.info = info
        self.consent = consent
        self.depth = depth
        self.version = 0
        self._messages: dict[str, bytes] = {}
        self._ever: set[str] = set()
        self._depth_at = float("-inf")
        self._depth = 0

    def refresh(self, now: float) -> None:
        if self.depth is not None and now - self._depth_at >= DEPTH_INTERVAL_SECONDS:
            self._depth_at, self._depth = now, self.depth()
        info = self.info()
        wanted: dict[str, bytes] = {
            topic: b"" if config is None else json.dumps(config, sort_keys=True).encode()
            for topic, config in discovery_configs(
                self.prefix, info, self.consent.is_granted
            ).items()
        }
        wanted[info.installed_topic] = json.dumps(
            {"installed_version": info.sw_version, "latest_version": info.sw_version}
        ).encode()
        wanted[info.outbox_depth_topic] = str(self._depth).encode()
        for gone in self._ever - wanted.keys():
            wanted[gone] = b""
        self._ever |= {t for t, p in wanted.items() if p}
        if wanted != self._messages:
            self._messages = wanted
            self.version += 1

    def retained_messages(self) -> Mapping[str, bytes]:
        return dict(self._messages)

    # --- Service --------------------------------------------------------------

    def start(self) -> None:
        self.refresh(float("-inf"))

    def tick(self, now: float) -> Sequence[Event]:
        self.refresh(now)
        return ()

    def stop(self) -> None:
        return None


def build_homeassistant(ctx: FeatureContext) -> Feature:
    settings = ctx.config.homeassistant
    if not (ctx.daemon and settings.active and ctx.config.mqtt.enabled):
        return Feature("homeassistant")
    config = ctx.config
    cameras = (CAMERA_NAME,) if config.camera.enabled else ()

    def info() -> DeviceInfo:
        device_id = ctx.principals.device_id
        return DeviceInfo(
            device_id=device_id,
            base=f"{config.mqtt.topic_prefix}/{device_id}",
            model=config.device.model,
            sw_version=__version__,
            serial_number=config.device.serial_number if settings.expose_serial else None,
            configuration_url=settings.configuration_url,
            json_events=config.mqtt.payload_format is PayloadFormat.JSON,
            cameras=cameras,
        )

    publisher = DiscoveryPublisher(settings.prefix, info, ctx.consent, ctx.queue_depth)
    return Feature("homeassistant", services=(publisher,), retained=(publisher,))
