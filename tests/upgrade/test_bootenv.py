"""The U-Boot and GRUB environment drivers against the real tools.

libubootenv's ``fw_printenv``/``fw_setenv`` (Debian ``libubootenv-tool``) and
``grub-editenv`` (``grub-common``) on environment images the tests create:
a blank (erased) U-Boot env area, single or redundant, whose default
environment is the shipped ``config/boot/uboot-env.txt``; a GRUB block.
``make test`` installs the tools.
"""

from __future__ import annotations

import logging
import pathlib
import time
import zlib
from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.errors import DecodeError, DeviceIOError
from agent.layout import StateLayout
from agent.upgrade.settings import SlotBackend
from drivers.upgrade.bootenv import BootEnvWriteError, GrubEnv, UBootEnv
from drivers.upgrade.service import build_service
from drivers.upgrade.slots import ENV_NAMES
from tests.upgrade.boards import BOARD_ENV, UBOOT_ENV_TXT

ENV_SIZE = 0x4000


def blank_uboot(tmp_path: pathlib.Path, copies: int = 1) -> tuple[pathlib.Path, pathlib.Path]:
    """An erased env area (``copies`` = 2: redundant env) and its board default env."""
    lines = []
    for n in range(copies):
        device = tmp_path / f"uboot-env{n}.img"
        device.write_bytes(b"\xff" * ENV_SIZE)  # erased flash
        lines.append(f"{device} 0x0 {ENV_SIZE:#x}")
    config = tmp_path / "fw_env.config"
    config.write_text("# device offset size\n" + "\n".join(lines) + "\n")
    default = tmp_path / "u-boot-initial-env"
    default.write_text(BOARD_ENV + UBOOT_ENV_TXT.read_text())
    return config, default


def _raw_uboot(device: pathlib.Path, redundant: bool) -> tuple[dict[str, str], int | None]:
    """What U-Boot itself reads: CRC32 over the data, then NUL-separated name=value."""
    block = device.read_bytes()
    data = block[5:] if redundant else block[4:]
    if zlib.crc32(data) != int.from_bytes(block[:4], "little"):
        return {}, None
    entries = data.split(b"\0\0")[0].split(b"\0")
    env = dict(e.decode().split("=", 1) for e in entries if e)
    return env, block[4] if redundant else None


@pytest.mark.parametrize("copies", [1, 2], ids=["single", "redundant"])
def test_blank_uboot_env_reads_its_default_and_stores_what_uboot_reads(
    tmp_path: pathlib.Path, copies: int
) -> None:
    config, default = blank_uboot(tmp_path, copies)
    env = UBootEnv(config, default)
    assert env.read(ENV_NAMES) == {
        "boot_part": "a",
        "upgrade_available": "0",
        "bootcount": "0",
        "bootlimit": "3",
    }
    env.write({"boot_part": "b", "upgrade_available": "1", "bootcount": "0", "bootlimit": "5"})
    env.write({"bootcount": None, "note": "two words = fine"})
    assert env.read([*ENV_NAMES, "note"]) == {
        "boot_part": "b",
        "upgrade_available": "1",
        "bootlimit": "5",
        "note": "two words = fine",
    }
    devices = sorted(tmp_path.glob("uboot-env*.img"))
    stored = [_raw_uboot(d, copies == 2) for d in devices]
    valid = [(env, flag) for env, flag in stored if env]
    assert valid, "no copy with a valid CRC"
    newest = max(valid, key=lambda pair: pair[1] or 0)[0]
    assert newest["boot_part"] == "b" and "bootcount" not in newest
    # The first write stored the whole default environment, boot scripts included.
    assert newest["bootcmd"] == "run ea_boot; reset"
    assert newest["kernel_addr_r"] == "0x40400000"


def test_blank_uboot_env_without_a_default_is_one_clear_error(tmp_path: pathlib.Path) -> None:
    config, _ = blank_uboot(tmp_path)
    env = UBootEnv(config, tmp_path / "no-such-default-env")
    with pytest.raises(DeviceIOError) as caught:
        env.read(ENV_NAMES)
    message = str(caught.value)
    assert "\n" not in message
    assert "fw_printenv failed" in message and "uboot_default_env" in message
    with pytest.raises(DeviceIOError, match="uboot_default_env"):
        env.write({"boot_part": "b"})
    assert (tmp_path / "uboot-env0.img").read_bytes() == b"\xff" * ENV_SIZE


def test_missing_uboot_env_device_is_one_clear_error(tmp_path: pathlib.Path) -> None:
    config, default = blank_uboot(tmp_path)
    (tmp_path / "uboot-env0.img").unlink()
    with pytest.raises(DeviceIOError, match="its device exists") as caught:
        UBootEnv(config, default).read(ENV_NAMES)
    assert str(config) in str(caught.value)


def test_uboot_write_that_does_not_take_is_an_error_not_silence(tmp_path: pathlib.Path) -> None:
    # libubootenv reads script lines into a fixed buffer: a longer value is cut
    # (and the rest ignored), exit status 0.  The read-back catches it.
    config, default = blank_uboot(tmp_path)
    env = UBootEnv(config, default)
    with pytest.raises(BootEnvWriteError, match="note is 'xxx") as caught:
        env.write({"boot_part": "b", "note": "x" * 2000})
    assert "did not take" in str(caught.value)
    assert len(env.read(["note"])["note"]) < 2000


def test_grub_env_set_and_unset_are_one_atomic_block(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "grubenv"
    env = GrubEnv(path)
    assert env.read(ENV_NAMES) == {}
    env.write({"boot_part": "b", "upgrade_available": "1", "bootcount": "0", "bootlimit": "3"})
    path.chmod(0o640)
    inode = path.stat().st_ino
    env.write({"upgrade_available": None, "bootcount": "2", "note": "two words"})
    assert env.read([*ENV_NAMES, "note"]) == {
        "boot_part": "b",
        "bootcount": "2",
        "bootlimit": "3",
        "note": "two words",
    }
    block = path.read_bytes()
    assert len(block) == 1024 and block.startswith(b"# GRUB Environment Block\n")
    assert block.rstrip(b"#").endswith(b"\nnote=two words\n")
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["grubenv"]


def test_damaged_grub_env_is_one_clear_error_and_is_left_alone(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "grubenv"
    path.write_bytes(b"\0" * 1024)
    env = GrubEnv(path)
    with pytest.raises(DeviceIOError, match="invalid environment block") as caught:
        env.read(ENV_NAMES)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(DeviceIOError, match="invalid environment block"):
        env.write({"boot_part": "b"})
    assert path.read_bytes() == b"\0" * 1024


@pytest.mark.parametrize(
    "values",
    [{"boot part": "b"}, {"boot_part=": "b"}, {"": "b"}, {"boot_part": "b\nbootcmd=reset"}],
)
def test_names_and_values_a_line_cannot_hold_are_refused_before_writing(
    tmp_path: pathlib.Path, values: dict[str, str]
) -> None:
    config, default = blank_uboot(tmp_path)
    for env in (UBootEnv(config, default), GrubEnv(tmp_path / "grubenv")):
        with pytest.raises(DecodeError):
            env.write(values)
    assert (tmp_path / "uboot-env0.img").read_bytes() == b"\xff" * ENV_SIZE
    assert not (tmp_path / "grubenv").exists()


def test_agent_with_an_unreadable_uboot_env_keeps_the_damaged_state_and_says_why_once(
    tmp_path: pathlib.Path,
    make_config: Callable[..., AgentConfig],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two faults at once: a damaged upgrade state and a boot environment that
    # cannot be read.  The rebuild needs the latter, so the state file stays put
    # (nothing is lost) and the service reports the cause without crashing its tick.
    env_config, _ = blank_uboot(tmp_path)
    slots = {"slot_a_path": tmp_path / "p2", "slot_b_path": tmp_path / "p3"}
    config = make_config(
        slot_backend=SlotBackend.UBOOT,
        uboot_env_config=env_config,
        uboot_default_env=tmp_path / "no-such-default-env",
        **slots,
    )
    state = StateLayout(config.state_dir).upgrade_state
    state.parent.mkdir(parents=True)
    state.write_bytes(b"{ damaged")
    service = build_service(config, lambda: True)
    service.start()
    service.wait()
    with caplog.at_level(logging.WARNING, logger="drivers.upgrade"):
        for _ in range(5):
            assert service.tick(time.time()) == []
    assert "uboot_default_env" in service.last_error
    warnings = [r for r in caplog.records if "uboot_default_env" in r.getMessage()]
    assert len(warnings) == 1
    assert state.read_bytes() == b"{ damaged"
