"""A separate venv with pycose (an independent COSE library), driven through a subprocess.

pycose 1.1.0 (the newest) cannot decode messages with the project's cbor2 6.x,
which decodes a tag's array as a tuple where pycose insists on a list; it also
pulls certvalidator and oscrypto, which the agent has no use for.  So it lives
in its own venv with a cbor2 5.x, built once under the user's cache directory
(``$XDG_CACHE_HOME``, else ``~/.cache``) and reused.  Only if PyPI cannot be
reached is the test skipped, saying so.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

PACKAGES = ("pycose==1.1.0", "cbor2>=5.6,<6")
VENV_NAME = "pycose-1.1.0-cbor2-5"
PIP_NET = ("--retries", "2", "--timeout", "20")
TOOL = pathlib.Path(__file__).with_name("pycose_tool.py")


def _cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "edge-agent-tests"


def _works(python: pathlib.Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [
            str(python),
            "-c",
            # pycose needs a tag's array decoded as a list (cbor2 6 gives a tuple)
            "import pycose.messages, cbor2\n"
            "assert isinstance(cbor2.loads(bytes.fromhex('d28101')).value, list)",
        ],
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


def pycose_python() -> pathlib.Path:
    """The interpreter of the pycose venv, built on first use (skip: PyPI unreachable)."""
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / VENV_NAME
    python = venv / "bin" / "python"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        if _works(python):
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        install = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                *PIP_NET,
                *PACKAGES,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if install.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(
                f"cannot install {' '.join(PACKAGES)} from PyPI (unreachable?): "
                + install.stderr[-300:]
            )
    return python


def run_pycose(python: pathlib.Path, request: dict[str, object]) -> dict[str, object]:
    """One request to ``pycose_tool.py`` in the pycose venv."""
    done = subprocess.run(
        [str(python), str(TOOL)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONNOUSERSITE": "1"},
    )
    if done.returncode != 0:
        raise AssertionError(f"pycose tool failed: {done.stderr[-2000:]}")
    reply = json.loads(done.stdout)
    assert isinstance(reply, dict)
    return reply
