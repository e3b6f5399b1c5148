from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.wifi.fake_wpa import FakeWpaSupplicant

PLANTED_PASSPHRASE = "Pl4nted-S3cret-Never-Logged"


@pytest.fixture
def short_dir() -> Iterator[str]:
    """UNIX socket paths are capped at 108 bytes; pytest's tmp_path can be longer."""
    path = tempfile.mkdtemp(prefix="wifi-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_wpa(short_dir: str) -> Iterator[FakeWpaSupplicant]:
    server = FakeWpaSupplicant(f"{short_dir}/wlan0")
    try:
        yield server
    finally:
        server.stop()
