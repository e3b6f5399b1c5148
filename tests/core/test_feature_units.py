"""Features as units, composed once: what each declares is what gets wired, in both modes."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig
from agent.feature import Feature, FeatureContext, Holding, Mode
from agent.layout import StateLayout
from agent.purposes import Purpose
from drivers.compose import DEFAULT_BUILDERS, Composition, compose
from drivers.logs.files import FileHolder
from drivers.runtime import Agent
from drivers.vision.plate_reader import PlateService


def _config(state: Path) -> AgentConfig:
    config = AgentConfig(state_dir=state)
    return dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, enabled=False))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Composition]:
    composition = compose(_config(tmp_path / "state"), Mode.DAEMON, environ={})
    try:
        yield composition
    finally:
        composition.close()


def test_the_daemon_composes_every_feature_in_order(daemon: Composition) -> None:
    assert [f.name for f in daemon.features] == [
        "logs", "sealed_params", "camera", "faces", "plates", "provisioning", "discovery",
        "upgrade", "homeassistant", "rights",
    ]
    assert {"camera", "motion", "faces", "plates", "upgrade", "retention"} <= {
        s.name for s in daemon.services
    }
    assert set(daemon.schemas.types) == {
        "device.status", "stats", "motion", "face.match", "plate.match", "upgrade.state",
        "privacy.tombstone", "audit.head",
    }


def test_every_holding_is_exported_erased_and_purged_on_its_withdrawal(
    daemon: Composition,
) -> None:
    holdings = [h for f in daemon.features for h in f.holdings]
    registered = {entry.holder.name for entry in daemon.registry.holders}
    assert {h.holder.name for h in holdings} | {"consent", "outbox", "principals"} == registered
    for holding in holdings:
        if holding.purpose is not None:
            assert holding.holder.name in daemon.ledger.withdrawal_hooks(holding.purpose)
    assert daemon.ledger.withdrawal_hooks(Purpose.FACE_RECOGNITION) == ["face_gallery"]
    assert daemon.ledger.withdrawal_hooks(Purpose.PLATE_RECOGNITION) == ["plates"]
    assert daemon.ledger.withdrawal_hooks(Purpose.EVENT_SNAPSHOTS) == ["snapshots"]


def test_the_cli_reaches_the_same_stores_as_the_daemon(
    daemon: Composition, tmp_path: Path
) -> None:
    cli = compose(daemon.config, Mode.CLI)
    try:
        assert [e.holder.name for e in cli.registry.holders] == [
            e.holder.name for e in daemon.registry.holders
        ]
        assert cli.services == [] and cli.link is None
        assert {"data.export", "data.erase", "consent.set"} <= set(cli.commands)
    finally:
        cli.close()


def test_camera_frames_reach_faces_and_the_plate_path_through_the_bus(
    daemon: Composition,
) -> None:
    assert daemon.frames.subscribers == ["motion", "faces", "plates"]
    plates = next(s for s in daemon.services if isinstance(s, PlateService))
    frame = np.zeros((48, 64, 3), np.uint8)
    assert plates.worker is not None  # the default PP-OCR reader, on its own thread
    plates.worker.active = True  # (set by a tick with plate_recognition consented)
    daemon.frames.publish(frame)
    assert plates.worker.stats.sampled == 1


@pytest.mark.parametrize("mode", [Mode.DAEMON, Mode.CLI])
def test_one_composition_opens_the_database_once(
    mode: Mode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real = sqlite3.connect

    def counting(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        opened.append(str(database))
        return real(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", counting)
    config = _config(tmp_path / "state")
    composition = compose(config, mode, environ={})
    try:
        if mode is Mode.DAEMON:
            Agent(composition, environ={})
        composition.commands["data.export"]({"format": "json"})
    finally:
        composition.close()
    assert opened.count(str(StateLayout(config.state_dir).database)) == 1


def _extra(*, command: str = "", holder: str = "") -> object:
    def build(ctx: FeatureContext) -> Feature:
        holdings = (Holding(FileHolder(holder, ctx.layout.root / "x")),) if holder else ()
        return Feature("extra", commands={command: dict} if command else {}, holdings=holdings)

    return build


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (_extra(command="data.export"), "declared twice"),
        (_extra(holder="snapshots"), "registered twice"),
    ],
)
def test_two_features_cannot_claim_one_command_or_one_store(
    tmp_path: Path, extra: object, message: str
) -> None:
    builders = (*DEFAULT_BUILDERS, extra)
    with pytest.raises(Exception, match=message):
        compose(_config(tmp_path / "state"), Mode.CLI, builders=builders)  # type: ignore[arg-type]
    # A failed composition closes what it opened: the database can be opened again at once.
    compose(_config(tmp_path / "state"), Mode.CLI).close()


def test_the_agent_is_built_whole() -> None:
    """Nothing adds services or commands to a built agent from outside."""
    assert not hasattr(Agent, "add_service")
