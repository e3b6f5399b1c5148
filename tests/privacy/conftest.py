from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.privacy.device import Device
from tests.privacy.disk import LoopDisk, LoopUnavailable
from tests.support.broker import Broker


@pytest.fixture
def disk(tmp_path: pathlib.Path) -> Iterator[LoopDisk]:
    """A fresh 64 MiB ext4 image on a loop device, mounted; unmounted and detached after."""
    loop = LoopDisk(tmp_path)
    try:
        loop.attach()
    except LoopUnavailable as exc:
        loop.cleanup()
        pytest.skip(f"no loop device on this machine: {exc}")
    try:
        yield loop
    finally:
        loop.cleanup()


@pytest.fixture
def device(disk: LoopDisk, broker: Broker, tmp_path: pathlib.Path) -> Iterator[Device]:
    """The agent's configuration off the image, its state directory on it."""
    root = tmp_path / "device"
    root.mkdir()
    dev = Device(root, disk.mount / "state", broker)
    try:
        yield dev
    finally:
        dev.kill()
