"""Home Assistant MQTT discovery: configs checked against HA's documented schema (issue 13).

The schema below is written from Home Assistant's MQTT discovery documentation
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery and the
``binary_sensor.mqtt``, ``sensor.mqtt`` and ``update.mqtt`` pages): the
discovery topic ``<prefix>/<component>/[<node_id>/]<object_id>/config`` with
ids of ``[a-zA-Z0-9_-]``, the keys each platform accepts, the ``device`` and
``origin`` maps, availability entries, device and state classes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.config import (
    AgentConfig,
    CameraSettings,
    HomeAssistantSettings,
    PayloadFormat,
)
from agent.homeassistant.discovery import DeviceInfo, discovery_configs
from agent.purposes import Purpose
from drivers.camera import build_camera
from drivers.homeassistant import build_homeassistant
from drivers.runtime import Agent
from tests.support.agent_harness import make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.owner import Signer

# --- HA's documented discovery schema (the subset this device may use) ---------------

TOPIC = re.compile(
    r"^(?P<prefix>[^+#]+)/(?P<component>[a-z_]+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?"
    r"(?P<object>[a-zA-Z0-9_-]+)/config$"
)
COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "enabled_by_default", "encoding", "entity_category", "entity_picture",
    "icon", "json_attributes_template", "json_attributes_topic", "name", "object_id",
    "default_entity_id", "origin", "platform", "qos", "unique_id",
}  # fmt: skip
PLATFORM_KEYS = {
    "binary_sensor": {
        "device_class", "expire_after", "force_update", "off_delay", "payload_off",
        "payload_on", "state_topic", "value_template",
    },
    "sensor": {
        "device_class", "expire_after", "force_update", "last_reset_value_template",
        "options", "suggested_display_precision", "state_class", "state_topic",
        "unit_of_measurement", "value_template",
    },
    "update": {
        "command_topic", "device_class", "display_precision", "latest_version_template",
        "latest_version_topic", "payload_install", "release_summary", "release_url",
        "retain", "state_topic", "title", "value_template",
    },
}  # fmt: skip
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}, "update": set()}
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
    "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
    "via_device",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}
BINARY_DEVICE_CLASSES = {"motion", "occupancy", "presence", "connectivity", "problem"}
UPDATE_DEVICE_CLASSES = {"firmware"}
STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}
ENTITY_CATEGORIES = {"config", "diagnostic"}
COMMAND_KEYS = {"command_topic", "payload_press", "payload_install"}


def check_against_ha_schema(topic: str, config: dict[str, Any]) -> str:
    """Raise AssertionError naming the first violation; return the component."""
    match = TOPIC.match(topic)
    assert match, f"{topic}: not a discovery topic"
    component = match["component"]
    assert component in PLATFORM_KEYS, f"{topic}: unexpected component {component}"
    allowed = COMMON | PLATFORM_KEYS[component]
    assert set(config) <= allowed, f"{topic}: keys HA does not know: {set(config) - allowed}"
    assert REQUIRED[component] <= set(config), f"{topic}: missing {REQUIRED[component]}"
    assert not (COMMAND_KEYS & set(config)), f"{topic}: a command entity (HA cannot sign)"
    assert isinstance(config["name"], str) and config["name"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", config["unique_id"])
    device = config["device"]  # device registry: needs a unique_id and identifiers
    assert set(device) <= DEVICE_KEYS and device["identifiers"]
    assert all(isinstance(i, str) for i in device["identifiers"])
    assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"]
    assert "availability_topic" not in config or "availability" not in config
    for entry in config["availability"]:
        assert set(entry) <= AVAILABILITY_KEYS and entry["topic"]
    if component == "binary_sensor":
        assert config.get("device_class") in BINARY_DEVICE_CLASSES
    if component == "update":
        assert config.get("device_class") in UPDATE_DEVICE_CLASSES
    if "state_class" in config:
        assert config["state_class"] in STATE_CLASSES
    if "entity_category" in config:
        assert config["entity_category"] in ENTITY_CATEGORIES
    for key in ("state_topic", "json_attributes_topic", "latest_version_topic"):
        if key in config:
            assert isinstance(config[key], str) and not set(config[key]) & {"+", "#"}
    return component


INFO = DeviceInfo(
    device_id="d0123456789abcdef",
    base="edge/d0123456789abcdef",
    model="edge-cam-1",
    sw_version="1.2.3",
    cameras=("cam0",),
)


def test_every_config_passes_the_schema_and_follows_consent() -> None:
    everything = discovery_configs("homeassistant", INFO, lambda p: True)
    components = [check_against_ha_schema(t, c) for t, c in everything.items() if c]
    assert sorted(components) == ["binary_sensor", "sensor", "sensor", "sensor", "update"]
    nothing = discovery_configs("homeassistant", INFO, lambda p: False)
    assert set(nothing) == set(everything)  # the same topics: withdrawn ones are cleared
    shown = {t.split("/")[-2] for t, c in nothing.items() if c}
    assert shown == {"outbox_depth", "firmware"}  # device operation: no consent needed
    motion = everything[
        "homeassistant/binary_sensor/edge_agent_d0123456789abcdef/motion_cam0/config"
    ]
    assert motion is not None
    assert motion["state_topic"] == "edge/d0123456789abcdef/camera/cam0/motion"
    assert (motion["payload_on"], motion["payload_off"]) == ("ON", "OFF")
    assert motion["device"]["sw_version"] == "1.2.3" and "serial_number" not in motion["device"]


def test_serial_and_url_only_when_allowed_and_cbor_drops_event_sensors() -> None:
    info = dataclasses.replace(
        INFO, serial_number="EA-1", configuration_url="http://cam.local/", json_events=False
    )
    configs = discovery_configs("ha", info, lambda p: True)
    device = next(c for c in configs.values() if c)["device"]
    assert device["serial_number"] == "EA-1" and device["configuration_url"] == "http://cam.local/"
    assert {t.split("/")[-2] for t, c in configs.items() if c} == {
        "motion_cam0",
        "outbox_depth",
        "firmware",
    }


@pytest.mark.parametrize(
    ("enabled", "prefix", "active"),
    [(None, None, False), (None, "ha", True), (True, None, True), (False, "ha", False)],
)
def test_on_by_default_exactly_when_a_prefix_is_set(
    enabled: bool | None, prefix: str | None, active: bool
) -> None:
    settings = HomeAssistantSettings(enabled=enabled, discovery_prefix=prefix)
    assert settings.active is active
    assert settings.prefix == (prefix or "homeassistant")


# --- the real agent against a real broker --------------------------------------------


class Retained:
    """Everything on ``homeassistant/#`` and the device's topics, last payload per topic."""

    def __init__(self, broker: Broker, base: str) -> None:
        self.collector = Collector(broker.host, broker.port, "homeassistant/#")
        self.collector.client.subscribe(f"{base}/#", qos=1)

    def latest(self) -> dict[str, bytes]:
        return {m.topic: bytes(m.payload) for m in list(self.collector.messages)}

    def config(self, suffix: str) -> dict[str, Any] | None:
        payload = next(
            (p for t, p in self.latest().items() if t.endswith(f"/{suffix}/config")), None
        )
        return json.loads(payload) if payload else None

    def wait(self, predicate: Any, what: str, timeout: float = 20.0) -> None:
        assert self.collector.wait_for(lambda c: predicate(self), timeout), what


def _run(config: AgentConfig) -> tuple[Agent, threading.Thread]:
    agent = Agent.build(config, builders=(build_camera, build_homeassistant), environ={})
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return agent, thread


def test_discovery_follows_consent_with_the_real_agent(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    owner = Signer()
    device = owner.enrol_in_state(state)
    base = f"edge/{device}"
    config = dataclasses.replace(
        make_config(state, broker.port),
        camera=CameraSettings(enabled=True, fps=2.0),
        homeassistant=HomeAssistantSettings(discovery_prefix="homeassistant"),
    )
    assert config.mqtt.payload_format is PayloadFormat.JSON
    seen = Retained(broker, base)
    agent, thread = _run(config)
    try:
        seen.wait(lambda s: s.config("firmware") and s.config("outbox_depth"), "no device configs")
        for topic, payload in seen.latest().items():
            if topic.startswith("homeassistant/") and payload:
                check_against_ha_schema(topic, json.loads(payload))
        firmware = seen.config("firmware")
        assert firmware is not None
        installed = json.loads(seen.latest()[firmware["state_topic"]])
        assert installed["installed_version"] == firmware["device"]["sw_version"]
        assert firmware["availability"][0]["topic"] == f"{base}/status"
        assert seen.latest()[f"{base}/status"] == b"online"
        depth = seen.config("outbox_depth")
        assert depth is not None and seen.latest()[depth["state_topic"]].isdigit()
        assert seen.config("motion_cam0") is None  # cloud_events not consented

        def consent(purpose: Purpose, granted: bool) -> None:
            reply = seen.collector.request(
                f"{base}/cmd/consent.set",
                {"purpose": purpose.value, "granted": granted},
                signer=owner,
            )
            assert reply["ok"], reply

        consent(Purpose.CLOUD_EVENTS, True)
        consent(Purpose.FACE_RECOGNITION, True)
        seen.wait(lambda s: s.config("motion_cam0") and s.config("last_face_match"), "no grant")
        motion = seen.config("motion_cam0")
        assert motion is not None
        check_against_ha_schema(
            f"homeassistant/binary_sensor/{motion['unique_id'][: -len('_motion_cam0')]}"
            "/motion_cam0/config",
            motion,
        )
        # The state topic it names is the one the camera feature keeps, ON/OFF.
        seen.wait(lambda s: s.latest().get(motion["state_topic"]) in (b"ON", b"OFF"), "state")
        assert seen.config("last_plate_match") is None  # plate_recognition not consented

        consent(Purpose.FACE_RECOGNITION, False)
        seen.wait(lambda s: s.config("last_face_match") is None, "face config not cleared")
        assert seen.config("motion_cam0") is not None
    finally:
        agent.request_stop()
        thread.join(15)
        seen.collector.close()
    # What the broker still holds (a fresh subscriber): the withdrawn config is gone.
    fresh = Retained(broker, base)
    try:
        fresh.wait(lambda s: s.config("motion_cam0") and s.config("firmware"), "retained")
        assert not any(t.endswith("/last_face_match/config") for t in fresh.latest())
        assert fresh.latest()[f"{base}/status"] == b"offline"
    finally:
        fresh.collector.close()
