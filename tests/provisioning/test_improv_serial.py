"""Improv over a real pty pair: the device channel on the slave, a raw peer on the master."""

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
from agent.provisioning.improv import Command, ErrorCode, Frame, FrameType, State
from agent.provisioning.improv_device import DeviceInfo, ImprovDevice
from agent.provisioning.provisioner import Provisioner
from agent.provisioning.wifi import WifiCredentials
from drivers.clock import SystemClock
from drivers.provisioning.improv_serial import (
    INTER_BYTE_TIMEOUT,
    ImprovClient,
    ImprovSerialChannel,
    open_port,
)
from drivers.provisioning.store import FileProvisioningStore
from tests.provisioning.radio_double import DOUBLE_ADDRESS, RadioDouble
from tests.provisioning.support import ImprovPeerDevice

INFO = DeviceInfo("edge-agent", "0.1.0", "edge-cam-1/rev-a", "EA-PTY")
CLEARED = Frame(FrameType.ERROR_STATE, bytes([ErrorCode.NONE]))


class PtyPeer:
    """Reads and writes the master end of a pty, cutting Improv frames out."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.decoder = improv.StreamDecoder()

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def frames(self, count: int, timeout: float = 5.0) -> list[Frame]:
        got: list[Frame] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {got} arrived"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                got.extend(
                    f for f in self.decoder.feed(os.read(self.fd, 512)) if isinstance(f, Frame)
                )
        return got


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def radio() -> RadioDouble:
    return RadioDouble({"Home": "correct horse battery", "Cafe": None})


@pytest.fixture
def channel(
    pty_pair: tuple[int, str], radio: RadioDouble, tmp_path: pathlib.Path
) -> Iterator[tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore]]:
    master, path = pty_pair
    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    provisioner = Provisioner(radio, store, SystemClock())
    device = ImprovDevice(INFO, lambda: radio.scan(1.0), "http://{ip}/")
    served = ImprovSerialChannel(
        open_port(path, 115200), device, lambda c: provisioner.apply(c, "improv")
    )
    served.start()
    try:
        yield PtyPeer(master), served, store
    finally:
        served.stop()


def test_current_state_over_pty(
    channel: tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore],
) -> None:
    peer, _, _ = channel
    peer.send(improv.encode_rpc(Command.REQUEST_CURRENT_STATE, b""))
    assert peer.frames(2) == [CLEARED, Frame(FrameType.CURRENT_STATE, bytes([State.AUTHORIZED]))]


def test_wifi_settings_over_pty_connects_and_saves(
    channel: tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore], radio: RadioDouble
) -> None:
    peer, served, store = channel
    peer.send(improv.encode_wifi_settings(b"Home", b"correct horse battery"))
    frames = peer.frames(4)
    assert frames[:2] == [CLEARED, Frame(FrameType.CURRENT_STATE, bytes([State.PROVISIONING]))]
    assert frames[-2] == Frame(FrameType.CURRENT_STATE, bytes([State.PROVISIONED]))
    result = improv.decode_rpc(frames[-1])
    assert result.command == Command.SEND_WIFI_SETTINGS
    assert improv.decode_strings(result.payload) == [f"http://{DOUBLE_ADDRESS}/".encode()]
    assert served.state is State.PROVISIONED
    # The network is remembered; its key stays with the Wi-Fi backend alone.
    assert store.load_credentials() == WifiCredentials("Home")
    assert b"correct horse battery" not in store.credentials_path.read_bytes()
    assert radio.connect_calls[-1].ssid == "Home"


def test_wrong_key_over_pty_reports_unable_to_connect_and_saves_nothing(
    channel: tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore],
) -> None:
    peer, _, store = channel
    peer.send(improv.encode_wifi_settings(b"Home", b"wrong passphrase"))
    frames = peer.frames(4)
    # Back to authorized, then the error (the order the official SDK needs).
    assert frames[-2:] == [
        Frame(FrameType.CURRENT_STATE, bytes([State.AUTHORIZED])),
        Frame(FrameType.ERROR_STATE, bytes([ErrorCode.UNABLE_TO_CONNECT])),
    ]
    assert not store.has_credentials()


def test_bad_checksum_over_pty_gets_invalid_packet(
    channel: tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore],
) -> None:
    peer, _, _ = channel
    raw = bytearray(improv.encode_rpc(Command.REQUEST_CURRENT_STATE, b""))
    raw[-1] ^= 0xFF
    peer.send(bytes(raw))
    assert peer.frames(1) == [Frame(FrameType.ERROR_STATE, bytes([ErrorCode.INVALID_PACKET]))]


def test_truncated_frame_then_idle_line_recovers_over_pty(
    channel: tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore],
) -> None:
    peer, _, _ = channel
    sent = time.monotonic()
    peer.send(improv.encode_wifi_settings(b"Home", b"correct horse battery")[:15])
    assert peer.frames(1) == [Frame(FrameType.ERROR_STATE, bytes([ErrorCode.INVALID_PACKET]))]
    # Only a line silent for the whole inter-byte timeout ends a started frame.
    assert time.monotonic() - sent >= INTER_BYTE_TIMEOUT - 0.05
    peer.send(improv.encode_rpc(Command.REQUEST_CURRENT_STATE, b""))
    assert peer.frames(2) == [CLEARED, Frame(FrameType.CURRENT_STATE, bytes([State.AUTHORIZED]))]


@pytest.mark.parametrize("pause", [0.15, 0.6])
def test_pauses_inside_a_frame_are_tolerated_over_pty(
    channel: tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore],
    radio: RadioDouble,
    pause: float,
) -> None:
    """A USB-serial adapter delivers a frame in pieces: 150 ms and 600 ms gaps are no error."""
    peer, served, _ = channel
    raw = improv.encode_wifi_settings(b"Home", b"correct horse battery")
    for start in range(0, len(raw), 7):
        peer.send(raw[start : start + 7])
        time.sleep(pause)
    frames = peer.frames(4)
    assert Frame(FrameType.ERROR_STATE, bytes([ErrorCode.INVALID_PACKET])) not in frames
    assert frames[-2] == Frame(FrameType.CURRENT_STATE, bytes([State.PROVISIONED]))
    assert served.state is State.PROVISIONED
    assert radio.connect_calls == [WifiCredentials("Home", "correct horse battery")]


def test_unknown_rpc_over_pty(
    channel: tuple[PtyPeer, ImprovSerialChannel, FileProvisioningStore],
) -> None:
    peer, _, _ = channel
    peer.send(improv.encode_rpc(0x42, b"\x00"))
    assert peer.frames(2) == [CLEARED, Frame(FrameType.ERROR_STATE, bytes([ErrorCode.UNKNOWN_RPC]))]


def test_client_scan_and_provision_against_device_on_pty(
    pty_pair: tuple[int, str], radio: RadioDouble, tmp_path: pathlib.Path
) -> None:
    """ImprovClient on the slave path; a device state machine serving the master end."""
    master, path = pty_pair
    device = ImprovDevice(INFO, lambda: radio.scan(1.0), "http://{ip}/")
    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    provisioner = Provisioner(radio, store, SystemClock())
    port = open_port(path, 115200)
    try:
        with ImprovPeerDevice(master, device, provisioner):
            client = ImprovClient(port)
            assert client.current_state() is State.AUTHORIZED
            assert client.device_info() == ["edge-agent", "0.1.0", "edge-cam-1/rev-a", "EA-PTY"]
            assert client.scan() == [("Home", -40, True), ("Cafe", -45, False)]
            progress: list[str] = []
            url = client.send_wifi(WifiCredentials("Cafe"), progress=progress.append)
    finally:
        port.close()
    assert url == f"http://{DOUBLE_ADDRESS}/"
    assert "device state: provisioning" in progress
