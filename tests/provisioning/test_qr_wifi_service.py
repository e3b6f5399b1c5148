"""Wi-Fi QR codes made by ``qrencode`` shown to the running provisioning service."""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import Iterator

import pytest

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning.qr_channel import QrKind
from agent.provisioning.wifi import WifiCredentials
from agent.provisioning.wifi_qr import WEP_REFUSED
from drivers.provisioning.service import ProvisioningService, build_service, command_handlers
from drivers.provisioning.store import FileProvisioningStore
from tests.provisioning.qr_frames import Grey, camera_frame, qrencode_modules, scaled_symbol
from tests.provisioning.radio_double import RadioDouble
from tests.provisioning.support import START, make_config, wait_for
from tests.support.clock import ManualClock

PASSPHRASE = "pässwörd-ÄÖÜ-123"


def _frame(text: str, px: float = 3.0) -> Grey:
    return camera_frame(scaled_symbol(qrencode_modules(text), px), seed=3)


@pytest.fixture
def radio() -> RadioDouble:
    return RadioDouble({"Café Ünïcode": PASSPHRASE, "CAFE": "password-1", "Old-Router": None})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@contextlib.contextmanager
def _service(
    tmp_path: pathlib.Path, radio: RadioDouble, clock: ManualClock
) -> Iterator[ProvisioningService]:
    service = build_service(make_config(tmp_path, lan_enabled=False), radio, clock=clock)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def service(
    tmp_path: pathlib.Path, radio: RadioDouble, clock: ManualClock
) -> Iterator[ProvisioningService]:
    with _service(tmp_path, radio, clock) as started:
        yield started


def test_mixed_mode_non_ascii_qr_provisions(
    service: ProvisioningService, radio: RadioDouble
) -> None:
    """qrencode's default mixed-mode symbol with non-ASCII text (OpenCV reads it as '')."""
    outcome = service.offer_frame(_frame(f"WIFI:T:WPA;S:Café Ünïcode;P:{PASSPHRASE};;"), START)
    assert outcome is not None and outcome.kind is QrKind.WIFI
    wait_for(lambda: service.provisioned)
    assert radio.connect_calls == [WifiCredentials("Café Ünïcode", PASSPHRASE)]


def test_quoted_ssid_is_joined_without_its_quotes(
    service: ProvisioningService, radio: RadioDouble
) -> None:
    outcome = service.offer_frame(_frame('WIFI:T:WPA;S:"CAFE";P:"password-1";;'), START)
    assert outcome is not None and outcome.kind is QrKind.WIFI
    wait_for(lambda: service.provisioned)
    assert radio.connect_calls == [WifiCredentials("CAFE", "password-1")]


def test_wep_qr_is_refused_at_once_and_nothing_is_tried(
    service: ProvisioningService, radio: RadioDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outcome = service.offer_frame(_frame("WIFI:T:WEP;S:Old-Router;P:0123456789;;"), START)
    assert outcome is not None and outcome.kind is QrKind.REJECTED
    assert outcome.reason == WEP_REFUSED
    assert WEP_REFUSED in caplog.text
    # Refused before any connection attempt: nothing runs into a timeout.
    assert radio.connect_calls == []
    assert not service.provisioned


def test_provisioned_device_takes_a_wifi_qr_only_after_the_owner_reopens(
    tmp_path: pathlib.Path, radio: RadioDouble, clock: ManualClock
) -> None:
    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    store.save_credentials(WifiCredentials("Old-Router"))
    with _service(tmp_path, radio, clock) as service:
        assert service.provisioned
        text = "WIFI:T:WPA;S:CAFE;P:password-1;;"
        refused = service.offer_frame(_frame(text), START)
        assert refused is not None and refused.kind is QrKind.REJECTED
        assert "reopen provisioning" in refused.reason
        assert radio.connect_calls == []
        command_handlers(service)["provisioning.open_window"]({})
        # A different code (the same one is not acted on twice within 30 s).
        taken = service.offer_frame(_frame(text.replace("CAFE", '"CAFE"')), START + 2)
        assert taken is not None and taken.kind is QrKind.WIFI
        wait_for(lambda: service.status()["window"] == "succeeded")
        assert radio.connect_calls == [WifiCredentials("CAFE", "password-1")]
