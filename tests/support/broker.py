"""A real Mosquitto broker on a free loopback port, started and stopped by tests."""

from __future__ import annotations

import getpass
import pathlib
import shutil
import socket
import subprocess
import time

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("mosquitto is not installed; `make test` installs it with apt-get")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """One mosquitto process; ``stop()``/``start()`` keep the same port.

    ``persistent`` keeps sessions (subscriptions and the QoS 1 messages queued for
    offline subscribers) across ``stop()``/``start()``, as a broker that stores to
    disk does: a subscriber that is away meanwhile misses nothing.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        port: int | None = None,
        *,
        listener_options: str = "",
        persistent: bool = False,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + (listener_options or "allow_anonymous true\n")
            + (
                f"persistence true\npersistence_location {workdir}/\n"
                if persistent
                else "persistence false\n"
            )
            # Stay the invoking user so the broker can read files in the test tmp dir.
            + f"user {getpass.getuser()}\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 0\n"
            "log_type error\nlog_type warning\n"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = self.log.open("ab")
        self._proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening in time")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
