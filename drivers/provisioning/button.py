"""A physical button read from a Linux input event device (evdev), e.g. gpio-keys.

Boards wire their setup/WPS button through the ``gpio-keys`` driver, which
reports it on ``/dev/input/eventN`` as ``struct input_event`` records
(``struct timeval`` then ``__u16 type, __u16 code, __s32 value``).  A press
(``EV_KEY``, the configured code, value 1) calls ``on_press`` from the reader
thread; releases and auto-repeats are ignored.  A device that disappears is
reopened every few seconds; until then the button simply does not authorize.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# The native layout: the kernel writes the userspace ABI's struct input_event.
EVENT = struct.Struct("@llHHi")
EV_KEY = 0x01
PRESSED = 1
KEY_WPS_BUTTON = 0x211
REOPEN_SECONDS = 5.0
POLL_SECONDS = 0.2


def encode_event(code: int, value: int, ev_type: int = EV_KEY) -> bytes:
    """One input_event record as the kernel writes it (for tests and tools)."""
    return EVENT.pack(0, 0, ev_type, code, value)


class EvdevButton:
    def __init__(self, path: str, key_code: int, on_press: Callable[[], None]) -> None:
        self._path = path
        self._key_code = key_code
        self._on_press = on_press
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="provisioning-button", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        warned = False
        while not self._stop.is_set():
            try:
                fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as exc:
                if not warned:
                    log.warning("button %s unavailable (%s); Improv stays locked", self._path, exc)
                    warned = True
                self._stop.wait(REOPEN_SECONDS)
                continue
            warned = False
            try:
                self._read_events(fd)
            finally:
                os.close(fd)

    def _read_events(self, fd: int) -> None:
        pending = b""
        while not self._stop.is_set():
            if not select.select([fd], [], [], POLL_SECONDS)[0]:
                continue
            try:
                chunk = os.read(fd, EVENT.size * 16)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.ENODEV:
                    log.warning("reading the button %s failed: %s", self._path, exc)
                self._stop.wait(REOPEN_SECONDS)
                return
            if not chunk:
                # a FIFO whose writer went away: wait for the next one
                self._stop.wait(POLL_SECONDS)
                continue
            pending += chunk
            while len(pending) >= EVENT.size:
                _, _, ev_type, code, value = EVENT.unpack_from(pending)
                pending = pending[EVENT.size :]
                if ev_type == EV_KEY and code == self._key_code and value == PRESSED:
                    self._on_press()
