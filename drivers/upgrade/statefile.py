"""The upgrade state machine's persisted state: one crash-safe file, and what rebuilds it.

Next to ``state.json`` the store keeps the signed envelope of the image last
verified into each slot, so an unreadable state file can be rebuilt from the
boot environment and what the slots hold (:mod:`drivers.upgrade.recovery`).
"""

from __future__ import annotations

import os
import pathlib
import re
import time

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DeviceIOError
from agent.layout import StateLayout

MAX_ENVELOPE_BYTES = 1024 * 1024
# agent.atomicfile.write_atomic's temp files: ".NAME.PID.RANDOM.tmp" beside the target.
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_temps(directories: list[pathlib.Path]) -> list[pathlib.Path]:
    """Remove temp files of atomic writes whose writer is gone (killed mid-write)."""
    removed = []
    for directory in directories:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DeviceIOError(f"cannot list {directory}: {exc.strerror or exc}") from exc
        for name in names:
            match = TEMP_NAME.match(name)
            if match is None:
                continue
            pid = int(match.group("pid"))
            if pid == os.getpid() or _alive(pid):
                continue  # a writer still at work (the CLI next to the daemon)
            path = directory / name
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DeviceIOError(f"cannot remove {path}: {exc.strerror or exc}") from exc
            removed.append(path)
    return removed


class FileStateStore:
    """:class:`agent.upgrade.ports.StateStore` on the files of ``layout``."""

    def __init__(self, layout: StateLayout, max_bytes: int = 256 * 1024) -> None:
        self.layout = layout
        self.path = layout.upgrade_state
        self.max_bytes = max_bytes

    def load(self) -> bytes | None:
        return read_optional(self.path, self.max_bytes)

    def save(self, data: bytes) -> None:
        write_atomic(self.path, data)

    def set_aside(self, now: float) -> str | None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        target = self.layout.upgrade_state_damaged(stamp)
        try:
            os.rename(self.path, target)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            return None  # another process moved it first
        except OSError as exc:
            raise DeviceIOError(f"cannot move {self.path} aside: {exc.strerror or exc}") from exc
        return str(target)

    def load_envelope(self, slot: str) -> bytes | None:
        return read_optional(self.layout.upgrade_slot_envelope(slot), MAX_ENVELOPE_BYTES)

    def save_envelope(self, slot: str, envelope: bytes | None) -> None:
        path = self.layout.upgrade_slot_envelope(slot)
        if envelope is not None:
            write_atomic(path, envelope)
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DeviceIOError(f"cannot remove {path}: {exc.strerror or exc}") from exc

    def clean_stale(self) -> list[str]:
        dirs = [self.layout.upgrade_dir, self.layout.simulated_slots]
        return [str(p) for p in clean_stale_temps(dirs)]
