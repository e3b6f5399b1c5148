from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.support.broker import Broker

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_VECTORS = REPO_ROOT.parent / "shared" / "vectors"


@pytest.fixture
def broker(tmp_path: pathlib.Path) -> Iterator[Broker]:
    """A fresh real mosquitto on a free 127.0.0.1 port, stopped after the test."""
    instance = Broker(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def shared_vectors() -> pathlib.Path:
    if not SHARED_VECTORS.is_dir():
        pytest.skip(f"shared vectors not found at {SHARED_VECTORS}")
    return SHARED_VECTORS
