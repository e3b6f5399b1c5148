"""A boot counter that survives power loss: WS-Discovery's AppSequence InstanceId.

WS-Discovery requires the InstanceId to grow every time the target restarts,
so receivers can tell a stale message from a new one.  The counter lives in
the state directory and is replaced atomically (temp file, fsync, rename, fsync
of the directory), so a power cut leaves either the old or the new value.
"""

from __future__ import annotations

import pathlib

from agent.atomicfile import write_atomic
from agent.errors import DeviceIOError
from agent.layout import StateLayout
from agent.ports import Clock

COUNTER_FILE = StateLayout(pathlib.Path()).discovery_instance_id.name
MAX_COUNTER = 2**32 - 1


def next_instance_id(state_dir: pathlib.Path, clock: Clock) -> int:
    """Increment and return the persisted boot counter (first boot: 1)."""
    path = StateLayout(state_dir).discovery_instance_id
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = "0"
        try:
            previous = int(text)
        except ValueError:
            # Unreadable counter (edited by hand?): wall-clock seconds are larger
            # than any count of boots, so the id still rises.
            previous = int(clock.now())
        value = previous + 1 if 0 <= previous < MAX_COUNTER else 1
        write_atomic(path, f"{value}\n".encode("ascii"), mode=0o644)
    except (OSError, UnicodeError) as exc:
        raise DeviceIOError(f"cannot update boot counter {path}: {exc}") from exc
    return value
