"""A/B slots: image storage (files or block devices) plus a bootloader environment."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator, Mapping

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DecodeError, DeviceIOError, NotFoundError
from agent.upgrade.ports import SLOTS, BootStatus, other_slot
from drivers.upgrade.bootenv import BootEnv, JsonBootEnv

ENV_NAMES = ("boot_part", "upgrade_available", "bootcount", "bootlimit")


class FileSlotWriter:
    def __init__(self, path: pathlib.Path, offset: int) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            if path.is_file():
                os.ftruncate(self._fd, offset)  # a regular-file slot: drop a stale tail
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise DeviceIOError(f"cannot open slot {path}: {exc.strerror or exc}") from exc

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise DeviceIOError(f"cannot write slot {self.path}: {exc.strerror or exc}") from exc

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise DeviceIOError(f"cannot sync slot {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        os.close(self._fd)


def _proc_boot_id() -> str:
    raw = read_optional(pathlib.Path("/proc/sys/kernel/random/boot_id"), 128)
    return (raw or b"unknown").decode("ascii", "replace").strip()


def slot_from_cmdline(cmdline: str) -> str | None:
    """The slot the bootloader started, from its ``edge_agent.slot=`` kernel argument."""
    for word in cmdline.split():
        if word.startswith("edge_agent.slot="):
            return word.partition("=")[2]
    return None


def _cmdline_slot() -> str | None:
    raw = read_optional(pathlib.Path("/proc/cmdline"), 64 * 1024) or b""
    return slot_from_cmdline(raw.decode("utf-8", "replace"))


class EnvSlotDriver:
    """:class:`agent.upgrade.ports.SlotDriver` over slot paths and a :class:`BootEnv`."""

    def __init__(
        self,
        paths: Mapping[str, pathlib.Path],
        env: BootEnv,
        *,
        boot_limit: int = 3,
        boot_id: Callable[[], str] = _proc_boot_id,
        booted_slot: Callable[[], str | None] = _cmdline_slot,
    ) -> None:
        self.paths = dict(paths)
        self.env = env
        self.boot_limit = boot_limit
        self._boot_id = boot_id
        self._booted_slot = booted_slot

    def _path(self, slot: str) -> pathlib.Path:
        if slot not in self.paths:
            raise NotFoundError(f"no slot {slot!r}")
        return self.paths[slot]

    def boot_status(self) -> BootStatus:
        env = self.env.read(ENV_NAMES)
        next_slot = env.get("boot_part", SLOTS[0])
        if next_slot not in SLOTS:
            raise DecodeError(f"boot_part {next_slot[:20]!r} is not a slot")
        booted = self._booted_slot() or next_slot
        try:
            bootcount = int(env.get("bootcount", "0"))
        except ValueError:
            bootcount = 0
        return BootStatus(
            booted_slot=booted,
            boot_id=self._boot_id(),
            next_slot=next_slot,
            trial=env.get("upgrade_available") == "1",
            bootcount=bootcount,
        )

    def open_writer(self, slot: str, offset: int) -> FileSlotWriter:
        if slot == self.boot_status().booted_slot:
            raise DeviceIOError(f"refusing to write the running slot {slot}")
        return FileSlotWriter(self._path(slot), offset)

    def read(self, slot: str, size: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(slot)
        try:
            with path.open("rb", buffering=0) as handle:
                left = size
                while left > 0:
                    chunk = handle.read(min(chunk_size, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk
        except OSError as exc:
            raise DeviceIOError(f"cannot read slot {path}: {exc.strerror or exc}") from exc

    def mark_trial(self, slot: str) -> None:
        self._path(slot)
        self.env.write(
            {
                "boot_part": slot,
                "upgrade_available": "1",
                "bootcount": "0",
                "bootlimit": str(self.boot_limit),
            }
        )

    def commit(self, slot: str) -> None:
        self.env.write({"boot_part": slot, "upgrade_available": "0", "bootcount": "0"})

    def rollback(self, slot: str) -> None:
        self._path(slot)
        self.env.write({"boot_part": slot, "upgrade_available": "0", "bootcount": "0"})


class SimulatedMachine:
    """The file backend's stand-in for firmware: a boot id and the slot that runs.

    ``boot()`` applies U-Boot's bootcount logic to the environment, so tests and
    ``make run`` exercise the same fall-back path a device does.
    """

    def __init__(self, directory: pathlib.Path, env: JsonBootEnv) -> None:
        self.directory = directory
        self.env = env
        self._file = directory / "machine.txt"

    def _read(self) -> tuple[int, str]:
        raw = read_optional(self._file, 256)
        if raw is None:
            return 0, SLOTS[0]
        count, _, slot = raw.decode("ascii", "replace").partition(" ")
        return int(count or 0), slot.strip() or SLOTS[0]

    def boot_id(self) -> str:
        return f"sim-boot-{self._read()[0]}"

    def booted_slot(self) -> str:
        return self._read()[1]

    def boot(self) -> str:
        """Reboot: pick the slot like U-Boot would; return it."""
        env = self.env.read(ENV_NAMES)
        slot = env.get("boot_part", SLOTS[0])
        if env.get("upgrade_available") == "1":
            count = int(env.get("bootcount", "0")) + 1
            if count > int(env.get("bootlimit", "3")):
                slot = other_slot(slot)
                self.env.write({"boot_part": slot, "upgrade_available": "0", "bootcount": "0"})
            else:
                self.env.write({"bootcount": str(count)})
        boots = self._read()[0] + 1
        write_atomic(self._file, f"{boots} {slot}".encode())
        return slot


def file_slots(
    directory: pathlib.Path, boot_limit: int = 3
) -> tuple[EnvSlotDriver, SimulatedMachine]:
    """File-backed slots under ``directory`` with a simulated bootloader."""
    directory.mkdir(parents=True, exist_ok=True)
    env = JsonBootEnv(directory / "bootenv.json")
    machine = SimulatedMachine(directory, env)
    paths = {slot: directory / f"slot-{slot}.img" for slot in SLOTS}
    for path in paths.values():
        path.touch(exist_ok=True)
    driver = EnvSlotDriver(
        paths, env, boot_limit=boot_limit, boot_id=machine.boot_id, booted_slot=machine.booted_slot
    )
    return driver, machine
