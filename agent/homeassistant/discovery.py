"""The Home Assistant MQTT discovery configs this device publishes (README "Home Assistant").

Pure: :func:`discovery_configs` maps each discovery topic
``<discovery prefix>/<component>/<node id>/<object id>/config`` to its config
(a dict, published as retained JSON) or to ``None`` (an empty retained
message, which makes Home Assistant remove the entity).  An entity that shows
data of a purpose exists only while that purpose is consented:

* ``binary_sensor`` ``motion_<camera>`` -- ``cloud_events`` (the retained
  ``camera/<camera>/motion`` ON/OFF topic exists only then as well);
* ``sensor`` ``last_face_match`` -- ``face_recognition``; ``last_plate_match``
  -- ``plate_recognition``: the label the event carries, else its pseudonym;
* ``sensor`` ``outbox_depth`` and the ``update`` entity -- device operation,
  no consent.

No entity sends commands: every command must be signed by a key the owner
enrolled, and Home Assistant cannot sign, so a button or switch would only
ever be refused.  Entities that read events need ``mqtt.payload_format =
"json"``; with CBOR only the motion sensor, outbox depth and the installed
version remain.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from agent.purposes import Purpose

ORIGIN_NAME = "edge-agent"
MANUFACTURER = "edge-agent"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")

Config = dict[str, object]


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """What Home Assistant's device registry is told, and where the device's topics are."""

    device_id: str
    base: str  # <mqtt prefix>/<device id>
    model: str
    sw_version: str
    serial_number: str | None = None  # only with homeassistant.expose_serial
    configuration_url: str = ""
    json_events: bool = True
    cameras: tuple[str, ...] = ()

    @property
    def node_id(self) -> str:
        return _UNSAFE.sub("_", f"edge_agent_{self.device_id}")[:64]

    @property
    def status_topic(self) -> str:
        return f"{self.base}/status"

    @property
    def outbox_depth_topic(self) -> str:
        return f"{self.base}/ha/outbox_depth"

    @property
    def installed_topic(self) -> str:
        return f"{self.base}/ha/installed"


def _device(info: DeviceInfo) -> Config:
    device: Config = {
        "identifiers": [info.node_id],
        "name": f"Edge camera {info.device_id[:8]}",
        "manufacturer": MANUFACTURER,
        "model": info.model,
        "sw_version": info.sw_version,
    }
    if info.serial_number:
        device["serial_number"] = info.serial_number
    if info.configuration_url:
        device["configuration_url"] = info.configuration_url
    return device


def _entity(info: DeviceInfo, object_id: str, name: str, **fields: object) -> Config:
    config: Config = {
        "name": name,
        "unique_id": f"{info.node_id}_{object_id}",
        "object_id": f"{info.node_id}_{object_id}",
        "device": _device(info),
        "origin": {"name": ORIGIN_NAME, "sw_version": info.sw_version},
        "availability": [
            {
                "topic": info.status_topic,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "qos": 1,
    }
    config.update(fields)
    return config


def _match_sensor(info: DeviceInfo, event: str, object_id: str, name: str, key: str) -> Config:
    # The label when the event carries one, else the pseudonym the minimiser gave.
    template = (
        "{{ value_json.f.label if value_json.f.label is defined and value_json.f.label "
        f"else (value_json.ids.{key} if value_json.ids is defined "
        f"and value_json.ids.{key} is defined else 'unknown') }}}}"
    )
    return _entity(
        info,
        object_id,
        name,
        state_topic=f"{info.base}/events/{event}",
        value_template=template,
        json_attributes_topic=f"{info.base}/events/{event}",
        json_attributes_template="{{ value_json.f | tojson }}",
        icon="mdi:face-recognition" if event == "face.match" else "mdi:car",
    )


def discovery_configs(
    prefix: str, info: DeviceInfo, is_granted: Callable[[Purpose], bool]
) -> dict[str, Config | None]:
    """Every discovery topic this device owns, mapped to its config or None (remove it)."""

    def topic(component: str, object_id: str) -> str:
        return f"{prefix}/{component}/{info.node_id}/{object_id}/config"

    out: dict[str, Config | None] = {}
    motion = is_granted(Purpose.CLOUD_EVENTS)
    for camera in info.cameras:
        object_id = _UNSAFE.sub("_", f"motion_{camera}")
        out[topic("binary_sensor", object_id)] = (
            _entity(
                info,
                object_id,
                f"Motion {camera}",
                state_topic=f"{info.base}/camera/{camera}/motion",
                payload_on="ON",
                payload_off="OFF",
                device_class="motion",
            )
            if motion
            else None
        )
    face = info.json_events and is_granted(Purpose.FACE_RECOGNITION)
    out[topic("sensor", "last_face_match")] = (
        _match_sensor(info, "face.match", "last_face_match", "Last face match", "person_id")
        if face
        else None
    )
    plate = info.json_events and is_granted(Purpose.PLATE_RECOGNITION)
    out[topic("sensor", "last_plate_match")] = (
        _match_sensor(info, "plate.match", "last_plate_match", "Last plate match", "plate")
        if plate
        else None
    )
    out[topic("sensor", "outbox_depth")] = _entity(
        info,
        "outbox_depth",
        "Outbox depth",
        state_topic=info.outbox_depth_topic,
        unit_of_measurement="messages",
        state_class="measurement",
        entity_category="diagnostic",
        icon="mdi:tray-full",
    )
    update: Config = {
        "state_topic": info.installed_topic,
        "device_class": "firmware",
        "entity_category": "diagnostic",
        "title": "edge-agent",
    }
    if info.json_events:
        update["latest_version_topic"] = f"{info.base}/events/upgrade.state"
        update["latest_version_template"] = "{{ value_json.f.version }}"
    out[topic("update", "firmware")] = _entity(info, "firmware", "Firmware", **update)
    return out
