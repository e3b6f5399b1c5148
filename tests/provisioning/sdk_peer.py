"""The official Improv serial SDK (npm ``improv-wifi-serial-sdk``) as a test peer.

``tests/provisioning/improv_sdk/`` pins the SDK (package.json and
package-lock.json); :func:`sdk_dir` installs it with ``npm ci`` when
node_modules is missing.  :class:`SdkSession` runs ``driver.mjs`` under Node
with the master end of a pty: the SDK, unmodified, talks to the device on the
slave end through a small Web-Serial-like adapter, and each request made here
is one SDK call answered as JSON.
"""

from __future__ import annotations

import json
import os
import pathlib
import select
import shutil
import subprocess
import time
from typing import Any

import pytest

SDK_DIR = pathlib.Path(__file__).parent / "improv_sdk"
SDK_PACKAGE = SDK_DIR / "node_modules" / "improv-wifi-serial-sdk" / "package.json"


def sdk_dir() -> pathlib.Path:
    """The directory with the SDK installed; skips only where Node.js is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed (apt-get install -y nodejs npm)")
    if not SDK_PACKAGE.is_file():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SDK_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not SDK_PACKAGE.is_file():
            pytest.fail(f"npm ci in {SDK_DIR} failed: {done.stderr.strip()[-800:]}")
    return SDK_DIR


class SdkSession:
    """One Node process running the SDK against the pty master ``master_fd``."""

    def __init__(self, master_fd: int) -> None:
        directory = sdk_dir()
        node = shutil.which("node")
        assert node is not None
        self._process = subprocess.Popen(
            [node, "--import", "./register.mjs", "driver.mjs", str(master_fd)],
            cwd=directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(master_fd,),
        )
        self._buffer = b""

    def request(self, op: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        stdin.flush()
        return self._answer(timeout)

    def _answer(self, timeout: float) -> dict[str, Any]:
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the SDK did not answer in {timeout} s: {self.stderr()}")
            if select.select([stdout], [], [], remaining)[0]:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"the SDK driver exited: {self.stderr()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stderr(self) -> str:
        if self._process.poll() is None:
            return "(still running)"
        assert self._process.stderr is not None
        return self._process.stderr.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        if self._process.poll() is None:
            stdin = self._process.stdin
            assert stdin is not None
            try:
                stdin.write(b'{"op": "exit"}\n')
                stdin.flush()
                self._process.wait(timeout=5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> SdkSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
