"""Shared helpers for the provisioning tests."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import select
import threading
import time
from collections.abc import Mapping

from agent.config import AgentConfig
from agent.provisioning import improv
from agent.provisioning.improv_device import ImprovDevice
from agent.provisioning.provisioner import Provisioner
from agent.provisioning.settings import ProvisioningSettings

START = 1_800_000_000.0


class RecordingAudit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object], float]] = []

    def record(self, kind: str, detail: Mapping[str, object], now: float) -> None:
        self.records.append((kind, dict(detail), now))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.records]


def make_config(state_dir: pathlib.Path, **provisioning: object) -> AgentConfig:
    settings = dataclasses.replace(
        ProvisioningSettings(),
        **{"lan_bind_address": "127.0.0.1", "lan_port": 0, **provisioning},  # type: ignore[arg-type]
    )
    return dataclasses.replace(AgentConfig(), state_dir=state_dir, provisioning=settings)


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


class ImprovPeerDevice:
    """An Improv device (the real state machine + a provisioner) on a pty master fd.

    Lets the installer-side client run against the slave path of a real pty.
    """

    def __init__(self, master_fd: int, device: ImprovDevice, provisioner: Provisioner) -> None:
        self._fd = master_fd
        self._device = device
        self._provisioner = provisioner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ImprovPeerDevice:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _serve(self) -> None:
        decoder = improv.StreamDecoder()
        while not self._stop.is_set():
            if not select.select([self._fd], [], [], 0.05)[0]:
                continue
            for item in decoder.feed(os.read(self._fd, 512)):
                reply = self._device.receive(item, time.monotonic())
                frames = list(reply.frames)
                if reply.connect is not None:
                    result = self._provisioner.apply(reply.connect, "improv")
                    frames += self._device.connect_finished(result, time.monotonic())
                for frame in frames:
                    os.write(self._fd, frame)
