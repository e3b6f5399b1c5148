"""Bootloader environments: a JSON file (tests, ``make run``), U-Boot and GRUB.

Variables follow the U-Boot bootcount convention: ``boot_part`` (a|b) is what
the bootloader starts, ``upgrade_available=1`` puts it on trial so the
bootloader increments ``bootcount`` each boot and, past ``bootlimit``, switches
``boot_part`` back (``altbootcmd``) and clears ``upgrade_available``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DecodeError, DeviceIOError, DeviceTimeoutError

MAX_ENV_BYTES = 128 * 1024
TIMEOUT_SECONDS = 20.0


class BootEnv(Protocol):
    def read(self, names: Sequence[str]) -> dict[str, str]:
        """Values of ``names`` that are set."""
        ...

    def write(self, values: Mapping[str, str | None]) -> None:
        """Set (or with None, unset) all ``values`` in one atomic update."""
        ...


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
        env = self._all()
        for name, value in values.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        write_atomic(self.path, json.dumps(env, sort_keys=True).encode())


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
        detail = done.stderr.decode("utf-8", "replace").strip()[:200]
        raise DeviceIOError(f"{argv[0]} failed ({done.returncode}): {detail}")
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
    """``fw_printenv``/``fw_setenv``; a ``-s`` script updates all variables in one write."""

    def __init__(self, config: pathlib.Path | None = None) -> None:
        self.config_args = ["-c", str(config)] if config else []

    def read(self, names: Sequence[str]) -> dict[str, str]:
        # fw_printenv exits non-zero if one name is unset, so read everything.
        return _parse_lines(_run(["fw_printenv", *self.config_args]), names)

    def write(self, values: Mapping[str, str | None]) -> None:
        script = "".join(
            f"{name}\n" if value is None else f"{name} {value}\n" for name, value in values.items()
        )
        with tempfile.NamedTemporaryFile("w", prefix="fw_setenv.", suffix=".txt") as handle:
            handle.write(script)
            handle.flush()
            _run(["fw_setenv", *self.config_args, "-s", handle.name])


class GrubEnv:
    """``grub-editenv FILE list|set|unset`` on the GRUB environment block."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def read(self, names: Sequence[str]) -> dict[str, str]:
        return _parse_lines(_run(["grub-editenv", str(self.path), "list"]), names)

    def write(self, values: Mapping[str, str | None]) -> None:
        # grub-editenv rewrites the 1 KiB block in place, one command per call.
        to_set = [f"{k}={v}" for k, v in values.items() if v is not None]
        to_unset = [k for k, v in values.items() if v is None]
        if to_set:
            _run(["grub-editenv", str(self.path), "set", *to_set])
        if to_unset:
            _run(["grub-editenv", str(self.path), "unset", *to_unset])
