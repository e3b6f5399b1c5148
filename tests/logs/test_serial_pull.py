"""Technician client and device service talking over a real pty pair."""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time
from collections.abc import Iterator

import pytest

from agent.audit import AuditLog
from agent.errors import VerificationError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs import codes, frames
from agent.logs.pull import AuthLimiter, PullSession, TechnicianSecrets, auth_mac
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from drivers.logs.feature import bundle_provider
from drivers.logs.serial_link import FdChannel, SerialChannel, SerialLogService, TechnicianClient
from drivers.logs.store import LogStore

CODE = "493-117"


class Device:
    def __init__(self, state_dir: pathlib.Path, limiter: AuthLimiter, chunk_bytes: int) -> None:
        master, slave = os.openpty()
        self.master = master
        self.store = LogStore(state_dir, LogSettings(), keys=DataKeys(StateLayout(state_dir)))
        self.audit = AuditLog.in_state_dir(state_dir)
        secrets = TechnicianSecrets(lambda: CODE, lambda: "tech-token-0001")
        provide = bundle_provider(self.store, Redactor(lambda: ["Winifred"]), LogSettings())
        self.service = SerialLogService(
            SerialChannel(os.ttyname(slave)),
            lambda: PullSession(secrets, limiter, provide, chunk_bytes=chunk_bytes,
                                audit=self.audit),
        )
        os.close(slave)  # pyserial holds its own descriptor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        self.service.start()
        while not self._stop.is_set():
            self.service.tick(time.time())
            if not self.service.busy:
                time.sleep(0.002)

    def __enter__(self) -> Device:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.service.stop()
        self.audit.close()


def _write_logs(store: LogStore, count: int) -> None:
    store.directory.mkdir(parents=True, exist_ok=True)
    with open(store.live_path, "w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(json.dumps({"ts": 1000.0 + i, "level": "INFO", "logger": "t",
                                 "msg": f"line {i} for Winifred " + "y" * 100}) + "\n")


@pytest.fixture
def device(tmp_path: pathlib.Path) -> Iterator[Device]:
    with Device(tmp_path, AuthLimiter(3, 60.0), chunk_bytes=1024) as dev:
        _write_logs(dev.store, 300)
        yield dev


def _client(device: Device) -> TechnicianClient:
    return TechnicianClient(FdChannel(os.dup(device.master)), timeout=10)


def test_pull_with_verification_code_transfers_in_chunks(device: Device) -> None:
    progress: list[tuple[int, int]] = []
    data = _client(device).pull("code", CODE, {"tail": 200}, lambda d, t: progress.append((d, t)))
    lines = data.decode().splitlines()
    header = json.loads(lines[0])
    assert header["lines"] == 200 and not header["truncated"]
    assert json.loads(lines[-1])["msg"].startswith("line 299")
    assert "Winifred" not in data.decode()
    assert len(progress) > 10 and progress[-1][0] == progress[-1][1] == len(data)
    assert [e.kind for e in device.audit.entries()] == ["logs.pull"]


def test_pull_with_technician_token(device: Device) -> None:
    data = _client(device).pull("token", "tech-token-0001", {"grep": "line 7", "level": "INFO"})
    assert json.loads(data.decode().splitlines()[0])["lines"] == 11  # 7, 70..79


def test_wrong_code_is_refused_and_get_needs_auth(device: Device) -> None:
    client = _client(device)
    with pytest.raises(VerificationError):
        client.authenticate("code", "000-000")
    client.send({"t": "get", "query": {}})
    reply = client.receive()
    assert reply["t"] == "error" and reply["code"] == codes.AUTH_FAILED.code


def test_repeated_failures_lock_out_even_the_right_code(device: Device) -> None:
    client = _client(device)
    for _ in range(3):
        with pytest.raises(VerificationError):
            client.authenticate("code", "bad")
    with pytest.raises(VerificationError, match=codes.AUTH_LOCKED_OUT.code):
        client.authenticate("code", CODE)


def test_replayed_auth_frame_is_refused(device: Device) -> None:
    client = _client(device)
    client.send({"t": "hello"})
    nonce = client.receive()["nonce"]
    auth = {"t": "auth", "method": "code", "mac": auth_mac(CODE, nonce)}
    client.send(auth)
    assert client.receive()["t"] == "auth_ok"
    client.send({"t": "hello"})
    client.receive()  # fresh challenge; replay the old answer
    client.send(auth)
    assert client.receive()["t"] == "error"


def _hostile_reply(device: Device, raw: bytes) -> dict[str, object]:
    client = _client(device)
    FdChannel(os.dup(device.master)).write(raw)
    reply = client.receive()
    # The line stays usable after the hostile input.
    client.send({"t": "hello"})
    assert client.receive()["t"] == "challenge"
    return reply


def test_serial_bad_crc_gets_an_error_frame(device: Device) -> None:
    bad = bytearray(frames.encode({"t": "hello"}))
    bad[-2] ^= 0x55
    reply = _hostile_reply(device, bytes(bad))
    assert reply["code"] == codes.SERIAL_BAD_FRAME.code and "CRC" in str(reply["reason"])


def test_serial_oversized_length_gets_an_error_frame(device: Device) -> None:
    reply = _hostile_reply(device, frames.MAGIC + b"\x7f\xff\xff\xff")
    assert reply["code"] == codes.SERIAL_BAD_FRAME.code and "TooLarge" in str(reply["reason"])


def test_serial_garbage_gets_an_error_frame(device: Device) -> None:
    reply = _hostile_reply(device, os.urandom(64).replace(frames.MAGIC[:1], b"") * 80)
    assert reply["code"] == codes.SERIAL_BAD_FRAME.code


def test_serial_unknown_message_type_gets_an_error_frame(device: Device) -> None:
    reply = _hostile_reply(device, frames.encode({"t": "rm -rf"}))
    assert reply["t"] == "error"
