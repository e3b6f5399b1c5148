"""QR codes generated with cv2.QRCodeEncoder, decoded from camera-like frames."""

from __future__ import annotations

import json
import logging
import pathlib
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from agent.errors import DecodeError
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
    assert service.store.load_credentials() == WifiCredentials("Home;Net", PASSPHRASE)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Home;Net" in logged  # the SSID is logged ...
    assert PASSPHRASE not in logged  # ... the passphrase never


def test_binding_qr_binds_once_and_refuses_reused_token(
    tmp_path: pathlib.Path, radio: RadioDouble
) -> None:
    audit = RecordingAudit()
    clock = ManualClock(START)
    config = make_config(tmp_path, lan_enabled=False)
    text = json.dumps({"v": 1, "account": "acme-7", "token": TOKEN, "exp": int(START) + 3600})
    first = build_service(config, radio, audit=audit, clock=clock)
    first.start()
    outcome = first.offer_frame(camera_frame(text), START)
    first.stop()
    assert outcome is not None and outcome.kind is QrKind.BINDING
    assert first.store.load_account() == "acme-7"
    assert ("provisioning.bound", {"channel": "qr"}) in [
        (k, d) for k, d, _ in audit.records
    ]
    assert TOKEN not in repr(audit.records)
    # after a restart the same code is shown again (the account was erased meanwhile)
    (tmp_path / "provisioning" / "account.json").unlink()
    second = build_service(config, radio, audit=audit, clock=clock)
    second.start()
    again = second.offer_frame(camera_frame(text), START + 5)
    second.stop()
    assert again is not None and again.kind is QrKind.REJECTED
    assert "already used" in again.reason
    assert second.store.load_account() is None


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
