"""U-Boot and GRUB environments through fake fw_printenv/fw_setenv/grub-editenv on PATH.

The fakes implement the real on-disk formats (CRC32-prefixed U-Boot block,
1 KiB GRUB block) so the tests also check what a bootloader would read.
"""

from __future__ import annotations

import hashlib
import pathlib
import zlib
from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.upgrade.machine import Decision, State
from agent.upgrade.ports import other_slot
from drivers.upgrade.bootenv import GrubEnv, UBootEnv
from drivers.upgrade.installer import Installer
from drivers.upgrade.service import build_installer
from drivers.upgrade.slots import ENV_NAMES, EnvSlotDriver
from tests.upgrade.conftest import random_image
from tests.upgrade.imageserver import ImageServer

FAKEBIN = pathlib.Path(__file__).resolve().parent / "fakebin"
ENV_SIZE = 0x4000


@pytest.fixture(autouse=True)
def fake_tools_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKEBIN}:{__import__('os').environ['PATH']}")


@pytest.fixture
def uboot_config(tmp_path: pathlib.Path) -> pathlib.Path:
    config = tmp_path / "fw_env.config"
    config.write_text(f"# device offset size\n{tmp_path / 'uboot.env'} 0x0 {ENV_SIZE:#x}\n")
    return config


def _raw_uboot(path: pathlib.Path) -> dict[str, str]:
    block = path.read_bytes()
    assert zlib.crc32(block[4:ENV_SIZE]) == int.from_bytes(block[:4], "little")
    entries = block[4:].split(b"\0\0")[0].split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if e)


def test_uboot_env_round_trip_in_real_format(
    uboot_config: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    env = UBootEnv(uboot_config)
    assert env.read(ENV_NAMES) == {}
    env.write({"boot_part": "b", "upgrade_available": "1", "bootcount": "0"})
    env.write({"bootcount": None, "note": "two words"})
    assert env.read([*ENV_NAMES, "note"]) == {
        "boot_part": "b",
        "upgrade_available": "1",
        "note": "two words",
    }
    assert _raw_uboot(tmp_path / "uboot.env")["boot_part"] == "b"


def test_grub_env_round_trip_in_real_format(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "grubenv"
    env = GrubEnv(path)
    env.write({"boot_part": "a", "upgrade_available": "1"})
    env.write({"upgrade_available": None, "bootcount": "2"})
    assert env.read(ENV_NAMES) == {"boot_part": "a", "bootcount": "2"}
    block = path.read_bytes()
    assert len(block) == 1024
    assert block.startswith(b"# GRUB Environment Block\nboot_part=a\n")


class _Device:
    """Firmware stand-in for real-env backends: U-Boot's bootcount rules over the env."""

    def __init__(self, driver: EnvSlotDriver) -> None:
        self.driver = driver
        self.boots = 0
        self.running = "a"

    def boot_id(self) -> str:
        return f"boot-{self.boots}"

    def booted(self) -> str:
        return self.running

    def reboot(self) -> None:
        env = self.driver.env.read(ENV_NAMES)
        slot = env.get("boot_part", "a")
        if env.get("upgrade_available") == "1":
            count = int(env.get("bootcount", "0")) + 1
            if count > int(env.get("bootlimit", "3")):
                slot = other_slot(slot)
                self.driver.env.write({"boot_part": slot, "upgrade_available": "0"})
            else:
                self.driver.env.write({"bootcount": str(count)})
        self.boots += 1
        self.running = slot


def _installed(
    config: AgentConfig, server: ImageServer, sign: Callable[..., bytes], size: int
) -> tuple[Installer, _Device, bytes]:
    """An installer on ``config`` that has just installed a ``size``-byte image into slot b."""
    installer, device = _installer(config)
    image = random_image(size)
    server.files["/fw.img"] = image
    installer.install(sign(image, 3, server.url("/fw.img")))
    return installer, device, image


def _installer(config: AgentConfig) -> tuple[Installer, _Device]:
    installer, _ = build_installer(config)
    driver = installer.slots
    assert isinstance(driver, EnvSlotDriver)
    device = _Device(driver)
    driver._boot_id = device.boot_id
    driver._booted_slot = device.booted
    return installer, device


@pytest.fixture(params=["uboot", "grub"])
def backend_config(
    request: pytest.FixtureRequest,
    make_config: Callable[..., AgentConfig],
    tmp_path: pathlib.Path,
    uboot_config: pathlib.Path,
) -> AgentConfig:
    from agent.upgrade.settings import SlotBackend

    slots = {"slot_a_path": tmp_path / "mmcblk0p2", "slot_b_path": tmp_path / "mmcblk0p3"}
    for path in slots.values():
        path.write_bytes(b"factory image")
    if request.param == "uboot":
        return make_config(slot_backend=SlotBackend.UBOOT, uboot_env_config=uboot_config, **slots)
    return make_config(slot_backend=SlotBackend.GRUB, grub_env_path=tmp_path / "grubenv", **slots)


def test_install_commit_through_bootloader_env(
    backend_config: AgentConfig, image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    installer, device, image = _installed(backend_config, image_server, sign, 64_000)
    status = installer.slots.boot_status()
    assert (status.next_slot, status.trial) == ("b", True)
    assert backend_config.upgrade.slot_b_path is not None
    assert hashlib.sha256(backend_config.upgrade.slot_b_path.read_bytes()).digest() == (
        hashlib.sha256(image).digest()
    )
    device.reboot()
    record, decision = installer.resume()
    assert (record.state, decision) == (State.TRIAL, Decision.CHECK_HEALTH)
    record, _ = installer.health(True)
    assert record.state == State.COMMITTED
    assert installer.slots.boot_status().trial is False
    device.reboot()
    assert device.running == "b"


def test_unhealthy_trial_rolls_back_through_bootloader_env(
    backend_config: AgentConfig, image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    import dataclasses

    config = dataclasses.replace(
        backend_config, upgrade=dataclasses.replace(backend_config.upgrade, health_grace_seconds=0)
    )
    installer, device, _ = _installed(config, image_server, sign, 10_000)
    device.reboot()
    installer.resume()
    record, decision = installer.health(False)
    assert (record.state, decision) == (State.ROLLED_BACK, Decision.ROLLBACK)
    device.reboot()
    assert device.running == "a"
    assert installer.record().installed_sequence == -1


def test_bootloader_fallback_after_boot_limit_is_recorded_as_rollback(
    backend_config: AgentConfig, image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    installer, device, _ = _installed(backend_config, image_server, sign, 10_000)
    # The new image never gets the agent up: the bootloader counts and falls back.
    for _ in range(backend_config.upgrade.boot_limit + 1):
        device.reboot()
    assert device.running == "a"
    record, _ = installer.resume()
    assert record.state == State.ROLLED_BACK
    assert "fell back" in record.reason
