"""An unreadable upgrade state is moved aside and rebuilt; killed writes leave nothing behind.

The rebuild trusts only what can be checked: the boot environment, and a
slot's saved envelope that still verifies *and* whose digest the slot's
bytes match.
"""

from __future__ import annotations

import json
import logging
import pathlib
import subprocess
from collections.abc import Callable, Iterator

import pytest

from agent.config import AgentConfig
from agent.layout import StateLayout
from agent.upgrade.errors import RollbackError
from agent.upgrade.machine import Decision, State, UpgradeRecord
from drivers.cli import main
from drivers.upgrade.installer import Installer
from drivers.upgrade.service import build_installer, build_service
from drivers.upgrade.slots import SimulatedMachine
from tests.upgrade.conftest import HARDWARE_CLASS, VENDOR_DOMAIN, random_image, reboot_and_commit
from tests.upgrade.imageserver import ImageServer

GARBAGE = b'{"state": "trial", "sequence": 3, "recei'

Setup = tuple[Installer, SimulatedMachine, AgentConfig]


@pytest.fixture
def setup(make_config: Callable[..., AgentConfig]) -> Setup:
    config = make_config(health_grace_seconds=0.0)
    installer, machine = build_installer(config)
    assert machine is not None
    return installer, machine, config


@pytest.fixture
def install(
    setup: Setup, image_server: ImageServer, sign: Callable[..., bytes]
) -> Callable[[int], bytes]:
    def install(sequence: int) -> bytes:
        image = random_image(50_000)
        image_server.files[f"/fw{sequence}.img"] = image
        envelope = sign(image, sequence, image_server.url(f"/fw{sequence}.img"))
        assert setup[0].install(envelope).state == State.AWAITING_REBOOT
        return envelope

    return install


def _corrupt(config: AgentConfig) -> None:
    StateLayout(config.state_dir).upgrade_state.write_bytes(GARBAGE)


def _damaged(config: AgentConfig) -> list[pathlib.Path]:
    return sorted(StateLayout(config.state_dir).upgrade_dir.glob("state.json.damaged-*"))


def _rebuilt(installer: Installer, caplog: pytest.LogCaptureFixture) -> UpgradeRecord:
    with caplog.at_level(logging.INFO, logger="drivers.upgrade"):
        record = installer.record()
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "moved to" in lines[0] and "rebuilt from the boot environment" in lines[0]
    # The rebuilt state is on disk, readable.
    raw = installer.store.load()
    assert raw is not None and UpgradeRecord.from_bytes(raw) == record
    return record


def test_rebuilt_after_a_commit_keeps_the_installed_sequence(
    setup: Setup,
    install: Callable[[int], bytes],
    sign: Callable[..., bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    installer, machine, config = setup
    install(3)
    reboot_and_commit(installer, machine)
    _corrupt(config)
    record = _rebuilt(installer, caplog)
    assert (record.state, record.installed_sequence, record.target_slot) == (
        State.COMMITTED,
        3,
        "b",
    )
    assert "slot b runs sequence 3" in caplog.text
    [damaged] = _damaged(config)
    assert damaged.read_bytes() == GARBAGE
    # Rollback protection survives the rebuild.
    with pytest.raises(RollbackError):
        installer.verify(sign(b"old", 2, "http://127.0.0.1:9/old.img"))


def test_rebuilt_while_awaiting_the_reboot_then_the_trial_commits(
    setup: Setup, install: Callable[[int], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    installer, machine, config = setup
    install(3)
    _corrupt(config)
    record = _rebuilt(installer, caplog)
    assert (record.state, record.sequence, record.target_slot) == (
        State.AWAITING_REBOOT,
        3,
        "b",
    )
    assert installer.resume()[1] == Decision.WAIT_REBOOT
    reboot_and_commit(installer, machine)
    assert installer.record().installed_sequence == 3


def test_rebuilt_in_the_trial_boot_goes_to_the_health_check(
    setup: Setup, install: Callable[[int], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    installer, machine, config = setup
    install(3)
    machine.boot()
    _corrupt(config)
    _rebuilt(installer, caplog)
    record, decision = installer.resume()
    assert (record.state, decision, record.sequence) == (State.TRIAL, Decision.CHECK_HEALTH, 3)
    assert installer.health(True)[0].state == State.COMMITTED


@pytest.mark.parametrize("damage", ["envelope gone", "slot bytes changed"])
def test_a_trial_of_an_image_nothing_vouches_for_is_ended(
    setup: Setup, install: Callable[[int], bytes], caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    installer, machine, config = setup
    install(3)
    machine.boot()  # running b on trial
    layout = StateLayout(config.state_dir)
    if damage == "envelope gone":
        layout.upgrade_slot_envelope("b").unlink()
    else:
        slot = layout.simulated_slots / "slot-b.img"
        raw = bytearray(slot.read_bytes())
        raw[100] ^= 1
        slot.write_bytes(bytes(raw))
    _corrupt(config)
    record = _rebuilt(installer, caplog)
    assert (record.state, record.target_slot) == (State.ROLLED_BACK, "b")
    status = installer.slots.boot_status()
    assert (status.booted_slot, status.next_slot, status.trial) == ("b", "a", False)
    assert "slot b is rolled back; slot a boots next" in caplog.text
    assert machine.boot() == "a"


def test_rebuilt_during_a_rollback_bars_the_release(
    setup: Setup, install: Callable[[int], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    installer, machine, config = setup
    install(3)
    machine.boot()
    installer.resume()
    assert installer.health(False)[0].state == State.ROLLED_BACK
    _corrupt(config)
    record = _rebuilt(installer, caplog)
    assert (record.state, record.failed_sequences) == (State.ROLLED_BACK, (3,))


def test_cli_status_and_apply_work_with_a_corrupt_state_file(
    tmp_path: pathlib.Path,
    vendor_key: object,
    make_config: Callable[..., AgentConfig],
    image_server: ImageServer,
    sign: Callable[..., bytes],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        f'[device]\nhardware_class = "{HARDWARE_CLASS}"\n'
        f'[upgrade]\ntrusted_keys = ["{tmp_path / "vendor.pub.pem"}"]\n'
        f'vendor_domain = "{VENDOR_DOMAIN}"\n'
    )
    make_config()  # writes vendor.pub.pem
    state = tmp_path / "state"
    layout = StateLayout(state)
    layout.upgrade_dir.mkdir(parents=True)
    layout.upgrade_state.write_bytes(b"\x00\x01 not json at all")
    common = ["--config", str(config_file), "--state-dir", str(state)]
    assert main(["upgrade", "status", *common]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "idle"
    assert "Traceback" not in err
    assert [r.levelname for r in caplog.records if "was unreadable" in r.getMessage()] == [
        "WARNING"
    ]
    image = random_image(10_000)
    image_server.files["/fw.img"] = image
    envelope = tmp_path / "fw.suit"
    envelope.write_bytes(sign(image, 1, image_server.url("/fw.img")))
    layout.upgrade_state.write_bytes(b"[1, 2")
    assert main(["upgrade", "apply", *common, "--manifest", str(envelope)]) == 0
    assert "awaiting-reboot: sequence 1" in capsys.readouterr().out
    assert len(sorted(layout.upgrade_dir.glob("state.json.damaged-*"))) == 2


@pytest.fixture
def live_pid() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "60"])
    yield child.pid
    child.kill()
    child.wait()


def test_stale_temp_files_of_killed_writes_are_removed_at_start(
    make_config: Callable[..., AgentConfig], live_pid: int
) -> None:
    config = make_config()
    layout = StateLayout(config.state_dir)
    layout.simulated_slots.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = [
        layout.upgrade_dir / f".state.json.{gone.pid}.1a2b3c4d.tmp",
        layout.simulated_slots / f".machine.txt.{gone.pid}.99aa77bb.tmp",
    ]
    kept = [
        layout.upgrade_dir / f".state.json.{live_pid}.0f0f0f0f.tmp",  # a writer at work
        layout.upgrade_dir / "notes.tmp",
    ]
    for path in stale + kept:
        path.write_bytes(b"half a write")
    service = build_service(config, lambda: True)
    service.start()
    service.wait()
    assert [p.exists() for p in stale] == [False, False]
    assert [p.exists() for p in kept] == [True, True]
