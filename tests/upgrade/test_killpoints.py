"""SIGKILL the real installer process at every persisted step, restart, and check consistency.

The install (or the post-boot commit/rollback) runs in a child process,
:mod:`tests.upgrade.killchild`, whose installer gets a ``checkpoint`` callback
that parks it at one named point; the test SIGKILLs it there, then resumes
in-process and asserts that the bootloader points at a slot holding a verified
image.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from agent import config as agent_config
from agent.upgrade.machine import State
from drivers.upgrade.installer import CHECKPOINTS, Installer
from drivers.upgrade.service import build_installer
from drivers.upgrade.slots import SimulatedMachine
from tests.upgrade.conftest import HARDWARE_CLASS, VENDOR_DOMAIN, random_image
from tests.upgrade.imageserver import ImageServer

REPO = pathlib.Path(__file__).resolve().parents[2]
FACTORY = b"factory image in slot a"
IMAGE_SIZE = 6 * 1024 * 1024  # > one progress checkpoint, so "mid-download" is reachable
INSTALL_POINTS = ("downloading", "mid-download", "installing", "marked", "awaiting-reboot")
HEALTH_POINTS = (("committing", "healthy"), ("rolling-back", "unhealthy"))


def _write_config(tmp_path: pathlib.Path, pub: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[device]\nhardware_class = "{HARDWARE_CLASS}"\n'
        f'[upgrade]\ntrusted_keys = ["{pub}"]\nvendor_domain = "{VENDOR_DOMAIN}"\n'
        'auto_install_models = ["edge-cam-1"]\nio_timeout_seconds = 5.0\n'
    )
    return path


def _run_paused(config: pathlib.Path, state_dir: pathlib.Path, point: str, *step: str) -> None:
    """Run ``step`` in a killchild parked at ``point``, and SIGKILL it there."""
    argv = [sys.executable, "-m", "tests.upgrade.killchild", str(config), str(state_dir), point]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [*argv, *step],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,  # the child blocks reading it at the checkpoint
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, child.kill)  # never hang the suite on a missed marker
    watchdog.start()
    output: list[str] = []
    try:
        assert child.stderr is not None
        for line in child.stderr:
            if line.strip() == f"PAUSED {point}":
                break
            output.append(line)
        else:
            tail = "".join(output)[-2000:]
            pytest.fail(f"installer never reached {point} (exit {child.wait()}):\n{tail}")
        child.send_signal(signal.SIGKILL)
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(timeout=10)
        assert child.stdin is not None and child.stderr is not None
        child.stdin.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def _assert_consistent(installer: Installer, machine: SimulatedMachine, image: bytes) -> None:
    status = installer.slots.boot_status()
    slot_file = machine.directory / f"slot-{status.next_slot}.img"
    expected = image if status.next_slot == "b" else FACTORY
    assert hashlib.sha256(slot_file.read_bytes()).digest() == hashlib.sha256(expected).digest()
    assert (machine.directory / "slot-a.img").read_bytes() == FACTORY
    assert status.trial == (status.next_slot == "b" and installer.record().state != State.COMMITTED)


@pytest.fixture
def rig(
    tmp_path: pathlib.Path, image_server: ImageServer, sign: Callable[..., bytes]
) -> Callable[[], tuple[pathlib.Path, pathlib.Path, bytes, Installer, SimulatedMachine]]:
    def build() -> tuple[pathlib.Path, pathlib.Path, bytes, Installer, SimulatedMachine]:
        config_path = _write_config(tmp_path, tmp_path / "vendor.pub.pem")
        state_dir = tmp_path / "state"
        cfg = agent_config.load(config_path, state_dir=state_dir)
        installer, machine = build_installer(cfg)
        assert machine is not None
        (machine.directory / "slot-a.img").write_bytes(FACTORY)
        image = random_image(IMAGE_SIZE)
        image_server.files["/fw.img"] = image
        manifest = tmp_path / "fw.suit"
        manifest.write_bytes(sign(image, 1, image_server.url("/fw.img")))
        return config_path, manifest, image, installer, machine

    return build


def test_every_checkpoint_is_killed_at() -> None:
    assert sorted([*INSTALL_POINTS, *(p for p, _ in HEALTH_POINTS)]) == sorted(CHECKPOINTS)


def test_checkpoints_are_reached_in_order(
    rig: Callable[..., tuple[pathlib.Path, pathlib.Path, bytes, Installer, SimulatedMachine]],
    make_config: Callable[..., object],
) -> None:
    make_config()
    _, manifest, image, installer, machine = rig()
    seen: list[str] = []
    installer.checkpoint = seen.append
    installer.install(manifest.read_bytes())
    assert seen == list(INSTALL_POINTS)
    machine.boot()
    installer.resume()
    del seen[:]
    installer.health(True)
    assert seen == ["committing"]
    _assert_consistent(installer, machine, image)


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_kill_during_install_then_resume(
    rig: Callable[..., tuple[pathlib.Path, pathlib.Path, bytes, Installer, SimulatedMachine]],
    make_config: Callable[..., object],
    image_server: ImageServer,
    point: str,
) -> None:
    make_config()  # writes vendor.pub.pem
    config_path, manifest, image, installer, machine = rig()
    state_dir = machine.directory.parent.parent
    _run_paused(config_path, state_dir, point, "install", str(manifest))
    _assert_consistent(installer, machine, image)
    record, _ = installer.resume()
    assert record.state == State.AWAITING_REBOOT
    _assert_consistent(installer, machine, image)
    if point == "mid-download":
        ranges = [r for p, r in image_server.requests if p == "/fw.img"]
        assert ranges[-1] is not None and ranges[-1].startswith("bytes=")
    machine.boot()
    record, _ = installer.resume()
    assert record.state == State.TRIAL
    record, _ = installer.health(True)
    assert record.state == State.COMMITTED
    _assert_consistent(installer, machine, image)


@pytest.mark.parametrize(("point", "verdict"), HEALTH_POINTS)
def test_kill_during_commit_or_rollback_then_resume(
    rig: Callable[..., tuple[pathlib.Path, pathlib.Path, bytes, Installer, SimulatedMachine]],
    make_config: Callable[..., object],
    point: str,
    verdict: str,
) -> None:
    make_config()
    config_path, manifest, image, installer, machine = rig()
    installer.install(manifest.read_bytes())
    machine.boot()
    installer.resume()
    state_dir = machine.directory.parent.parent
    (config_path.parent / "grace.toml").write_text(
        config_path.read_text() + "health_grace_seconds = 0\n"
    )
    _run_paused(config_path.parent / "grace.toml", state_dir, point, "health", verdict)
    record, _ = installer.resume()
    _assert_consistent(installer, machine, image)
    if verdict == "healthy":
        assert record.state == State.COMMITTED
        assert record.installed_sequence == 1
    else:
        assert record.state == State.ROLLED_BACK
        machine.boot()
        assert machine.booted_slot() == "a"
