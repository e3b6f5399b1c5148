"""The main loop's wake-up: a ``threading.Event`` look-alike a signal handler may set.

``threading.Event.set`` takes a non-reentrant lock that the main thread itself
holds inside ``wait``/``clear``.  Python runs signal handlers on the main
thread between bytecodes, so a SIGTERM arriving while the loop held that lock
made the handler's ``set()`` wait for its own thread: the agent logged
"stopping" and then hung until systemd (or a test) killed it.  This is the
self-pipe trick instead: ``set`` is a flag plus a one-byte non-blocking write,
``wait`` polls the pipe, and nothing takes a lock, so any thread and a signal
handler may call ``set`` at any moment.
"""

from __future__ import annotations

import contextlib
import math
import os
import select


class Wakeup:
    """``set``/``is_set``/``wait``/``clear`` like ``threading.Event``, without locks."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._read_fd, select.POLLIN)
        # Racy by design and harmless: a set() that sees True skips its write because
        # the waiter has not yet cleared, and everything set() announces (events in
        # the sink, acks in the pump) was put there before set() and is seen by the
        # pass that follows the clear().
        self._pending = False

    def set(self) -> None:
        if self._pending:
            return
        self._pending = True
        # A full pipe already holds a wake-up; a closed one means we are shutting down.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")

    def is_set(self) -> bool:
        return self._pending

    def wait(self, timeout: float) -> bool:
        """Until set() or ``timeout`` seconds; True when set."""
        if self._pending:
            return True
        # poll() is retried after a signal handler (PEP 475) and sees the handler's byte.
        self._poller.poll(max(0, math.ceil(timeout * 1000)))
        return self._pending

    def clear(self) -> None:
        self._pending = False
        while True:
            try:
                if not os.read(self._read_fd, 4096):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
