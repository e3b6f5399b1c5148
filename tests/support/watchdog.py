"""The real ``edge-agent run`` under a systemd-like watchdog, for attack tests.

:class:`WatchedAgent` binds the notify socket systemd would hold, starts the
agent with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``, lowers its file descriptor
limit to systemd's default soft limit (1,024) and records the arrival time of
every ``WATCHDOG=1``.  :meth:`WatchedAgent.max_gap` is the longest silence in
a window, counting from the window's start and up to its end, so a watchdog
that stops for good cannot hide behind the last ping it sent.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from tests.support.process import REPO, spawn_agent

# systemd's default soft RLIMIT_NOFILE, what the researcher's agent ran with.
AGENT_NOFILE = 1024
WATCHDOG_SECONDS = 4.0
# Ping every WatchdogSec/10, so a healthy agent's gaps are far below WatchdogSec/2.
RUNTIME = "[runtime]\ntick_seconds = 0.05\nwatchdog_fraction = 0.1\n"
# The spine and the endpoint under attack; no camera or matching load, no broker.
QUIET = "[mqtt]\nenabled = false\n[camera]\nenabled = false\n[matching]\nenabled = false\n"


def raise_own_nofile(wanted: int) -> None:
    """Let the test itself hold ``wanted`` descriptors (the attacker's sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


class WatchedAgent:
    def __init__(
        self, tmp_path: pathlib.Path, config_text: str, *, netns: str | None = None
    ) -> None:
        self.tmp_path = tmp_path
        self.netns = netns  # run inside this network namespace (ip netns exec)
        self.state = tmp_path / "state"
        self.config = tmp_path / "agent.toml"
        self.config.write_text(QUIET + RUNTIME + config_text)
        self.stderr_path = tmp_path / "agent.stderr"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify_path = tmp_path / "notify"
        self._notify.bind(str(self._notify_path))
        self._notify.settimeout(0.2)
        self.pings: list[float] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self.proc: subprocess.Popen[Any] | None = None

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            arrived = time.monotonic()
            if message.startswith(b"READY=1"):
                self._ready.set()
            if b"WATCHDOG=1" in message.split(b"\n"):
                self.pings.append(arrived)

    def start(self, timeout: float = 30.0) -> None:
        env = dict(
            os.environ,
            NOTIFY_SOCKET=str(self._notify_path),
            WATCHDOG_USEC=str(int(WATCHDOG_SECONDS * 1_000_000)),
        )
        env.pop("WATCHDOG_PID", None)
        self._reader.start()
        with open(self.stderr_path, "wb") as stderr:
            if self.netns is None:
                self.proc = spawn_agent(
                    self.config, self.state, env=env, stdout=subprocess.DEVNULL, stderr=stderr
                )
            else:
                # ip execs the agent: same pid, and the notify socket is a path, which
                # network namespaces do not separate.
                command = [sys.executable, "-m", "drivers", "run", "--config", str(self.config),
                           "--state-dir", str(self.state)]
                self.proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.netns, *command], cwd=REPO, env=env,
                    stdout=subprocess.DEVNULL, stderr=stderr,
                )
        # Before it opens its first socket: the fd limit systemd gives a service by default.
        resource.prlimit(self.proc.pid, resource.RLIMIT_NOFILE, (AGENT_NOFILE, AGENT_NOFILE))
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            assert self.proc.poll() is None, f"agent exited early:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"agent never sent READY=1:\n{self.stderr()}"
        self.wait_pings(2, timeout)

    def wait_pings(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` more WATCHDOG=1 datagrams have arrived."""
        target = len(self.pings) + count
        deadline = time.monotonic() + timeout
        while len(self.pings) < target:
            assert time.monotonic() < deadline, f"watchdog went silent:\n{self.stderr()[-2000:]}"
            time.sleep(0.02)

    def max_gap(self, since: float, until: float | None = None) -> float:
        """The longest interval without a WATCHDOG=1 between ``since`` and ``until``."""
        end = time.monotonic() if until is None else until
        marks = [since, *(t for t in self.pings if since < t < end), end]
        return max(b - a for a, b in itertools.pairwise(marks))

    def open_fds(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def threads(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM, wait; the exit status (the agent is killed if it does not stop)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    return self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
                    raise
            return self.proc.returncode if self.proc is not None else 0
        finally:
            self._stop.set()
            if self._reader.is_alive():
                self._reader.join(2)
            self._notify.close()
