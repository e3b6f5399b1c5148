"""The file half of :mod:`agent.limitstate`: one small JSON file per limiter or window.

:meth:`LimitStore.attach` restores the limiter from its file and from then on
rewrites the file (temp file, fsync, rename: :func:`agent.atomicfile.write_atomic`)
after every change the limiter reports.  Writes are few by construction: a
locked-out limiter refuses before it counts, so an attacker cannot make the
device fsync faster than the limit lets them guess, and a change that leaves
the record as it was (a success with nothing to clear) is not written.

A missing file is a first start.  A file that cannot be read or parsed is not
"no limit": the limiter falls back to its cautious state (locked out for the
base lockout; a window closed) and says so in one log line.  A failed write
keeps the limiter working from memory and is logged; it never fails the request
that caused it.
"""

from __future__ import annotations

import json
import logging
import pathlib
import threading

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DecodeError, DeviceIOError
from agent.limitstate import Persistent
from agent.ports import Clock

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 64 * 1024


class LimitStore:
    def __init__(self, path: pathlib.Path, target: Persistent, clock: Clock, what: str) -> None:
        self.path = path
        self.target = target
        self.clock = clock
        self.what = what
        self._lock = threading.Lock()
        self._written: dict[str, object] | None = None

    @classmethod
    def attach(cls, path: pathlib.Path, target: Persistent, clock: Clock, what: str) -> LimitStore:
        """Restore ``target`` from ``path`` and keep the file up to date from now on."""
        store = cls(path, target, clock, what)
        store.load()
        target.on_change = store.save
        return store

    def load(self) -> None:
        now = self.clock.now()
        try:
            raw = read_optional(self.path, MAX_RECORD_BYTES)
            if raw is None:
                return  # first start: nothing was ever limited
            if len(raw) > MAX_RECORD_BYTES:
                raise DecodeError(f"larger than {MAX_RECORD_BYTES} bytes")
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise DecodeError("not a JSON object")
            self.target.restore(data, now)
        except (DeviceIOError, DecodeError, ValueError) as exc:
            log.warning(
                "%s: %s is unreadable (%s); starting from the safe state", self.what, self.path, exc
            )
            self.target.fail_safe(now)
            self.save()  # so the next start restores this state rather than re-deciding

    def save(self) -> None:
        with self._lock:
            record = self.target.snapshot(self.clock.now())
            unchanged = {k: v for k, v in record.items() if k != "saved_at"}
            if unchanged == self._written:
                return
            try:
                write_atomic(self.path, json.dumps(record, sort_keys=True).encode())
            except DeviceIOError as exc:
                log.warning("%s: cannot save (%s); it holds until the next restart", self.what, exc)
                return
            self._written = unchanged
