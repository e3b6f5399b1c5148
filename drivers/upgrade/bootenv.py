"""Bootloader environments: a JSON file (tests, ``make run``), U-Boot and GRUB.

Variables follow the U-Boot bootcount convention: ``boot_part`` (a|b) is what
the bootloader starts, ``upgrade_available=1`` puts it on trial so the
bootloader increments ``bootcount`` each boot and, past ``bootlimit``, switches
``boot_part`` back (``altbootcmd``) and clears ``upgrade_available``.  The
bootloader side of that contract is in ``config/boot/``.

Every write is read back: a tool that exits 0 without storing what it was
given (libubootenv ignores script lines it cannot parse and cuts long values)
is a :class:`BootEnvWriteError`, never a silent no-op.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DecodeError, DeviceIOError, DeviceTimeoutError

MAX_ENV_BYTES = 128 * 1024
TIMEOUT_SECONDS = 20.0
DEFAULT_UBOOT_CONFIG = pathlib.Path("/etc/fw_env.config")


class BootEnvWriteError(DeviceIOError):
    """The tool reported success but the environment does not hold what was written."""


class BootEnv(Protocol):
    def read(self, names: Sequence[str]) -> dict[str, str]:
        """Values of ``names`` that are set."""
        ...

    def write(self, values: Mapping[str, str | None]) -> None:
        """Set (or with None or "", unset) all ``values``, then read them back.

        Raises :class:`BootEnvWriteError` if the environment does not hold them.
        """
        ...


def check_values(values: Mapping[str, str | None]) -> None:
    """Refuse names and values no bootloader environment can hold as one line."""
    for name, value in values.items():
        if not name or any(c in name for c in "= \t\n\r\0"):
            raise DecodeError(f"boot environment name {name[:40]!r} is not valid")
        if value is not None and any(c in value for c in "\n\r\0"):
            raise DecodeError(f"boot environment value of {name} must be one line")


def verify_written(
    read: Callable[[Sequence[str]], dict[str, str]], values: Mapping[str, str | None], where: str
) -> None:
    """Read ``values`` back; raise BootEnvWriteError naming the first one that did not take."""
    stored = read(list(values))
    for name, wanted in values.items():
        got = stored.get(name)
        if (wanted or None) != got:
            shown = "unset" if got is None else repr(got[:40])
            goal = "unset" if not wanted else repr(wanted[:40])
            raise BootEnvWriteError(
                f"{where}: the write did not take: {name} is {shown} after setting it to {goal}"
            )


class JsonBootEnv:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def _all(self) -> dict[str, str]:
        raw = read_optional(self.path, MAX_ENV_BYTES)
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise DecodeError(f"{self.path}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DecodeError(f"{self.path}: not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def read(self, names: Sequence[str]) -> dict[str, str]:
        env = self._all()
        return {n: env[n] for n in names if n in env}

    def write(self, values: Mapping[str, str | None]) -> None:
        check_values(values)
        env = self._all()
        for name, value in values.items():
            if value:
                env[name] = value
            else:
                env.pop(name, None)
        write_atomic(self.path, json.dumps(env, sort_keys=True).encode())
        verify_written(self.read, values, str(self.path))


def _run(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=TIMEOUT_SECONDS, check=False)
    except FileNotFoundError as exc:
        raise DeviceIOError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise DeviceTimeoutError(f"{argv[0]} did not finish in {TIMEOUT_SECONDS} s") from exc
    except OSError as exc:
        raise DeviceIOError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = "; ".join(dict.fromkeys(line.strip() for line in lines if line.strip()))
        raise DeviceIOError(f"{argv[0]} failed (exit {done.returncode}): {detail[:200]}")
    return done.stdout.decode("utf-8", "replace")


def _parse_lines(text: str, names: Sequence[str]) -> dict[str, str]:
    wanted = set(names)
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in wanted:
            values[name] = value
    return values


class UBootEnv:
    """libubootenv's ``fw_printenv``/``fw_setenv``; one ``-s`` script updates all variables.

    ``config`` is the fw_env.config (``-c``; None = /etc/fw_env.config).
    ``default_env`` (``-f``; None = the tool's /etc/u-boot-initial-env) is what a
    blank or damaged environment reads as, and what the first write starts from:
    it must be the board's U-Boot default environment, since U-Boot stops using
    its built-in one once a valid environment is stored.
    """

    def __init__(
        self, config: pathlib.Path | None = None, default_env: pathlib.Path | None = None
    ) -> None:
        self.where = f"U-Boot environment ({config or DEFAULT_UBOOT_CONFIG})"
        self.args = [
            *(["-c", str(config)] if config else []),
            *(["-f", str(default_env)] if default_env else []),
        ]

    def _tool(self, argv: Sequence[str]) -> str:
        try:
            return _run(argv)
        except DeviceIOError as exc:
            hint = ""
            if "default environment" in str(exc):
                hint = (
                    "; it is blank or damaged and there is no default environment "
                    "(set upgrade.uboot_default_env or install /etc/u-boot-initial-env)"
                )
            elif "Configuration file wrong" in str(exc):
                hint = "; check the config file and that its device exists"
            raise type(exc)(f"{self.where}: {exc}{hint}") from exc

    def read(self, names: Sequence[str]) -> dict[str, str]:
        # fw_printenv exits non-zero if one name is unset, so read everything.
        return _parse_lines(self._tool(["fw_printenv", *self.args]), names)

    def write(self, values: Mapping[str, str | None]) -> None:
        check_values(values)
        # libubootenv reads "name=value" lines; "name=" unsets; other lines are ignored.
        script = "".join(f"{name}={value or ''}\n" for name, value in values.items())
        with tempfile.NamedTemporaryFile("w", prefix="fw_setenv.", suffix=".txt") as handle:
            handle.write(script)
            handle.flush()
            self._tool(["fw_setenv", *self.args, "-s", handle.name])
        verify_written(self.read, values, self.where)


class GrubEnv:
    """``grub-editenv FILE list|set|unset`` on the GRUB environment block.

    grub-editenv rewrites the file in place and takes set and unset as two
    calls; the driver runs it on a copy and renames the result over ``path``,
    so the block is updated as a whole or not at all.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.where = f"GRUB environment ({path})"

    def read(self, names: Sequence[str]) -> dict[str, str]:
        try:
            return _parse_lines(_run(["grub-editenv", str(self.path), "list"]), names)
        except DeviceIOError as exc:
            raise type(exc)(f"{self.where}: {exc}") from exc

    def write(self, values: Mapping[str, str | None]) -> None:
        check_values(values)
        to_set = [f"{k}={v}" for k, v in values.items() if v]
        to_unset = [k for k, v in values.items() if not v]
        current = read_optional(self.path, MAX_ENV_BYTES)
        with tempfile.TemporaryDirectory(prefix="grubenv.") as scratch:
            work = pathlib.Path(scratch) / "grubenv"
            if current is not None:
                work.write_bytes(current)
            try:
                if to_set:
                    _run(["grub-editenv", str(work), "set", *to_set])
                if to_unset:
                    _run(["grub-editenv", str(work), "unset", *to_unset])
            except DeviceIOError as exc:
                raise type(exc)(f"{self.where}: {exc}") from exc
            block = work.read_bytes()
        mode = self.path.stat().st_mode & 0o777 if current is not None else 0o644
        write_atomic(self.path, block, mode)
        verify_written(self.read, values, self.where)
