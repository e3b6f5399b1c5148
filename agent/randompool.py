"""Random bytes for the event path, drawn from the OS a page at a time.

Every event takes a fresh id and every sealed blob a fresh nonce.  On the
devices (and sandboxes) we run on, each getrandom() call is a system call of
several microseconds under load, more than the rest of the id's work; taking
4 KiB at once and handing out slices keeps the same source (os.urandom) and
the same guarantee (no byte is ever handed out twice) at a fraction of the cost.
"""

from __future__ import annotations

import os
import threading

_PAGE = 4096


class RandomPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        # A forked child must never reuse its parent's bytes: it starts empty.  Told by
        # the fork hook, not by comparing os.getpid() on every take (a system call each,
        # which glibc no longer caches: 6% of the event path's CPU, issue 12).
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        # The child has one thread (the forking one), so nobody holds the lock here
        # unless the fork interrupted a take(): make a fresh one rather than wait.
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0

    def take(self, size: int) -> bytes:
        if size > _PAGE:
            return os.urandom(size)
        with self._lock:
            if self._offset + size > len(self._buffer):
                self._buffer, self._offset = os.urandom(_PAGE), 0
            chunk = self._buffer[self._offset : self._offset + size]
            self._offset += size
            return chunk


POOL = RandomPool()


def random_bytes(size: int) -> bytes:
    return POOL.take(size)
