"""Where two features meet: files one writes and another reads, CLI hooks, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.cli import main
from drivers.logs.feature import read_verification_code
from drivers.provisioning.store import load_or_create_binding


def test_technician_auth_reads_the_code_provisioning_generated(tmp_path: Path) -> None:
    binding = load_or_create_binding(tmp_path, "EA-1")
    assert read_verification_code(tmp_path)() == binding.verification_code


def test_cli_withdrawal_erases_the_watch_list_and_is_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert main(["consent", "grant", "--yes", "plate_recognition", *state]) == 0
    assert main(["enrol", "plate", "AB 123 CD", "--label", "Neighbour", *state]) == 0
    assert any(tmp_path.glob("plates.sqlite*"))
    assert main(["consent", "withdraw", "plate_recognition", *state]) == 0
    assert not any(tmp_path.glob("plates.sqlite*"))
    capsys.readouterr()
    assert main(["audit", "show", *state]) == 0
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert kinds.count("consent.grant") == 1 and kinds.count("consent.withdraw") == 1
    assert main(["audit", "verify", *state]) == 0


def test_running_agent_without_camera_still_purges_gallery_and_plates_on_withdrawal(
    tmp_path: Path,
) -> None:
    """With the camera off no face or plate service registers a hook; the files must go anyway."""
    import dataclasses

    from agent.config import AgentConfig
    from agent.feature import Mode
    from agent.keystore import DataKeys
    from agent.layout import StateLayout
    from agent.matching.plates import make_entry
    from agent.matching.plates_store import PlateStore
    from agent.purposes import Purpose
    from drivers.compose import compose

    config = AgentConfig(state_dir=tmp_path)
    config = dataclasses.replace(
        config,
        camera=dataclasses.replace(config.camera, enabled=False),
        mqtt=dataclasses.replace(config.mqtt, enabled=False),
    )
    store = PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    store.put(make_entry("ZX99QQ", now=1.0))
    store.close()
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "manifest.json").write_text('{"name": "Alice"}')
    composition = compose(config, Mode.DAEMON, environ={})
    try:
        composition.ledger.withdraw(Purpose.FACE_RECOGNITION, 2.0)
        composition.ledger.withdraw(Purpose.PLATE_RECOGNITION, 2.0)
    finally:
        composition.close()
    assert not any(tmp_path.glob("plates.sqlite*"))
    assert not any((tmp_path / "faces").iterdir())


def test_withdrawing_event_snapshots_erases_stored_snapshots(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert main(["consent", "grant", "--yes", "event_snapshots", *state]) == 0
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "ev1.jpg").write_bytes(b"\xff\xd8JPEG")
    assert main(["consent", "withdraw", "event_snapshots", *state]) == 0
    assert not any((tmp_path / "snapshots").iterdir())


def test_camera_events_do_not_carry_the_serial_number_in_clear(tmp_path: Path) -> None:
    """``dev`` is pseudonymised; a ``camera`` field holding the serial would undo that."""
    import dataclasses

    from agent.config import AgentConfig
    from drivers.camera.services import MotionService
    from drivers.runtime import Agent
    from drivers.vision.pipeline import FaceService

    config = AgentConfig(state_dir=tmp_path)
    config = dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, enabled=False))
    agent = Agent.build(config, environ={})
    try:
        motion = [s for s in agent.services if isinstance(s, MotionService)]
        faces = [s for s in agent.services if isinstance(s, FaceService)]
        assert motion and faces
        serial = config.device.serial_number
        assert motion[0].detector.camera != serial
        assert faces[0].recogniser.camera != serial
    finally:
        agent.composition.close()
