"""The upgrade threat list, one named test each (file slots + a real loopback HTTP server)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import AgentConfig
from agent.errors import DeviceTimeoutError, PolicyError, VerificationError
from agent.upgrade.builder import public_key_of
from agent.upgrade.errors import (
    ExpiredManifestError,
    ExtraDataError,
    ImageMismatchError,
    PrecursorMismatchError,
    RollbackError,
    WrongHardwareError,
)
from agent.upgrade.machine import State
from drivers.upgrade.installer import Installer
from drivers.upgrade.service import build_installer
from drivers.upgrade.slots import SimulatedMachine
from drivers.upgrade.statefile import FileStateStore
from tests.upgrade.conftest import random_image, reboot_and_commit
from tests.upgrade.imageserver import Fault, ImageServer

Sign = Callable[..., bytes]


@pytest.fixture
def setup(
    make_config: Callable[..., AgentConfig], image_server: ImageServer
) -> tuple[Installer, SimulatedMachine, ImageServer]:
    installer, machine = build_installer(make_config(download_attempts=2))
    assert machine is not None
    return installer, machine, image_server


def _publish(server: ImageServer, path: str, image: bytes) -> str:
    server.files[path] = image
    return server.url(path)


def _slot_bytes(machine: SimulatedMachine, slot: str) -> bytes:
    return (machine.directory / f"slot-{slot}.img").read_bytes()


def _assert_untouched_boot(installer: Installer) -> None:
    status = installer.slots.boot_status()
    assert status.next_slot == status.booted_slot == "a"
    assert not status.trial


def test_happy_path_installs_into_inactive_slot_and_commits(setup, sign: Sign) -> None:
    installer, machine, server = setup
    image = random_image(300_000)
    record = installer.install(sign(image, 1, _publish(server, "/v1.img", image)))
    assert record.state == State.AWAITING_REBOOT
    assert _slot_bytes(machine, "b") == image
    status = installer.slots.boot_status()
    assert (status.booted_slot, status.next_slot, status.trial) == ("a", "b", True)
    reboot_and_commit(installer, machine)
    assert installer.record().installed_sequence == 1
    assert installer.slots.boot_status().next_slot == "b"


def test_rollback_lower_or_equal_sequence_is_refused(setup, sign: Sign) -> None:
    installer, machine, server = setup
    image = random_image(1000)
    url = _publish(server, "/v5.img", image)
    installer.install(sign(image, 5, url))
    reboot_and_commit(installer, machine)
    for sequence in (5, 4, 0):
        with pytest.raises(RollbackError):
            installer.install(sign(image, sequence, url))
    assert installer.record().installed_sequence == 5


def test_freeze_expired_manifest_is_refused(setup, sign: Sign) -> None:
    installer, _, server = setup
    image = random_image(1000)
    url = _publish(server, "/old.img", image)
    with pytest.raises(ExpiredManifestError):
        installer.install(sign(image, 1, url, expires_at=int(time.time()) - 1))
    assert installer.record().state == State.IDLE
    assert installer.verify(sign(image, 1, url, expires_at=int(time.time()) + 3600))


def test_endless_data_stops_at_signed_size(setup, sign: Sign) -> None:
    installer, machine, server = setup
    image = random_image(100_000)
    url = _publish(server, "/endless.img", image)
    server.faults["/endless.img"] = Fault(endless=True)
    with pytest.raises(ExtraDataError):
        installer.install(sign(image, 1, url))
    assert len(_slot_bytes(machine, "b")) <= len(image)
    assert installer.record().state == State.FAILED
    _assert_untouched_boot(installer)


@pytest.mark.parametrize("announce", [False, True])
def test_extra_data_after_image_is_rejected(setup, sign: Sign, announce: bool) -> None:
    installer, machine, server = setup
    image = random_image(50_000)
    url = _publish(server, "/extra.img", image)
    server.faults["/extra.img"] = Fault(extra=b"PAYLOAD-TAIL", omit_length=not announce)
    with pytest.raises(ExtraDataError):
        installer.install(sign(image, 1, url))
    assert len(_slot_bytes(machine, "b")) <= len(image)
    _assert_untouched_boot(installer)


def test_slow_retrieval_is_abandoned(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    installer, _ = build_installer(
        make_config(
            min_throughput_bytes_per_second=1024 * 1024,
            throughput_grace_seconds=0.3,
            download_attempts=1,
        )
    )
    image = random_image(2 * 1024 * 1024)
    url = _publish(image_server, "/slow.img", image)
    image_server.faults["/slow.img"] = Fault(trickle_delay=0.05)
    started = time.monotonic()
    with pytest.raises(DeviceTimeoutError, match="slower than"):
        installer.install(sign(image, 1, url))
    assert time.monotonic() - started < 5
    assert installer.record().state == State.FAILED
    _assert_untouched_boot(installer)


def test_slow_retrieval_overall_deadline(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    installer, _ = build_installer(
        make_config(download_deadline_seconds=1.0, min_throughput_bytes_per_second=1)
    )
    image = random_image(400_000)
    url = _publish(image_server, "/deadline.img", image)
    image_server.faults["/deadline.img"] = Fault(trickle_delay=0.01)
    with pytest.raises(DeviceTimeoutError, match="deadline"):
        installer.install(sign(image, 1, url))


def test_arbitrary_software_unsigned_is_refused(setup, sign: Sign) -> None:
    installer, _, server = setup
    image = random_image(1000)
    signed = cbor2.loads(sign(image, 1, _publish(server, "/u.img", image)))
    auth = cbor2.loads(signed.value[2])
    unsigned = cbor2.dumps(cbor2.CBORTag(107, {2: cbor2.dumps([auth[0]]), 3: signed.value[3]}))
    with pytest.raises(VerificationError, match="unsigned"):
        installer.install(unsigned)
    assert installer.record().state == State.IDLE


def test_arbitrary_software_wrong_key_is_refused(setup, sign: Sign) -> None:
    installer, _, server = setup
    image = random_image(1000)
    stranger = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(VerificationError, match="trusted key"):
        installer.install(sign(image, 1, _publish(server, "/w.img", image), keys=[stranger]))


def test_wrong_hardware_class_id_is_refused(setup, sign: Sign) -> None:
    installer, _, server = setup
    image = random_image(1000)
    url = _publish(server, "/hw.img", image)
    other = uuid.uuid5(uuid.NAMESPACE_DNS, "other-device")
    with pytest.raises(WrongHardwareError, match="class"):
        installer.install(sign(image, 1, url, class_id=other))
    with pytest.raises(WrongHardwareError, match="vendor"):
        installer.install(sign(image, 1, url, vendor_id=other))


def test_wrong_precursor_for_delta_is_refused(setup, sign: Sign) -> None:
    installer, machine, server = setup
    base = random_image(2000)
    installer.install(sign(base, 1, _publish(server, "/base.img", base)))
    reboot_and_commit(installer, machine)
    delta = random_image(3000)
    url = _publish(server, "/delta.img", delta)
    wrong = hashlib.sha256(b"some other image").digest()
    with pytest.raises(PrecursorMismatchError):
        installer.install(sign(delta, 2, url, precursor_digest=wrong))
    record = installer.install(sign(delta, 2, url, precursor_digest=hashlib.sha256(base).digest()))
    assert record.state == State.AWAITING_REBOOT


class _TamperingStore(FileStateStore):
    """Flips a slot byte right after the download is persisted (between hash and boot)."""

    def __init__(self, inner: FileStateStore, slot_file) -> None:
        super().__init__(inner.layout)
        self.slot_file = slot_file

    def save(self, data: bytes) -> None:
        super().save(data)
        if b'"state": "installing"' in data:
            raw = bytearray(self.slot_file.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            self.slot_file.write_bytes(bytes(raw))


def test_toctou_slot_modified_after_hashing_is_not_made_bootable(setup, sign: Sign) -> None:
    installer, machine, server = setup
    assert isinstance(installer.store, FileStateStore)
    installer.store = _TamperingStore(installer.store, machine.directory / "slot-b.img")
    image = random_image(200_000)
    with pytest.raises(ImageMismatchError):
        installer.install(sign(image, 1, _publish(server, "/t.img", image)))
    assert installer.record().state == State.FAILED
    _assert_untouched_boot(installer)


def test_mix_and_match_image_of_another_manifest_is_refused(setup, sign: Sign) -> None:
    installer, _, server = setup
    image_a, image_b = random_image(4000), random_image(4000)
    _publish(server, "/a.img", image_a)
    url_b = _publish(server, "/b.img", image_b)
    # Manifest for image A pointing at B's URI (same size, other bytes).
    with pytest.raises(ImageMismatchError, match="digest"):
        installer.install(sign(image_a, 1, url_b))
    _assert_untouched_boot(installer)


def test_mix_and_match_manifest_components_are_refused(setup, sign: Sign) -> None:
    installer, _, server = setup
    image = random_image(4000)
    url = _publish(server, "/m.img", image)
    first = cbor2.loads(sign(image, 1, url)).value
    second = cbor2.loads(sign(image, 9, url)).value
    mixed = cbor2.dumps(cbor2.CBORTag(107, {2: first[2], 3: second[3]}))
    with pytest.raises(VerificationError, match="digest"):
        installer.install(mixed)


def test_key_rotation_needs_old_and_new_signatures(
    setup, sign: Sign, vendor_key: ed25519.Ed25519PrivateKey
) -> None:
    installer, _, server = setup
    image = random_image(1000)
    url = _publish(server, "/r.img", image)
    new_key = ed25519.Ed25519PrivateKey.generate()
    new_der = (public_key_of(new_key).spki_der,)
    with pytest.raises(PolicyError, match="every new key"):
        installer.verify(sign(image, 1, url, new_keys=new_der))
    with pytest.raises(VerificationError):
        installer.verify(sign(image, 1, url, new_keys=new_der, keys=[new_key]))
    installer.verify(sign(image, 1, url, new_keys=new_der, keys=[vendor_key, new_key]))
    assert installer.keys.load().key_ids == {public_key_of(new_key).key_id}
    # The old key is retired; the new one is trusted.
    with pytest.raises(VerificationError):
        installer.verify(sign(image, 2, url))
    assert installer.verify(sign(image, 2, url, keys=[new_key])).manifest.sequence == 2
