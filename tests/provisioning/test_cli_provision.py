"""``edge-agent provision`` end to end: label, LAN (real HTTP), Improv (real pty)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning.binding import parse_label
from agent.provisioning.improv_device import DeviceInfo, ImprovDevice
from agent.provisioning.provisioner import Provisioner
from drivers.cli import main
from drivers.clock import SystemClock
from drivers.provisioning.qr_reader import QrReader
from drivers.provisioning.service import ProvisioningService, build_service
from drivers.provisioning.store import FileProvisioningStore
from tests.provisioning.radio_double import RadioDouble
from tests.provisioning.support import ImprovPeerDevice, make_config

PASSPHRASE = "cli-Passphrase-0451"


def _device_config(tmp_path: pathlib.Path, serial: str) -> list[str]:
    config = tmp_path / "agent.toml"
    config.write_text(f'[device]\nserial_number = "{serial}"\n')
    return ["--config", str(config), "--state-dir", str(tmp_path)]


def test_label_prints_payload_and_writes_png(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "label.png"
    options = _device_config(tmp_path, "EA-HUB-4711")
    assert main(["provision", "label", *options, "--png", str(png)]) == 0
    payload = capsys.readouterr().out.strip()
    label = parse_label(payload)
    assert label.serial_number == "EA-HUB-4711"
    image = cv2.imread(str(png))
    assert image is not None
    assert QrReader().read(np.asarray(image, dtype=np.uint8)) == payload
    # the code is stable across invocations
    assert main(["provision", "label", *options]) == 0
    assert capsys.readouterr().out.strip() == payload
    assert main(["provision", "label", *options, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["payload"] == payload
    assert document["serial_number"] == "EA-HUB-4711"
    assert document["verification_code"] == label.verification_code


def test_label_refuses_the_sample_serial(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "label.png"
    # The built-in defaults (no config file, a state directory of its own) carry the sample serial.
    assert main(["provision", "label", "--state-dir", str(tmp_path), "--png", str(png)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "EA-SAMPLE-0001 is the sample serial number" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not png.exists()
    # Nothing about the device (no verification code) was created for it either.
    assert not any(tmp_path.iterdir())


@pytest.fixture
def device(tmp_path: pathlib.Path) -> Iterator[tuple[ProvisioningService, RadioDouble]]:
    radio = RadioDouble({"Home": PASSPHRASE, "Guest": None})
    service = build_service(make_config(tmp_path / "device"), radio)
    service.start()
    try:
        yield service, radio
    finally:
        service.stop()


def _url(service: ProvisioningService) -> str:
    assert service.lan is not None
    return f"http://127.0.0.1:{service.lan.port}"


def test_lan_with_ssid_and_passphrase_file(
    device: tuple[ProvisioningService, RadioDouble],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service, _radio = device
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE + "\n")
    argv = ["provision", "lan", "--device", _url(service), "--code"]
    argv += [service.binding.verification_code, "--ssid", "Home", "--passphrase-file", str(secret)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "connected: Home" in out
    assert "device verified" in err
    assert PASSPHRASE not in out + err
    assert service.provisioned


def test_lan_interactive_choice_from_device_scan(
    device: tuple[ProvisioningService, RadioDouble],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service, radio = device
    monkeypatch.setattr("builtins.input", lambda _prompt: "2")
    monkeypatch.setattr("getpass.getpass", lambda _prompt: "")
    label = f"edge-agent:provision?v=1&sn={service.binding.serial_number}"
    label += f"&code={service.binding.verification_code}"
    assert main(["provision", "lan", "--device", _url(service), "--label", label]) == 0
    assert "Guest" in capsys.readouterr().err
    assert radio.connect_calls[-1].ssid == "Guest"


def test_lan_wrong_code_exits_2_with_one_line(
    device: tuple[ProvisioningService, RadioDouble],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service, _ = device
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE)
    wrong = "40719382" if service.binding.verification_code != "40719382" else "50719382"
    argv = ["provision", "lan", "--device", _url(service), "--code", wrong]
    argv += ["--ssid", "Home", "--passphrase-file", str(secret)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edge-agent: error:") and "verification" in err[-1]
    assert not service.provisioned


def test_lan_unreachable_device_exits_1(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["provision", "lan", "--device", f"http://127.0.0.1:{port}", "--code", "40719382"]
    assert main([*argv, "--ssid", "Home"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_improv_cli_against_device_on_pty(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master, slave = os.openpty()
    radio = RadioDouble({"Home": PASSPHRASE})
    device = ImprovDevice(DeviceInfo("edge-agent", "0.1.0", "c", "d"), lambda: radio.scan(1), "")
    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    provisioner = Provisioner(radio, store, SystemClock())
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE)
    try:
        argv = ["provision", "improv", "--port", os.ttyname(slave), "--ssid", "Home"]
        with ImprovPeerDevice(master, device, provisioner):
            assert main([*argv, "--passphrase-file", str(secret)]) == 0
    finally:
        os.close(master)
        os.close(slave)
    out, err = capsys.readouterr()
    assert "connected: Home" in out
    assert "device state: provisioning" in err
    assert provisioner.provisioned


def test_improv_cli_missing_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provision", "improv", "--port", "/nonexistent/ttyX", "--ssid", "x"]) == 1
    assert "cannot open serial port" in capsys.readouterr().err
