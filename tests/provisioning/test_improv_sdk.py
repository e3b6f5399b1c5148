"""The official Improv serial SDK (npm improv-wifi-serial-sdk) against the service on a pty.

The SDK runs unmodified under Node (tests/provisioning/improv_sdk/driver.mjs);
the device end is the real provisioning service with Improv on the pty's slave
end and a radio double for the Wi-Fi backend.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from agent.provisioning.wifi import WifiCredentials
from drivers.provisioning.button import KEY_WPS_BUTTON, encode_event
from drivers.provisioning.service import ProvisioningService, build_service, command_handlers
from tests.provisioning.radio_double import DOUBLE_ADDRESS, RadioDouble
from tests.provisioning.sdk_peer import SdkSession, sdk_dir
from tests.provisioning.support import make_config, wait_for

URL = f"http://{DOUBLE_ADDRESS}/"
READY, PROVISIONING, PROVISIONED = 2, 3, 4
AUTHORIZATION_REQUIRED = 1
NOT_AUTHORIZED = "UNKNOWN_ERROR (4)"  # the serial SDK has no name for Improv's 0x04


@pytest.fixture(scope="module", autouse=True)
def _sdk_installed() -> None:
    sdk_dir()


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def radio() -> RadioDouble:
    return RadioDouble({"Home": "correct horse battery", "Cafe": None})


def _service(
    state_dir: pathlib.Path, port: str, radio: RadioDouble, **extra: object
) -> ProvisioningService:
    config = make_config(state_dir, lan_enabled=False, improv_serial_port=port, **extra)
    service = build_service(config, radio)
    service.start()
    return service


def _errors(answer: dict[str, object]) -> list[object]:
    events = answer["events"]
    assert isinstance(events, list)
    return [e["value"] for e in events if e["type"] == "error"]


HOME: dict[str, Any] = {"ssid": "Home", "password": "correct horse battery"}


def _provision_home(sdk: SdkSession) -> None:
    assert sdk.request("initialize")["ok"]
    assert sdk.request("provision", **HOME)["ok"]


def test_sdk_provisions_an_unprovisioned_device(
    tmp_path: pathlib.Path, pty: tuple[int, str], radio: RadioDouble
) -> None:
    master, port = pty
    service = _service(tmp_path, port, radio)
    try:
        with SdkSession(master) as sdk:
            ready = sdk.request("initialize")
            assert ready["ok"], ready
            assert ready["state"] == READY and ready["nextUrl"] is None
            assert ready["info"]["firmware"] == "edge-agent"
            assert ready["info"]["name"] == service.binding.serial_number
            scan = sdk.request("scan")
            assert [n["name"] for n in scan["networks"]] == ["Cafe", "Home"]
            assert [n["secured"] for n in scan["networks"]] == [False, True]
            done = sdk.request("provision", **HOME)
            assert done["ok"], done
            assert (done["state"], done["nextUrl"]) == (PROVISIONED, URL)
            states = [e["value"] for e in done["events"] if e["type"] == "state"]
            assert states == [PROVISIONING, PROVISIONED]
            # Every command began with the "no error" update the spec asks for.
            for answer in (ready, scan, done):
                assert _errors(answer)[:1] == [0], answer
    finally:
        service.stop()
    assert service.provisioned
    assert radio.connect_calls == [WifiCredentials("Home", "correct horse battery")]


def test_sdk_reconnects_to_a_provisioned_device_after_a_restart(
    tmp_path: pathlib.Path, pty: tuple[int, str], radio: RadioDouble
) -> None:
    """The issue: the SDK could not open an already provisioned device (no URL result)."""
    master, port = pty
    first = _service(tmp_path, port, radio)
    try:
        with SdkSession(master) as sdk:
            _provision_home(sdk)
    finally:
        first.stop()
    again = _service(tmp_path, port, radio)
    try:
        assert again.provisioned
        with SdkSession(master) as sdk:
            opened = sdk.request("initialize")
            assert opened["ok"], opened
            assert (opened["state"], opened["nextUrl"]) == (PROVISIONED, URL)
            assert sdk.request("state")["nextUrl"] == URL
    finally:
        again.stop()


def test_sdk_credentials_are_refused_once_provisioned_until_the_owner_reopens(
    tmp_path: pathlib.Path, pty: tuple[int, str], radio: RadioDouble
) -> None:
    master, port = pty
    service = _service(tmp_path, port, radio)
    try:
        with SdkSession(master) as sdk:
            _provision_home(sdk)
            refused = sdk.request("provision", ssid="Cafe", password="")
            assert not refused["ok"] and refused["message"] == NOT_AUTHORIZED
            assert _errors(refused) == [0, 4]
            assert refused["state"] == PROVISIONED
            assert radio.connect_calls == [WifiCredentials("Home", "correct horse battery")]
            # The owner reopens provisioning (the signed MQTT command's handler).
            command_handlers(service)["provisioning.open_window"]({})
            moved = sdk.request("provision", ssid="Cafe", password="")
            assert moved["ok"], moved
            assert moved["nextUrl"] == URL
            assert radio.connect_calls[-1] == WifiCredentials("Cafe")
            # Success closes the window again: a third network is refused.
            wait_for(lambda: service.status()["window"] == "succeeded")
            third = sdk.request("provision", **HOME)
            assert not third["ok"] and third["message"] == NOT_AUTHORIZED
    finally:
        service.stop()
    assert len(radio.connect_calls) == 2


def test_sdk_sees_unable_to_connect_for_a_wrong_key(
    tmp_path: pathlib.Path, pty: tuple[int, str], radio: RadioDouble
) -> None:
    master, port = pty
    service = _service(tmp_path, port, radio)
    try:
        with SdkSession(master) as sdk:
            assert sdk.request("initialize")["ok"]
            failed = sdk.request("provision", ssid="Home", password="wrong passphrase")
            assert not failed["ok"] and failed["message"] == "UNABLE_TO_CONNECT"
            assert failed["state"] == READY
            assert sdk.request("provision", **HOME)["ok"]
    finally:
        service.stop()
    assert service.provisioned
    assert [c.passphrase for c in radio.connect_calls] == [
        "wrong passphrase",
        "correct horse battery",
    ]


def test_sdk_with_a_button_needs_a_press_before_credentials(
    tmp_path: pathlib.Path, pty: tuple[int, str], radio: RadioDouble
) -> None:
    master, port = pty
    button = tmp_path / "button-event"
    os.mkfifo(button)
    service = _service(tmp_path, port, radio, improv_button_device=str(button))
    try:
        with SdkSession(master) as sdk:
            opened = sdk.request("initialize")
            assert opened["ok"] and opened["state"] == AUTHORIZATION_REQUIRED
            refused = sdk.request("provision", **HOME)
            assert not refused["ok"] and refused["message"] == NOT_AUTHORIZED
            assert radio.connect_calls == []
            # gpio-keys reports the press as input_event records; a release is ignored.
            writer = os.open(button, os.O_WRONLY)
            try:
                os.write(writer, encode_event(KEY_WPS_BUTTON, 1) + encode_event(KEY_WPS_BUTTON, 0))
            finally:
                os.close(writer)
            wait_for(lambda: sdk.request("state")["state"] == READY, timeout=10)
            done = sdk.request("provision", **HOME)
            assert done["ok"] and done["nextUrl"] == URL
    finally:
        service.stop()
