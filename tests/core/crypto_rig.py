"""A state directory with sealed personal data, and what of it can still be read."""

from __future__ import annotations

import pathlib

from agent import cbor
from agent.config import AgentConfig, CameraSettings, MqttSettings
from agent.feature import Mode
from agent.minimise import OutgoingMessage
from agent.purposes import Purpose
from drivers.compose import Composition, compose

MARKER = b"MARKER-7f3a-QUEUED"
IMAGE = b"\xff\xd8\xff\xe0JPEG-MARKER-IMAGE-BYTES\xff\xd9"
PER_PURPOSE = 4
PURPOSES = (Purpose.CLOUD_EVENTS, Purpose.USAGE_STATISTICS)


def rig_config(state_dir: pathlib.Path) -> AgentConfig:
    return AgentConfig(
        state_dir=state_dir,
        mqtt=MqttSettings(enabled=False),
        camera=CameraSettings(enabled=False),
    )


def seed(state_dir: pathlib.Path) -> None:
    """Grant, then queue sealed events of two purposes; cloud events carry an image."""
    composition = compose(rig_config(state_dir), Mode.CLI, builders=())
    try:
        now = composition.clock.now()
        for purpose in (*PURPOSES, Purpose.EVENT_SNAPSHOTS):
            composition.ledger.grant(purpose, now, source="test")
        messages = []
        for purpose in PURPOSES:
            for i in range(PER_PURPOSE):
                body: dict[str, object] = {"marker": MARKER.decode(), "i": i}
                with_image = purpose is Purpose.CLOUD_EVENTS
                if with_image:
                    body["img"] = IMAGE
                messages.append((
                    f"edge/test/{purpose.value}",
                    OutgoingMessage(f"{purpose.value}-{i}", "test.event", purpose,
                                    cbor.dumps(body), now, 3600, has_image=with_image),
                ))
        composition.outbox.put_many(messages, now)
    finally:
        composition.close()


def readable(state_dir: pathlib.Path, mode: Mode = Mode.DAEMON) -> dict[str, object]:
    """Open the state as a restarted daemon would (recovery runs) and read what is left."""
    composition = compose(rig_config(state_dir), mode, builders=())
    try:
        return read_composition(composition)
    finally:
        composition.close()


def read_composition(
    composition: Composition, purposes: tuple[Purpose, ...] = ()
) -> dict[str, object]:
    """What of the queued events an open composition reads, with consent, keys and intents.

    ``purposes``: more purposes whose consent and live keys to report.
    """
    shown = (*PURPOSES, Purpose.EVENT_SNAPSHOTS, *purposes)
    now = composition.clock.now()
    batch = composition.outbox.batch_after(0, 1000, now)
    by_purpose: dict[str, int] = {}
    images = 0
    for message in batch:
        body = cbor.loads_untrusted(message.payload, max_bytes=1 << 20)
        assert isinstance(body, dict) and body["marker"] == MARKER.decode()
        by_purpose[message.purpose] = by_purpose.get(message.purpose, 0) + 1
        images += body.get("img") == IMAGE
    consent = composition.ledger.snapshot()
    return {
        "events": by_purpose,
        "images": images,
        "granted": {p.value: consent[p.value] for p in shown},
        "live_keys": {p.value: composition.keys.live_numbers(p.value) for p in shown},
        "rows": len(composition.outbox),
        "intents": composition.keys.intents(),
    }
