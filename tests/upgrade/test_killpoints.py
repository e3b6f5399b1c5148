"""SIGKILL the real installer process at every persisted step, restart, and check consistency.

The installer runs as ``python -m drivers upgrade apply`` (or the post-boot
commit/rollback in a ``python -c`` child); ``EDGE_AGENT_UPGRADE_PAUSE_AT``
parks it at a named point, the test SIGKILLs it there, then resumes in-process
and asserts that the bootloader points at a slot holding a verified image.
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
from drivers.upgrade.installer import PAUSE_ENV, Installer
from drivers.upgrade.service import build_installer
from drivers.upgrade.slots import SimulatedMachine
from tests.upgrade.conftest import HARDWARE_CLASS, VENDOR_DOMAIN, random_image
from tests.upgrade.imageserver import ImageServer

REPO = pathlib.Path(__file__).resolve().parents[2]
FACTORY = b"factory image in slot a"
IMAGE_SIZE = 6 * 1024 * 1024  # > one progress checkpoint, so "mid-download" is reachable


def _write_config(tmp_path: pathlib.Path, pub: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[device]\nhardware_class = "{HARDWARE_CLASS}"\n'
        f'[upgrade]\ntrusted_keys = ["{pub}"]\nvendor_domain = "{VENDOR_DOMAIN}"\n'
        'auto_install_models = ["edge-cam-1"]\nio_timeout_seconds = 5.0\n'
    )
    return path


def _run_paused(argv: list[str], point: str) -> None:
    env = {**os.environ, PAUSE_ENV: point, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, child.kill)  # never hang the suite on a missed marker
    watchdog.start()
    try:
        assert child.stderr is not None
        for line in child.stderr:
            if f"PAUSED {point}" in line:  # may follow a progress bar's "\r" on one line
                break
        else:
            pytest.fail(f"installer never reached {point} (exit {child.wait()})")
        child.send_signal(signal.SIGKILL)
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(timeout=10)
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


@pytest.mark.parametrize(
    "point", ["downloading", "mid-download", "installing", "marked", "awaiting-reboot"]
)
def test_kill_during_install_then_resume(
    rig: Callable[..., tuple[pathlib.Path, pathlib.Path, bytes, Installer, SimulatedMachine]],
    make_config: Callable[..., object],
    image_server: ImageServer,
    point: str,
) -> None:
    make_config()  # writes vendor.pub.pem
    config_path, manifest, image, installer, machine = rig()
    state_dir = machine.directory.parent.parent
    _run_paused(
        [
            sys.executable,
            "-m",
            "drivers",
            "upgrade",
            "apply",
            "--config",
            str(config_path),
            "--state-dir",
            str(state_dir),
            "--manifest",
            str(manifest),
        ],
        point,
    )
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


HEALTH_CHILD = """
import pathlib, sys
from agent import config
from drivers.upgrade.service import build_installer
cfg = config.load(pathlib.Path(sys.argv[1]), state_dir=pathlib.Path(sys.argv[2]))
installer, _ = build_installer(cfg)
installer.health(sys.argv[3] == "healthy")
"""


@pytest.mark.parametrize(
    ("point", "verdict"), [("committing", "healthy"), ("rolling-back", "unhealthy")]
)
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
    _run_paused(
        [
            sys.executable,
            "-c",
            HEALTH_CHILD,
            str(config_path.parent / "grace.toml"),
            str(state_dir),
            verdict,
        ],
        point,
    )
    record, _ = installer.resume()
    _assert_consistent(installer, machine, image)
    if verdict == "healthy":
        assert record.state == State.COMMITTED
        assert record.installed_sequence == 1
    else:
        assert record.state == State.ROLLED_BACK
        machine.boot()
        assert machine.booted_slot() == "a"
