"""Improv serial conformance (https://www.improv-wifi.com/serial/), byte for byte.

The expected bytes are written out by hand from the spec's packet layout
("IMPROV" 01 type length data checksum), not produced by the encoder under
test.  The device-level tests drive the state machine; the service-level ones
talk to the real provisioning service over a pty.
"""

from __future__ import annotations

import os
import pathlib
import select
import time
from collections.abc import Iterator

import pytest

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning import improv
from agent.provisioning.improv import Command, State
from agent.provisioning.improv_device import DeviceInfo, ImprovDevice
from agent.provisioning.wifi import ConnectOutcome, ConnectResult, WifiCredentials
from drivers.provisioning.button import KEY_WPS_BUTTON, EvdevButton, encode_event
from drivers.provisioning.service import ProvisioningService, build_service, command_handlers
from drivers.provisioning.store import FileProvisioningStore
from tests.provisioning.radio_double import DOUBLE_ADDRESS, RadioDouble
from tests.provisioning.support import make_config

H = "49 4d 50 52 4f 56 01"  # "IMPROV", version 1
NO_ERROR = bytes.fromhex(f"{H} 02 01 00 e1")
INVALID_PACKET = bytes.fromhex(f"{H} 02 01 01 e2")
UNKNOWN_RPC = bytes.fromhex(f"{H} 02 01 02 e3")
UNABLE_TO_CONNECT = bytes.fromhex(f"{H} 02 01 03 e4")
NOT_AUTHORIZED = bytes.fromhex(f"{H} 02 01 04 e5")
STATE_AUTHORIZATION_REQUIRED = bytes.fromhex(f"{H} 01 01 01 e1")
STATE_AUTHORIZED = bytes.fromhex(f"{H} 01 01 02 e2")
STATE_PROVISIONING = bytes.fromhex(f"{H} 01 01 03 e3")
STATE_PROVISIONED = bytes.fromhex(f"{H} 01 01 04 e4")
# RPC results carrying "http://192.0.2.10/": for "request current state" (02) and
# for "send Wi-Fi settings" (01).
URL_HEX = "12 68 74 74 70 3a 2f 2f 31 39 32 2e 30 2e 32 2e 31 30 2f"
STATE_RESULT_URL = bytes.fromhex(f"{H} 04 15 02 13 {URL_HEX} 8e")
WIFI_RESULT_URL = bytes.fromhex(f"{H} 04 15 01 13 {URL_HEX} 8d")
STATE_RESULT_EMPTY = bytes.fromhex(f"{H} 04 02 02 00 e6")
GET_STATE = bytes.fromhex(f"{H} 03 02 02 00 e5")
UNKNOWN_COMMAND = bytes.fromhex(f"{H} 03 02 42 00 25")
# SSID "Cafe", empty password
WIFI_CAFE = bytes.fromhex(f"{H} 03 08 01 06 04 43 61 66 65 00 63")

INFO = DeviceInfo("edge-agent", "0.1.0", "edge-cam-1/rev-a", "EA-1")
T0 = 1000.0


def _frame(raw: bytes) -> improv.Frame:
    return improv.decode_frame(raw)


def test_hand_written_vectors_match_the_spec_layout() -> None:
    # The vectors agree with the codec (and so the codec with the spec).
    assert improv.encode_rpc(Command.REQUEST_CURRENT_STATE, b"") == GET_STATE
    assert improv.encode_wifi_settings(b"Cafe", b"") == WIFI_CAFE
    assert improv.encode_state(State.PROVISIONED) == STATE_PROVISIONED


def _bytes(frames: tuple[bytes, ...] | list[bytes]) -> bytes:
    return b"".join(frames)


def test_every_rpc_is_first_answered_with_no_error() -> None:
    device = ImprovDevice(INFO, list, "http://{ip}/")
    assert _bytes(device.receive(_frame(GET_STATE), T0).frames) == NO_ERROR + STATE_AUTHORIZED
    assert _bytes(device.receive(_frame(UNKNOWN_COMMAND), T0).frames) == NO_ERROR + UNKNOWN_RPC
    info = device.receive(_frame(improv.encode_rpc(Command.REQUEST_DEVICE_INFO, b"")), T0)
    assert info.frames[0] == NO_ERROR and len(info.frames) == 2
    scan = device.receive(_frame(improv.encode_rpc(Command.REQUEST_SCANNED_NETWORKS, b"")), T0)
    assert scan.frames[0] == NO_ERROR
    wifi = device.receive(_frame(WIFI_CAFE), T0)
    assert _bytes(wifi.frames) == NO_ERROR + STATE_PROVISIONING
    assert wifi.connect == WifiCredentials("Cafe")


def test_provisioned_device_answers_state_with_the_redirect_url() -> None:
    device = ImprovDevice(
        INFO, list, "http://{ip}/", provisioned=lambda: True, address=lambda: DOUBLE_ADDRESS
    )
    reply = device.receive(_frame(GET_STATE), T0)
    assert _bytes(reply.frames) == NO_ERROR + STATE_PROVISIONED + STATE_RESULT_URL


def test_provisioned_device_without_an_address_still_sends_the_result() -> None:
    # The SDK waits for the result: an empty list, never nothing.
    device = ImprovDevice(INFO, list, "http://{ip}/", provisioned=lambda: True)
    reply = device.receive(_frame(GET_STATE), T0)
    assert _bytes(reply.frames) == NO_ERROR + STATE_PROVISIONED + STATE_RESULT_EMPTY


def test_successful_connection_answers_with_the_url_and_then_refuses_more() -> None:
    device = ImprovDevice(INFO, list, "http://{ip}/")
    assert device.receive(_frame(WIFI_CAFE), T0).connect is not None
    done = device.connect_finished(ConnectResult(ConnectOutcome.CONNECTED, DOUBLE_ADDRESS), T0)
    assert _bytes(done) == STATE_PROVISIONED + WIFI_RESULT_URL
    again = device.receive(_frame(WIFI_CAFE), T0 + 1)
    assert _bytes(again.frames) == NO_ERROR + NOT_AUTHORIZED
    assert again.connect is None


def test_reopened_provisioning_takes_credentials_on_a_provisioned_device() -> None:
    reopened = [False]
    device = ImprovDevice(
        INFO, list, "http://{ip}/", provisioned=lambda: True, reopened=lambda: reopened[0]
    )
    assert _bytes(device.receive(_frame(WIFI_CAFE), T0).frames) == NO_ERROR + NOT_AUTHORIZED
    reopened[0] = True
    reply = device.receive(_frame(WIFI_CAFE), T0)
    assert reply.connect == WifiCredentials("Cafe")
    failed = device.connect_finished(ConnectResult(ConnectOutcome.NOT_FOUND), T0)
    # The old network stays: still provisioned after a failed change.
    assert _bytes(failed) == STATE_PROVISIONED + UNABLE_TO_CONNECT  # state first (see below)


def test_button_authorizes_for_a_while_and_a_failure_restarts_the_timer() -> None:
    device = ImprovDevice(INFO, list, "", authorization_seconds=60)
    assert device.state(T0) is State.AUTHORIZATION_REQUIRED
    assert device.tick(T0) == []  # the starting state is not news
    assert _bytes(device.receive(_frame(GET_STATE), T0).frames) == (
        NO_ERROR + STATE_AUTHORIZATION_REQUIRED
    )
    assert _bytes(device.receive(_frame(WIFI_CAFE), T0).frames) == NO_ERROR + NOT_AUTHORIZED
    device.authorize(T0)
    assert _bytes(device.tick(T0)) == STATE_AUTHORIZED  # told to listening clients
    assert device.tick(T0 + 1) == []
    assert device.receive(_frame(WIFI_CAFE), T0 + 50).connect is not None
    failed = device.connect_finished(ConnectResult(ConnectOutcome.TIMEOUT), T0 + 55)
    # The state before the error: the SDK fails the request when the error frame
    # arrives, and must already see the device ready for another try.
    assert _bytes(failed) == STATE_AUTHORIZED + UNABLE_TO_CONNECT
    # The timer started over at the failure: still authorized past the first minute.
    assert device.state(T0 + 100) is State.AUTHORIZED
    assert _bytes(device.tick(T0 + 115)) == STATE_AUTHORIZATION_REQUIRED


# --- the service on a pty ---------------------------------------------------------------


class Line:
    """The installer's end of the pty: raw bytes out, exact bytes back."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def exchange(self, request: bytes, expected_len: int, timeout: float = 5.0) -> bytes:
        os.write(self.fd, request)
        return self.read(expected_len, timeout)

    def read(self, count: int, timeout: float = 5.0) -> bytes:
        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {got.hex(' ')} arrived"
            if select.select([self.fd], [], [], remaining)[0]:
                got += os.read(self.fd, count - len(got))
        return got


@pytest.fixture
def pty() -> Iterator[tuple[Line, str]]:
    master, slave = os.openpty()
    try:
        yield Line(master), os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def _start(
    state_dir: pathlib.Path, port: str, radio: RadioDouble, **extra: object
) -> ProvisioningService:
    config = make_config(state_dir, lan_enabled=False, improv_serial_port=port, **extra)
    service = build_service(config, radio)
    service.start()
    return service


def test_service_on_a_provisioned_device_answers_and_refuses_until_reopened(
    tmp_path: pathlib.Path, pty: tuple[Line, str]
) -> None:
    line, port = pty
    radio = RadioDouble({"Home": "passphrase-1", "Cafe": None})
    # A device provisioned before this start; its radio is up with an address.
    assert radio.connect(WifiCredentials("Home", "passphrase-1"), 1).ok
    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    store.save_credentials(WifiCredentials("Home", "passphrase-1"))
    service = _start(tmp_path, port, radio)
    try:
        answer = line.exchange(GET_STATE, len(NO_ERROR + STATE_PROVISIONED + STATE_RESULT_URL))
        assert answer == NO_ERROR + STATE_PROVISIONED + STATE_RESULT_URL
        assert line.exchange(WIFI_CAFE, 22) == NO_ERROR + NOT_AUTHORIZED
        # Answered in order: had the refused settings started a connection, it came first.
        assert line.exchange(GET_STATE, len(answer)) == answer
        assert len(radio.connect_calls) == 1
        command_handlers(service)["provisioning.open_window"]({})
        moved = NO_ERROR + STATE_PROVISIONING + STATE_PROVISIONED + WIFI_RESULT_URL
        assert line.exchange(WIFI_CAFE, len(moved)) == moved
        assert radio.connect_calls[-1] == WifiCredentials("Cafe")
        # The change closed the window: the next one is refused again.
        assert line.exchange(WIFI_CAFE, 22) == NO_ERROR + NOT_AUTHORIZED
    finally:
        service.stop()
    assert len(radio.connect_calls) == 2


def test_service_refuses_a_second_network_after_provisioning_over_improv(
    tmp_path: pathlib.Path, pty: tuple[Line, str]
) -> None:
    """The issue: Improv still took credentials (and saved a second network) afterwards."""
    line, port = pty
    radio = RadioDouble({"Home": "passphrase-1", "Cafe": None})
    service = _start(tmp_path, port, radio)
    try:
        home = improv.encode_wifi_settings(b"Home", b"passphrase-1")
        done = NO_ERROR + STATE_PROVISIONING + STATE_PROVISIONED + WIFI_RESULT_URL
        assert line.exchange(home, len(done)) == done
        assert line.exchange(WIFI_CAFE, 22) == NO_ERROR + NOT_AUTHORIZED
        assert service.status()["window"] == "succeeded"
    finally:
        service.stop()
    assert radio.connect_calls == [WifiCredentials("Home", "passphrase-1")]


def test_service_with_a_button_device_needs_a_press(
    tmp_path: pathlib.Path, pty: tuple[Line, str]
) -> None:
    line, port = pty
    button = tmp_path / "gpio-keys"
    os.mkfifo(button)
    radio = RadioDouble({"Cafe": None})
    service = _start(tmp_path, port, radio, improv_button_device=str(button))
    try:
        assert line.exchange(GET_STATE, 22) == NO_ERROR + STATE_AUTHORIZATION_REQUIRED
        assert line.exchange(WIFI_CAFE, 22) == NO_ERROR + NOT_AUTHORIZED
        writer = os.open(button, os.O_WRONLY)
        try:
            os.write(writer, encode_event(KEY_WPS_BUTTON, 1))
        finally:
            os.close(writer)
        # The press is announced without being asked.
        assert line.read(11, timeout=10) == STATE_AUTHORIZED
        done = NO_ERROR + STATE_PROVISIONING + STATE_PROVISIONED + WIFI_RESULT_URL
        assert line.exchange(WIFI_CAFE, len(done)) == done
    finally:
        service.stop()
    assert radio.connect_calls == [WifiCredentials("Cafe")]


def test_button_reader_counts_only_presses_of_its_key(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "event0"
    os.mkfifo(fifo)
    presses: list[float] = []
    button = EvdevButton(str(fifo), KEY_WPS_BUTTON, lambda: presses.append(time.monotonic()))
    button.start()
    try:
        writer = os.open(fifo, os.O_WRONLY)
        try:
            # Another key, a non-key event, the button's auto-repeat and release ...
            noise = encode_event(30, 1) + encode_event(KEY_WPS_BUTTON, 1, ev_type=0x04)
            noise += encode_event(KEY_WPS_BUTTON, 2) + encode_event(KEY_WPS_BUTTON, 0)
            # ... then one press, split across two writes as a reader may see it.
            press = encode_event(KEY_WPS_BUTTON, 1)
            os.write(writer, noise + press[:10])
            os.write(writer, press[10:])
        finally:
            os.close(writer)
        deadline = time.monotonic() + 5
        while not presses and time.monotonic() < deadline:
            time.sleep(0.01)
        # Events are read in order: everything before the press has been judged by now.
        assert len(presses) == 1
    finally:
        button.stop()
