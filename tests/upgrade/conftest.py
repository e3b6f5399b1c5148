from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import AgentConfig
from agent.upgrade.builder import (
    ManifestSpec,
    build_manifest,
    class_uuid,
    public_key_pem,
    sign_envelope,
    vendor_uuid,
)
from agent.upgrade.settings import UpgradeSettings
from tests.upgrade.imageserver import ImageServer, serve_images

VENDOR_DOMAIN = "edge-agent.example"
HARDWARE_CLASS = AgentConfig().device.hardware_class
VENDOR_ID = vendor_uuid(VENDOR_DOMAIN)
CLASS_ID = class_uuid(VENDOR_ID, HARDWARE_CLASS)


@pytest.fixture(scope="session")
def vendor_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


@pytest.fixture
def make_config(
    tmp_path: pathlib.Path, vendor_key: ed25519.Ed25519PrivateKey
) -> Callable[..., AgentConfig]:
    pub = tmp_path / "vendor.pub.pem"
    pub.write_bytes(public_key_pem(vendor_key))

    def make(**upgrade: object) -> AgentConfig:
        settings = UpgradeSettings(
            trusted_keys=(pub,),
            auto_install_models=("edge-cam-1",),
            vendor_domain=VENDOR_DOMAIN,
            min_throughput_bytes_per_second=1024,
            throughput_grace_seconds=0.5,
            io_timeout_seconds=2.0,
        )
        settings = dataclasses.replace(settings, **upgrade)  # type: ignore[arg-type]
        return AgentConfig(state_dir=tmp_path / "state", upgrade=settings)

    return make


@pytest.fixture
def sign(vendor_key: ed25519.Ed25519PrivateKey) -> Callable[..., bytes]:
    def make(
        image: bytes, sequence: int, uri: str, *, keys: object = None, **spec: object
    ) -> bytes:
        import hashlib

        fields: dict[str, object] = {
            "sequence": sequence,
            "vendor_id": VENDOR_ID,
            "class_id": CLASS_ID,
            "image_digest": hashlib.sha256(image).digest(),
            "image_size": len(image),
            "uri": uri,
            "software_version": f"1.{sequence}",
        }
        fields.update(spec)
        manifest = build_manifest(ManifestSpec(**fields))  # type: ignore[arg-type]
        return sign_envelope(manifest, keys if keys is not None else [vendor_key])  # type: ignore[arg-type]

    return make


def random_image(size: int, seed: int = 0) -> bytes:
    return (os.urandom(16) * (size // 16 + 1))[:size] if seed == 0 else bytes([seed]) * size


def reboot_and_commit(installer: object, machine: object) -> None:
    """Reboot the simulated device into the trial slot and pass the health check."""
    from agent.upgrade.machine import State
    from drivers.upgrade.installer import Installer
    from drivers.upgrade.slots import SimulatedMachine

    assert isinstance(installer, Installer) and isinstance(machine, SimulatedMachine)
    machine.boot()
    record, _ = installer.resume()
    assert record.state == State.TRIAL
    record, _ = installer.health(True)
    assert record.state == State.COMMITTED
