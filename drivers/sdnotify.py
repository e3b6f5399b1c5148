"""A small sd_notify(3) sender: READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

The runtime keeps STATUS= current: broker connected or unreachable, the outbox
depth and the upgrade state (``systemctl status edge-agent`` shows the line).

It is a few lines of datagram code, so we keep it in-house rather than add a
dependency.  Without ``$NOTIFY_SOCKET`` (not under systemd) it does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, sock: socket.socket | None = None, address: str | bytes | None = None):
        self._sock = sock
        self._address = address
        self._status: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        target = env.get("NOTIFY_SOCKET", "")
        if not target:
            return cls()
        # A leading '@' names a socket in the abstract namespace.
        address: str | bytes = b"\0" + target[1:].encode() if target.startswith("@") else target
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return cls(sock, address)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str) -> bool:
        if self._sock is None:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            if self._address is None:
                self._sock.send(message)
            else:
                self._sock.sendto(message, self._address)
        except OSError:
            # systemd gone or restarting: the watchdog will act on the silence.
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify(ready="1", **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        """STATUS=``text`` (``systemctl status`` shows it); sent only when it changed."""
        if self._sock is None or text == self._status:
            return False
        sent = self.notify(status=text)
        if sent:
            self._status = text
        return sent

    def watchdog(self) -> bool:
        return self.notify(watchdog="1")

    def stopping(self) -> bool:
        return self.notify(stopping="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """systemd's WatchdogSec in seconds, if this process is the watched one."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit():
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000
