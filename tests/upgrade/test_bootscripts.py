"""The shipped boot scripts (config/boot/) against the agent's side of the boot-count contract.

Statically: the scripts use exactly the variables the slot driver reads and
writes (and reference nothing they do not define).  Dynamically: a simulated
board runs them over the real environment (libubootenv, grub-editenv) while
the agent's real installer and driver install, commit and roll back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.upgrade.machine import Decision, State
from agent.upgrade.settings import SlotBackend
from drivers.upgrade.installer import Installer
from drivers.upgrade.service import build_installer
from drivers.upgrade.slots import ENV_NAMES, EnvSlotDriver
from tests.upgrade.boards import GRUB_CFG, UBOOT_ENV_TXT, GrubBoard, UBootBoard
from tests.upgrade.bootscript import Command, For, parse, walk, words_of
from tests.upgrade.conftest import random_image
from tests.upgrade.imageserver import ImageServer
from tests.upgrade.test_bootenv import blank_uboot

# Names the firmware itself gives meaning to; everything else is the contract or local (ea_).
UBOOT_OWN = {"bootcmd", "altbootcmd", "bootargs", "kernel_addr_r", "fdt_addr_r", "fdtfile"}
BOARD_DEFINES = {"kernel_addr_r", "fdt_addr_r", "fdtfile"}
GRUB_OWN = {"root", "default", "timeout", "fallback"}


def uboot_variables(text: str) -> tuple[set[str], set[str]]:
    """(variables used or defined, variables referenced but defined nowhere) of an env file."""
    env = dict(
        line.split("=", 1)
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )
    used, defined = set(env), set(env) | BOARD_DEFINES
    for value in env.values():
        for node in walk(parse(value)):
            for word in words_of(node):
                used |= word.variables()
            if isinstance(node, Command) and node.words[0].literal in ("setenv", "run"):
                names = {w.raw for w in node.words[1:]}
                if node.words[0].literal == "setenv":
                    names = {node.words[1].raw}
                    defined |= names
                used |= names
    return used, used - defined


def grub_variables(text: str) -> tuple[set[str], set[str], set[str], set[str]]:
    """(used, undefined, loaded by load_env, saved by save_env) of a grub.cfg."""
    used: set[str] = set()
    defined: set[str] = set()
    loaded: set[str] = set()
    saved: set[str] = set()
    for node in walk(parse(text)):
        for word in words_of(node):
            used |= word.variables()
        if isinstance(node, For):
            defined.add(node.name)
        if not isinstance(node, Command):
            continue
        command = node.words[0].literal
        args = [w.raw for w in node.words[1:]]
        if command == "set":
            defined.add(args[0].split("=", 1)[0])
        elif command == "load_env":
            loaded |= set(args)
        elif command == "save_env":
            saved |= set(args)
        elif command == "search":
            defined.add(args[2].removeprefix("--set="))
    used |= defined | loaded | saved
    return used, used - defined - loaded, loaded, saved


def _contract(names: set[str], own: set[str]) -> set[str]:
    return {n for n in names if not n.startswith("ea_")} - own


def test_uboot_script_uses_exactly_the_driver_variables() -> None:
    used, undefined = uboot_variables(UBOOT_ENV_TXT.read_text())
    assert _contract(used, UBOOT_OWN) == set(ENV_NAMES)
    assert undefined == set()


def test_grub_script_uses_exactly_the_driver_variables() -> None:
    used, undefined, loaded, saved = grub_variables(GRUB_CFG.read_text())
    assert loaded == set(ENV_NAMES)
    assert saved == set(ENV_NAMES) - {"bootlimit"}  # the limit is the agent's to set
    assert _contract(used, GRUB_OWN) == set(ENV_NAMES)
    assert undefined == set()


def test_the_static_checks_catch_a_misspelt_variable() -> None:
    uboot = UBOOT_ENV_TXT.read_text().replace("${boot_part}", "${bootpart}", 1)
    assert _contract(uboot_variables(uboot)[0], UBOOT_OWN) != set(ENV_NAMES)
    assert uboot_variables(uboot)[1] == {"bootpart"}
    grub = GRUB_CFG.read_text().replace('"${bootcount}" -gt', '"${boot_count}" -gt')
    assert grub_variables(grub)[1] == {"boot_count"}


@dataclasses.dataclass
class Rig:
    config: AgentConfig
    board: UBootBoard | GrubBoard
    installer: Installer

    def boot(self) -> str:
        return self.board.power_on()

    def status(self) -> tuple[str, str, bool]:
        status = self.installer.slots.boot_status()
        return status.booted_slot, status.next_slot, status.trial


@pytest.fixture(params=["uboot", "grub"])
def rig(
    request: pytest.FixtureRequest, make_config: Callable[..., AgentConfig], tmp_path: pathlib.Path
) -> Rig:
    slots = {"slot_a_path": tmp_path / "mmcblk0p2", "slot_b_path": tmp_path / "mmcblk0p3"}
    for path in slots.values():
        path.write_bytes(b"factory image")
    board: UBootBoard | GrubBoard
    if request.param == "uboot":
        env_config, default = blank_uboot(tmp_path)
        config = make_config(
            slot_backend=SlotBackend.UBOOT,
            uboot_env_config=env_config,
            uboot_default_env=default,
            health_grace_seconds=0,
            **slots,
        )
        board = UBootBoard(env_config, default)
    else:
        config = make_config(
            slot_backend=SlotBackend.GRUB,
            grub_env_path=tmp_path / "grubenv",
            health_grace_seconds=0,
            **slots,
        )
        board = GrubBoard(tmp_path / "grubenv")
    installer, _ = build_installer(config)
    driver = installer.slots
    assert isinstance(driver, EnvSlotDriver)
    driver._boot_id = board.boot_id
    driver._booted_slot = board.booted_slot
    return Rig(config, board, installer)


def _install(rig: Rig, server: ImageServer, sign: Callable[..., bytes]) -> bytes:
    image = random_image(40_000)
    server.files["/fw.img"] = image
    record = rig.installer.install(sign(image, 3, server.url("/fw.img")))
    assert record.state == State.AWAITING_REBOOT
    return image


def test_fresh_board_boots_slot_a_and_the_agent_agrees(rig: Rig) -> None:
    assert rig.boot() == "a"
    assert rig.status() == ("a", "a", False)
    record, decision = rig.installer.resume()
    assert (record.state, decision) == (State.IDLE, Decision.NOTHING)


def test_healthy_trial_is_committed_and_stays(
    rig: Rig, image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    rig.boot()
    image = _install(rig, image_server, sign)
    assert rig.status() == ("a", "b", True)
    slot_b = rig.config.upgrade.slot_b_path
    assert slot_b is not None and hashlib.sha256(slot_b.read_bytes()).digest() == (
        hashlib.sha256(image).digest()
    )
    assert rig.boot() == "b"
    record, decision = rig.installer.resume()
    assert (record.state, decision) == (State.TRIAL, Decision.CHECK_HEALTH)
    assert rig.installer.slots.boot_status().bootcount == 1
    record, _ = rig.installer.health(True)
    assert record.state == State.COMMITTED and record.installed_sequence == 3
    for _ in range(rig.config.upgrade.boot_limit + 2):
        assert rig.boot() == "b"
        assert rig.status() == ("b", "b", False)
    assert rig.installer.resume()[0].state == State.COMMITTED


def test_unhealthy_trial_is_rolled_back_by_the_agent(
    rig: Rig, image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    rig.boot()
    _install(rig, image_server, sign)
    assert rig.boot() == "b"
    rig.installer.resume()
    record, decision = rig.installer.health(False)
    assert (record.state, decision) == (State.ROLLED_BACK, Decision.ROLLBACK)
    assert record.failed_sequences == (3,)
    assert rig.status() == ("b", "a", False)
    assert rig.boot() == "a"
    assert rig.status() == ("a", "a", False)
    assert rig.installer.resume()[0].state == State.ROLLED_BACK


def test_image_that_never_comes_up_falls_back_after_the_boot_limit(
    rig: Rig, image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    rig.boot()
    _install(rig, image_server, sign)
    limit = rig.config.upgrade.boot_limit
    # The new image boots but the agent never gets up to confirm it.
    assert [rig.boot() for _ in range(limit)] == ["b"] * limit
    assert rig.installer.slots.boot_status().bootcount == limit
    assert rig.boot() == "a"
    assert rig.status() == ("a", "a", False)
    record, _ = rig.installer.resume()
    assert record.state == State.ROLLED_BACK
    assert "fell back" in record.reason and 3 in record.failed_sequences


def test_kernel_that_does_not_load_falls_back_and_the_agent_ends_the_trial(
    rig: Rig, image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    rig.boot()
    _install(rig, image_server, sign)
    rig.board.broken.add("b")
    assert rig.boot() == "a"  # U-Boot resets until the limit; GRUB takes its fallback entry
    record, _ = rig.installer.resume()
    assert record.state == State.ROLLED_BACK and 3 in record.failed_sequences
    assert rig.status() == ("a", "a", False)
    assert rig.boot() == "a"
    assert rig.status() == ("a", "a", False)
