"""Simulated boards that boot by running the shipped ``config/boot/`` scripts.

The environments are real: a U-Boot env image read and written with
libubootenv's ``fw_printenv``/``fw_setenv``, a GRUB environment block with
``grub-editenv`` -- the same files the agent's drivers use.  What a board adds
is the firmware logic around the scripts, modelled on the sources:

* U-Boot with ``CONFIG_BOOTCOUNT_LIMIT`` and ``CONFIG_BOOTCOUNT_ENV``:
  ``bootcount_inc()`` (include/bootcount.h) and ``bootcount_load/store``
  (drivers/bootcount/bootcount_env.c) count only while ``upgrade_available`` is
  non-zero and save the environment; ``bootdelay_process()`` (common/autoboot.c)
  runs ``altbootcmd`` when ``bootlimit`` is non-zero and ``bootcount > bootlimit``.
* GRUB: grub.cfg runs top to bottom, then the ``default`` menu entry boots; an
  entry whose kernel does not load falls through to ``fallback``; ``save_env``
  cannot create a missing grubenv file.

A board knows which slot each partition (U-Boot) or file-system label (GRUB)
holds and which slots carry a kernel that does not load (``broken``), and it
checks that the kernel command line names the slot actually booted.
"""

from __future__ import annotations

import pathlib
import subprocess
import tempfile

from drivers.upgrade.slots import slot_from_cmdline
from tests.upgrade.bootscript import Builtin, Shell, cmd_test, parse, strtol

REPO = pathlib.Path(__file__).resolve().parents[2]
UBOOT_ENV_TXT = REPO / "config" / "boot" / "uboot-env.txt"
GRUB_CFG = REPO / "config" / "boot" / "grub.cfg"
# What a board's own default environment defines next to the shipped lines.
BOARD_ENV = "kernel_addr_r=0x40400000\nfdt_addr_r=0x4fa00000\nfdtfile=board.dtb\n"


class Booted(Exception):
    def __init__(self, slot: str, cmdline: str) -> None:
        super().__init__(slot)
        self.slot = slot
        self.cmdline = cmdline


class Reset(Exception):
    """The script reset the board."""


def _tool(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, f"{argv[0]}: {done.stderr.strip()}"
    return done.stdout


def _lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Board:
    """What the agent's slot driver asks the firmware: the boot id and the slot that runs."""

    def __init__(self, broken: set[str] | None = None) -> None:
        self.broken = broken or set()
        self.linux_boots = 0
        self.resets = 0
        self.cmdline = ""

    def boot_id(self) -> str:
        return f"linux-boot-{self.linux_boots}"

    def booted_slot(self) -> str | None:
        return slot_from_cmdline(self.cmdline)

    def _booted(self, booted: Booted) -> str:
        assert slot_from_cmdline(booted.cmdline) == booted.slot, (
            f"kernel from slot {booted.slot} got command line {booted.cmdline!r}"
        )
        self.cmdline = booted.cmdline
        self.linux_boots += 1
        return booted.slot


class UBootBoard(Board):
    def __init__(
        self,
        config: pathlib.Path,
        default_env: pathlib.Path,
        partitions: dict[str, str] | None = None,
        broken: set[str] | None = None,
    ) -> None:
        super().__init__(broken)
        self.args = ["-c", str(config), "-f", str(default_env)]
        self.partitions = partitions or {"2": "a", "3": "b"}
        self.loaded: str | None = None

    def environment(self) -> dict[str, str]:
        return _lines(_tool("fw_printenv", *self.args))

    def _saveenv(self, env: dict[str, str]) -> None:
        stored = self.environment()
        script = [f"{k}={v}" for k, v in env.items()] + [f"{k}=" for k in stored if k not in env]
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
            handle.write("\n".join(script) + "\n")
            handle.flush()
            _tool("fw_setenv", *self.args, "-s", handle.name)
        assert self.environment() == {k: v for k, v in env.items() if v}

    def power_on(self, max_resets: int = 50) -> str:
        """Boot until a kernel starts; the slot it came from."""
        for _ in range(max_resets):
            env = self.environment()
            trial = strtol(env.get("upgrade_available", "")) != 0
            count = (strtol(env.get("bootcount", "")) if trial else 0) + 1
            env["bootcount"] = str(count)
            if trial:
                self._saveenv(env)
            limit = strtol(env.get("bootlimit", ""))
            command = "altbootcmd" if limit and count > limit else "bootcmd"
            self.loaded = None
            shell = Shell(env, self._builtins())
            try:
                shell.run(parse(env[command]))
            except Booted as booted:
                return self._booted(booted)
            except Reset:
                self.resets += 1
                continue
            raise AssertionError(f"{command} returned to the prompt without booting")
        raise AssertionError(f"still resetting after {max_resets} boots")

    def _builtins(self) -> dict[str, Builtin]:
        def setenv(shell: Shell, argv: list[str]) -> int:
            if len(argv) == 2:
                shell.variables.pop(argv[1], None)
            else:
                shell.variables[argv[1]] = " ".join(argv[2:])
            return 0

        def run(shell: Shell, argv: list[str]) -> int:
            for name in argv[1:]:
                text = shell.variables.get(name)
                if text is None or shell.run(parse(text)) != 0:
                    return 1
            return 0

        def saveenv(shell: Shell, argv: list[str]) -> int:
            self._saveenv(shell.variables)
            return 0

        def load(shell: Shell, argv: list[str]) -> int:
            assert len(argv) == 5 and argv[1] == "mmc", f"load {argv[1:]}"
            device, _, part = argv[2].partition(":")
            assert device == "0" and argv[3].startswith("0x"), f"load {argv[1:]}"
            slot = self.partitions.get(part)
            if slot is None or slot in self.broken:
                return 1
            self.loaded = slot
            return 0

        def booti(shell: Shell, argv: list[str]) -> int:
            if self.loaded is None:
                return 1
            raise Booted(self.loaded, shell.variables.get("bootargs", ""))

        def reset(shell: Shell, argv: list[str]) -> int:
            raise Reset

        return {
            "setenv": setenv,
            "run": run,
            "saveenv": saveenv,
            "test": cmd_test,
            "load": load,
            "booti": booti,
            "reset": reset,
            "echo": lambda shell, argv: 0,
        }


class GrubBoard(Board):
    def __init__(
        self,
        grubenv: pathlib.Path,
        labels: dict[str, str] | None = None,
        broken: set[str] | None = None,
    ) -> None:
        super().__init__(broken)
        self.grubenv = grubenv
        self.labels = labels or {"rootfs_a": "a", "rootfs_b": "b"}
        self.kernel: str | None = None
        self.kernel_cmdline = ""
        self.entry_failed = False

    def environment(self) -> dict[str, str]:
        return _lines(_tool("grub-editenv", str(self.grubenv), "list"))

    def power_on(self) -> str:
        shell = Shell({}, self._builtins())
        shell.run(parse(GRUB_CFG.read_text()))
        order = [strtol(shell.variables.get("default", "0"))]
        if shell.variables.get("fallback"):
            order.append(strtol(shell.variables["fallback"]))
        for index in order:
            self.kernel, self.entry_failed = None, False
            shell.variables.pop("root", None)
            shell.run(shell.entries[index].body)
            if self.kernel is not None and not self.entry_failed:
                return self._booted(Booted(self.kernel, self.kernel_cmdline))
        raise AssertionError("no menu entry booted")

    def _builtins(self) -> dict[str, Builtin]:
        def set_(shell: Shell, argv: list[str]) -> int:
            assert len(argv) == 2 and "=" in argv[1], f"set {argv[1:]}"
            name, _, value = argv[1].partition("=")
            shell.variables[name] = value
            return 0

        def load_env(shell: Shell, argv: list[str]) -> int:
            done = subprocess.run(
                ["grub-editenv", str(self.grubenv), "list"], capture_output=True, text=True
            )
            if done.returncode != 0 or not self.grubenv.exists():
                return 1  # GRUB prints the error and carries on
            for name, value in _lines(done.stdout).items():
                if name in argv[1:]:
                    shell.variables[name] = value
            return 0

        def save_env(shell: Shell, argv: list[str]) -> int:
            if not self.grubenv.exists():
                return 1
            names = argv[1:]
            to_set = [f"{n}={shell.variables[n]}" for n in names if n in shell.variables]
            to_unset = [n for n in names if n not in shell.variables]
            if to_set:
                _tool("grub-editenv", str(self.grubenv), "set", *to_set)
            if to_unset:
                _tool("grub-editenv", str(self.grubenv), "unset", *to_unset)
            return 0

        def search(shell: Shell, argv: list[str]) -> int:
            assert argv[1:4] == ["--no-floppy", "--label", "--set=root"], f"search {argv[1:]}"
            if argv[4] not in self.labels:
                return 1
            shell.variables["root"] = argv[4]
            return 0

        def linux(shell: Shell, argv: list[str]) -> int:
            slot = self.labels.get(shell.variables.get("root", ""))
            if slot is None or slot in self.broken:
                self.entry_failed = True
                return 1
            self.kernel = slot
            self.kernel_cmdline = " ".join(argv[2:])
            return 0

        def initrd(shell: Shell, argv: list[str]) -> int:
            if self.kernel is None:
                self.entry_failed = True
                return 1
            return 0

        return {
            "set": set_,
            "load_env": load_env,
            "save_env": save_env,
            "[": cmd_test,
            "test": cmd_test,
            "search": search,
            "linux": linux,
            "initrd": initrd,
            "echo": lambda shell, argv: 0,
        }
