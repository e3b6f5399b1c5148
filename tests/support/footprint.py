"""The real ``edge-agent run`` as systemd starts it: time to ``READY=1``, memory, libraries.

The test binds its own ``NOTIFY_SOCKET`` (a Unix datagram socket, as systemd
does), spawns the process and takes the time from spawn until ``READY=1``
arrives.  Memory is ``VmRSS`` from ``/proc/PID/status``; which shared objects
the process loaded is read from ``/proc/PID/maps``.  Used by
tests/core/test_footprint.py and tests/bench/bench_footprint.py.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from types import TracebackType
from typing import IO, Any

REPO = pathlib.Path(__file__).resolve().parents[2]
# A bare interpreter speaking the same notify protocol: the peer in the same run.
BARE_PYTHON = (
    "import os, socket, time\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n"
    "time.sleep(30)\n"
)


def edge_agent_command() -> list[str]:
    """The installed console script, as systemd runs it; ``python -m drivers`` without one."""
    script = pathlib.Path(sys.executable).with_name("edge-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "drivers"]


def default_config_text(broker_port: int, **overrides: dict[str, str]) -> str:
    """config/agent.toml (the default configuration) with a plaintext loopback broker.

    Only ``[mqtt] port``/``tls`` change, and what ``overrides`` names (section ->
    key -> TOML value, for keys the file sets): the camera, matching and every other
    section stay what a device ships.
    """
    changes = {k: dict(v) for k, v in overrides.items()}
    changes.setdefault("mqtt", {}).update(port=str(broker_port), tls='"off"')
    section = ""
    out: list[str] = []
    for line in (REPO / "config" / "agent.toml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        wanted = changes.get(section, {})
        if key in wanted:
            line = f"{key} = {wanted.pop(key)}"
        out.append(line)
    left = {s: keys for s, keys in changes.items() if keys}
    assert not left, f"config/agent.toml no longer sets {left}"
    return "\n".join(out) + "\n"


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of ``pid`` in KiB (``/proc/PID/status``).

    ``RssAnon`` is what the kernel can take back only by swapping; ``RssFile`` is
    clean library and file pages it may drop and read again.
    """
    wanted = ("VmRSS", "RssAnon", "RssFile")
    found = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in wanted:
            found[key] = int(line.split()[1])
    missing = [k for k in wanted if k not in found]
    if missing:
        raise RuntimeError(f"no {missing} for {pid}")
    return found


def rss_kib(pid: int) -> int:
    return memory_kib(pid)["VmRSS"]


def mapped_files(pid: int) -> set[str]:
    """Base names of the files process ``pid`` has mapped (its shared objects among them)."""
    names = set()
    for line in pathlib.Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            names.add(parts[5].rsplit("/", 1)[-1])
    return names


class Notified:
    """A child process started with its own ``NOTIFY_SOCKET``; ``ready_seconds`` after READY."""

    def __init__(
        self,
        command: list[str],
        workdir: pathlib.Path,
        *,
        env: dict[str, str] | None = None,
        stderr_name: str = "stderr.txt",
    ) -> None:
        self.command = command
        self.workdir = workdir
        self.env = dict(os.environ if env is None else env)
        self.stderr_path = workdir / stderr_name
        self.ready_seconds: float | None = None
        self.proc: subprocess.Popen[Any] | None = None
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify_path = workdir / f"notify-{id(self)}"
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> float:
        """Spawn, wait for READY=1 (at most ``timeout``), return the seconds it took."""
        self._notify.bind(str(self._notify_path))
        self._notify.settimeout(timeout)
        env = dict(self.env, NOTIFY_SOCKET=str(self._notify_path))
        # As installed (pip writes .pyc files): never time the bytecode compiler.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        self._stderr = self.stderr_path.open("wb")
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._stderr,
        )
        deadline = start + timeout
        while True:
            self._notify.settimeout(max(0.01, deadline - time.perf_counter()))
            try:
                message = self._notify.recv(4096)
            except TimeoutError:
                raise RuntimeError(
                    f"no READY=1 within {timeout} s: {self.stderr()[-2000:]}"
                ) from None
            if message.startswith(b"READY=1") or b"\nREADY=1" in message:
                self.ready_seconds = time.perf_counter() - start
                return self.ready_seconds
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def wait_for_stderr(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.stderr():
                return True
            assert self.proc is not None
            if self.proc.poll() is not None:
                return needle in self.stderr()
            time.sleep(0.1)
        return False

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            code = self.proc.returncode
        if self._stderr is not None:
            self._stderr.close()
        self._notify.close()
        return code

    def __enter__(self) -> Notified:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def agent(config: pathlib.Path, state: pathlib.Path, workdir: pathlib.Path) -> Notified:
    return Notified(
        [*edge_agent_command(), "run", "--config", str(config), "--state-dir", str(state)],
        workdir,
        stderr_name="agent-stderr.txt",
    )


def bare_python(workdir: pathlib.Path) -> Notified:
    return Notified([sys.executable, "-c", BARE_PYTHON], workdir, stderr_name="bare-stderr.txt")
