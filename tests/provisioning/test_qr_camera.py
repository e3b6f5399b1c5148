"""QR codes generated with cv2.QRCodeEncoder, decoded from camera-like frames."""

from __future__ import annotations

import json
import logging
import pathlib
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from agent.auth.principals import PrincipalStore, key_id
from agent.database import Database
from agent.errors import DecodeError
from agent.provisioning.binding import Binding, build_binding_payload
from agent.provisioning.limits import ScanScheduler
from agent.provisioning.qr_channel import QrKind
from agent.provisioning.wifi import Security, WifiCredentials
from agent.provisioning.wifi_qr import format_wifi_qr
from drivers.provisioning.qr_reader import QrReader, render_qr
from drivers.provisioning.service import ProvisioningService, build_service
from tests.provisioning.radio_double import RadioDouble
from tests.provisioning.support import START, RecordingAudit, make_config, wait_for
from tests.support.clock import ManualClock

PASSPHRASE = "qr-Passphrase;with,escapes:9"
TOKEN = "bind_" + "Zx9" * 8


def camera_frame(
    text: str, scale: float = 1.0, noise: float = 12.0, seed: int = 7
) -> NDArray[np.uint8]:
    """A 480x640 (or larger) BGR frame holding the code at ``scale``, on grey, with sensor noise."""
    code = render_qr(text, module_pixels=4)
    code = np.asarray(
        cv2.resize(code, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR), dtype=np.uint8
    )
    h, w = code.shape
    rows, cols = max(480, h + 40), max(640, w + 40)
    frame = np.full((rows, cols), 120, dtype=np.uint8)
    top, left = (rows - h) // 2, (cols - w) // 2
    frame[top : top + h, left : left + w] = code
    rng = np.random.default_rng(seed)
    noisy = frame.astype(np.float32) + rng.normal(0, noise, frame.shape)
    grey = np.clip(noisy, 0, 255).astype(np.uint8)
    return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


WIFI_TEXT = format_wifi_qr(WifiCredentials("Home;Net", PASSPHRASE), Security.WPA2_PSK)


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.6])
def test_wifi_qr_decoded_from_noisy_scaled_frames(scale: float) -> None:
    assert QrReader().read(camera_frame(WIFI_TEXT, scale=scale)) == WIFI_TEXT


def test_blank_frame_reads_nothing() -> None:
    assert QrReader().read(camera_frame("x", noise=0)[:40, :40] * 0) is None


def test_unusable_frame_shape_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        QrReader().read(np.zeros((0,), dtype=np.uint8))


def test_large_frames_are_scaled_before_detection() -> None:
    frame = np.asarray(
        cv2.resize(camera_frame(WIFI_TEXT), (2560, 1920), interpolation=cv2.INTER_LINEAR),
        dtype=np.uint8,
    )
    assert QrReader().read(frame) == WIFI_TEXT


def test_scheduler_allows_about_one_attempt_per_interval() -> None:
    scheduler = ScanScheduler(1.0)
    times = [START + i * 0.2 for i in range(26)]  # 5 s of frames at 5 fps
    assert sum(scheduler.due(t) for t in times) == 6
    assert scheduler.due(START - 100)  # clock stepped back: not stalled


@pytest.fixture
def radio() -> RadioDouble:
    return RadioDouble({"Home;Net": PASSPHRASE})


@pytest.fixture
def service(tmp_path: pathlib.Path, radio: RadioDouble) -> Iterator[ProvisioningService]:
    built = build_service(make_config(tmp_path, lan_enabled=False), radio, audit=RecordingAudit())
    built.start()
    try:
        yield built
    finally:
        built.stop()


def test_offered_frames_provision_over_qr_once(
    service: ProvisioningService, radio: RadioDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    frame = camera_frame(WIFI_TEXT)
    outcome = service.offer_frame(frame, START)
    assert outcome is not None and outcome.kind is QrKind.WIFI
    assert service.offer_frame(frame, START + 0.5) is None  # rate limited
    repeated = service.offer_frame(frame, START + 1.0)
    assert repeated is not None and repeated.kind is QrKind.REPEATED
    wait_for(lambda: service.provisioned)
    assert radio.connect_calls == [WifiCredentials("Home;Net", PASSPHRASE)]
    # The network is remembered; its key stays with the Wi-Fi backend alone.
    assert service.store.load_credentials() == WifiCredentials("Home;Net")
    assert PASSPHRASE.encode() not in service.store.credentials_path.read_bytes()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Home;Net" in logged  # the SSID is logged ...
    assert PASSPHRASE not in logged  # ... the passphrase never


OWNER = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
INTRUDER = bytes(range(32))


def binding_qr(
    service: ProvisioningService,
    *,
    key: bytes = OWNER,
    token: str = TOKEN,
    code: str | None = None,
) -> str:
    device = service.binding
    if code is not None:
        device = Binding(device.serial_number, code)
    return build_binding_payload(device, "acme-7", token, int(START) + 3600, key)


@pytest.fixture
def principals(tmp_path: pathlib.Path) -> Iterator[PrincipalStore]:
    db = Database.in_state_dir(tmp_path)
    try:
        yield PrincipalStore(db)
    finally:
        db.close()


def _bound_service(
    tmp_path: pathlib.Path, radio: RadioDouble, principals: PrincipalStore, audit: RecordingAudit
) -> ProvisioningService:
    config = make_config(tmp_path, lan_enabled=False)
    return build_service(
        config, radio, audit=audit, clock=ManualClock(START), principals=principals
    )


def test_binding_qr_binds_the_owner_once_and_refuses_the_token_again(
    tmp_path: pathlib.Path, radio: RadioDouble, principals: PrincipalStore
) -> None:
    audit = RecordingAudit()
    before = principals.device_id
    first = _bound_service(tmp_path, radio, principals, audit)
    first.start()
    outcome = first.offer_frame(camera_frame(binding_qr(first)), START)
    first.stop()
    assert outcome is not None and outcome.kind is QrKind.BINDING, outcome
    owner = principals.owner()
    assert owner is not None
    assert (owner.public_key, owner.label, owner.added_by) == (OWNER, "acme-7", "qr")
    assert principals.device_id != before
    assert first.store.load_account() == "acme-7"
    assert ("provisioning.bound", {"channel": "qr", "owner": key_id(OWNER).hex()[:16]}) in [
        (k, d) for k, d, _ in audit.records
    ]
    assert TOKEN not in repr(audit.records)
    # The owner unbinds and, after a restart, the same QR is shown again: the token is spent.
    principals.unbind()
    (tmp_path / "provisioning" / "account.json").unlink()
    second = _bound_service(tmp_path, radio, principals, audit)
    second.start()
    again = second.offer_frame(camera_frame(binding_qr(second)), START + 5)
    second.stop()
    assert again is not None and again.kind is QrKind.REJECTED
    assert "already used" in again.reason
    assert principals.owner() is None
    assert second.store.load_account() is None


def _forged(service: ProvisioningService) -> str:
    """Made by someone without the sticker's code (the right serial, a guessed code)."""
    right = service.binding.verification_code
    return binding_qr(service, code="40719382" if right != "40719382" else "50719382")


def _version_1(_: ProvisioningService) -> str:
    return json.dumps({"v": 1, "account": "acme-7", "token": TOKEN, "exp": int(START) + 3600})


@pytest.mark.parametrize(
    ("make", "reason"),
    [(_forged, "proof does not match"), (_version_1, "lacks the owner's key; update the app")],
    ids=["wrong-code", "version-1"],
)
def test_binding_qr_without_a_valid_proof_binds_nothing(
    tmp_path: pathlib.Path,
    radio: RadioDouble,
    principals: PrincipalStore,
    make: Callable[[ProvisioningService], str],
    reason: str,
) -> None:
    before = principals.device_id
    service = _bound_service(tmp_path, radio, principals, RecordingAudit())
    service.start()
    try:
        outcome = service.offer_frame(camera_frame(make(service)), START)
    finally:
        service.stop()
    assert outcome is not None and outcome.kind is QrKind.REJECTED
    assert reason in outcome.reason
    assert principals.owner() is None and principals.device_id == before
    assert service.store.load_account() is None
    # A forged QR burns no token: the genuine one with the same token still binds.
    if "proof" in reason:
        genuine = _bound_service(tmp_path, radio, principals, RecordingAudit())
        genuine.start()
        ok = genuine.offer_frame(camera_frame(binding_qr(genuine)), START + 1)
        genuine.stop()
        assert ok is not None and ok.kind is QrKind.BINDING


def test_binding_qr_for_a_bound_device_changes_nothing(
    tmp_path: pathlib.Path, radio: RadioDouble, principals: PrincipalStore
) -> None:
    audit = RecordingAudit()
    service = _bound_service(tmp_path, radio, principals, audit)
    service.start()
    try:
        first = service.offer_frame(camera_frame(binding_qr(service)), START)
        assert first is not None and first.kind is QrKind.BINDING
        device_id = principals.device_id
        other = binding_qr(service, key=INTRUDER, token="bind_" + "Qw8" * 8)
        outcome = service.offer_frame(camera_frame(other), START + 2)
    finally:
        service.stop()
    assert outcome is not None and outcome.kind is QrKind.REJECTED
    assert "already bound" in outcome.reason
    owner = principals.owner()
    assert owner is not None and owner.public_key == OWNER
    assert principals.device_id == device_id
    assert [p.public_key for p in principals.principals()] == [OWNER]
    assert audit.kinds().count("provisioning.bind_refused") == 1


def test_hostile_qr_texts_are_rejected_without_crashing(service: ProvisioningService) -> None:
    now = START
    hostile = (
        "WIFI:S:x\\q;;",
        "[" * 300 + "]" * 300,
        "hello",
        "{" + '"a":1,' * 200 + '"b":2}',
        "WIFI:T:WPA;S:" + "x" * 600 + ";P:password1;;",
    )
    for text in hostile:
        now += 1
        outcome = service.offer_frame(camera_frame(text, noise=3), now)
        assert outcome is not None and outcome.kind is QrKind.REJECTED, text[:20]
    assert not service.provisioned


def test_frame_source_is_polled_at_scan_rate(tmp_path: pathlib.Path, radio: RadioDouble) -> None:
    pulls: list[float] = []
    frame = camera_frame(WIFI_TEXT)

    def source() -> NDArray[np.uint8]:
        pulls.append(time.monotonic())
        return frame

    built = build_service(make_config(tmp_path, lan_enabled=False), radio, frame_source=source)
    built.start()
    try:
        for i in range(10):
            built.tick(START + i * 0.25)
        assert len(pulls) == 3
        wait_for(lambda: built.provisioned)
    finally:
        built.stop()
