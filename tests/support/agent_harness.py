"""Run a real Agent (the composition root) against the test broker."""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import time

from agent.config import (
    AgentConfig,
    CameraSettings,
    MqttSettings,
    OutboxSettings,
    RuntimeSettings,
    TlsMode,
)
from agent.events import Event
from agent.ports import Clock
from drivers.camera import build_camera
from drivers.runtime import Agent
from drivers.sdnotify import Notifier


def make_config(
    state_dir: pathlib.Path, port: int, *, max_messages: int = 100_000, **mqtt: object
) -> AgentConfig:
    # The test broker is plaintext on 127.0.0.1 (allowed for loopback); TLS tests pass tls=ON.
    mqtt.setdefault("tls", TlsMode.OFF)
    return AgentConfig(
        state_dir=state_dir,
        mqtt=MqttSettings(
            port=port,
            reconnect_min_seconds=0.1,
            reconnect_max_seconds=0.5,
            **mqtt,  # type: ignore[arg-type]
        ),
        outbox=OutboxSettings(max_messages=max_messages),
        runtime=RuntimeSettings(tick_seconds=0.05),
        # The tests emit their own motion events; no sample camera adds to them.
        camera=CameraSettings(enabled=False),
    )


def spine_agent(
    config: AgentConfig,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    environ: dict[str, str] | None = None,
) -> Agent:
    """The spine plus the camera feature's declarations (motion schema), no other feature."""
    return Agent.build(
        config,
        builders=(build_camera,),
        clock=clock,
        notifier=notifier,
        environ={} if environ is None else environ,
    )


def motion(k: int, now: float | None = None) -> Event:
    return Event(
        "motion",
        occurred_at=time.time() if now is None else now,
        fields={"camera": "cam0", "area": k, "duration": 1.5, "secret_extra": "must-not-leave"},
        image=b"\xff\xd8JPEG-BYTES",
    )


class RunningAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.agent = spine_agent(config)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.request_stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


def with_mqtt(config: AgentConfig, **changes: object) -> AgentConfig:
    return dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, **changes))  # type: ignore[arg-type]


def device_base(state_dir: pathlib.Path, prefix: str = "edge") -> str:
    """``<prefix>/<device id>`` of the agent that will run on ``state_dir`` (made now if new)."""
    from agent.auth.principals import PrincipalStore
    from agent.database import Database

    state_dir.mkdir(parents=True, exist_ok=True)
    db = Database.in_state_dir(state_dir)
    try:
        return f"{prefix}/{PrincipalStore(db).device_id}"
    finally:
        db.close()
