"""The runtime hook: window, limiter and the service's lifecycle."""

from __future__ import annotations

import logging
import os
import pathlib
import select

import numpy as np
import pytest

from agent import config as agent_config
from agent.auth.principals import PrincipalStore
from agent.database import Database
from agent.errors import ConfigError, DeviceIOError, VerificationError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning import improv
from agent.provisioning.improv import Command, Frame, FrameType, State
from agent.provisioning.limits import (
    AttemptLimiter,
    LockedOutError,
    ProvisioningWindow,
    WindowClosedError,
    WindowState,
)
from agent.provisioning.provisioner import Provisioner
from agent.provisioning.wifi import ConnectOutcome, ConnectResult, WifiCredentials
from drivers.provisioning.lan_client import LanClient
from drivers.provisioning.service import STATUS_GRACE_SECONDS, build_service, command_handlers
from drivers.provisioning.store import FileProvisioningStore
from tests.provisioning.radio_double import RadioDouble
from tests.provisioning.support import START, RecordingAudit, make_config, wait_for
from tests.support.clock import FixedClock, ManualClock


def test_window_opens_times_out_and_reopens() -> None:
    window = ProvisioningWindow(600)
    assert window.state(START) is WindowState.NOT_OPENED
    window.open(START)
    assert window.is_open(START + 599.9)
    assert window.remaining(START + 100) == 500
    assert window.state(START + 600) is WindowState.TIMED_OUT
    assert window.closed_at == START + 600
    with pytest.raises(WindowClosedError):
        window.require_open(START + 601)
    window.open(START + 700)
    window.succeed(START + 710)
    assert window.state(START + 720) is WindowState.SUCCEEDED


def test_limiter_uses_a_sliding_window_and_doubles_lockouts() -> None:
    limiter = AttemptLimiter(max_failures=3, window=100, lockout=10, lockout_max=25)
    limiter.record_failure(START)
    limiter.record_failure(START + 1)
    limiter.record_failure(START + 150)  # the first two have aged out
    limiter.check(START + 150)
    limiter.record_failure(START + 151)
    limiter.record_failure(START + 152)
    with pytest.raises(LockedOutError) as first:
        limiter.check(START + 152)
    assert first.value.retry_after == 10
    for t in (170, 171, 172):
        limiter.record_failure(START + t)
    with pytest.raises(LockedOutError) as second:
        limiter.check(START + 172)
    assert second.value.retry_after == 20
    for t in (200, 201, 202):
        limiter.record_failure(START + t)
    with pytest.raises(LockedOutError) as third:
        limiter.check(START + 202)
    assert third.value.retry_after == 25  # capped
    limiter.check(START + 228)


def test_settings_load_from_toml_strictly() -> None:
    cfg = agent_config.parse(
        "[provisioning]\nlan_port = 9000\nqr_scan_interval_seconds = 2.0\n"
        'improv_serial_port = "/dev/ttyS2"\n'
    )
    assert cfg.provisioning.lan_port == 9000
    assert cfg.provisioning.improv_serial_port == "/dev/ttyS2"
    with pytest.raises(ConfigError, match=r"provisioning\.lan_max_failed_attempts"):
        agent_config.parse("[provisioning]\nlan_max_failed_attempts = 0\n")


def test_lan_api_stops_after_success_and_grace(tmp_path: pathlib.Path) -> None:
    clock = ManualClock(START)
    radio = RadioDouble({"Home": "passphrase-1"})
    service = build_service(make_config(tmp_path), radio, clock=clock)
    service.start()
    try:
        assert service.lan is not None
        client = LanClient(f"http://127.0.0.1:{service.lan.port}")
        pake = client.authenticate(service.binding.verification_code, service.binding.serial_number)
        client.provision(pake, WifiCredentials("Home", "passphrase-1"), poll_interval=0.02)
        service.tick(clock.advance(1))
        assert service.lan is not None  # still answering status during the grace period
        service.tick(clock.advance(STATUS_GRACE_SECONDS))
        assert service.lan is None
    finally:
        service.stop()


def test_provisioned_device_opens_no_channel(tmp_path: pathlib.Path) -> None:
    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    store.save_credentials(WifiCredentials("Home", "passphrase-1"))
    store.save_account("acme")
    service = build_service(make_config(tmp_path), RadioDouble())
    service.start()
    try:
        assert service.provisioned
        assert service.lan is None
        assert service.offer_frame(np.zeros((8, 8), dtype=np.uint8), START) is None
    finally:
        service.stop()


def test_improv_served_by_the_service_on_a_pty(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    master, slave = os.openpty()
    audit = RecordingAudit()
    radio = RadioDouble({"Home": "passphrase-1"})
    config = make_config(tmp_path, lan_enabled=False, improv_serial_port=os.ttyname(slave))
    service = build_service(config, radio, audit=audit)
    service.start()
    try:
        os.write(master, improv.encode_wifi_settings(b"Home", b"passphrase-1"))
        decoder = improv.StreamDecoder()
        frames: list[Frame] = []

        def result_arrived() -> bool:
            if select.select([master], [], [], 0.05)[0]:
                frames.extend(f for f in decoder.feed(os.read(master, 512)) if isinstance(f, Frame))
            return any(f.type == FrameType.RPC_RESULT for f in frames)

        wait_for(result_arrived)
        assert Frame(FrameType.CURRENT_STATE, bytes([State.PROVISIONED])) in frames
        assert improv.decode_rpc(frames[-1]).command == Command.SEND_WIFI_SETTINGS
        assert service.provisioned
        assert audit.kinds() == ["provisioning.wifi"]
        assert audit.records[0][1]["channel"] == "improv"
        assert "passphrase-1" not in "\n".join(r.getMessage() for r in caplog.records)
        assert "passphrase-1" not in repr(audit.records)
    finally:
        service.stop()
        os.close(master)
        os.close(slave)


class BrokenRadio(RadioDouble):
    def connect(self, credentials: WifiCredentials, timeout: float) -> ConnectResult:
        raise DeviceIOError("radio firmware crashed")


def test_backend_exception_becomes_a_failed_attempt(tmp_path: pathlib.Path) -> None:
    audit = RecordingAudit()
    provisioner = Provisioner(
        BrokenRadio(),
        FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path))),
        FixedClock(START),
        audit=audit,
    )
    result = provisioner.apply(WifiCredentials("Home", "passphrase-1"), "lan")
    assert result.outcome is ConnectOutcome.FAILED
    assert not provisioner.provisioned
    assert audit.records == [
        ("provisioning.wifi", {"channel": "lan", "outcome": "failed"}, START)
    ]


def test_missing_improv_port_does_not_stop_the_service(tmp_path: pathlib.Path) -> None:
    config = make_config(tmp_path, improv_serial_port="/nonexistent/ttyX")
    service = build_service(config, RadioDouble())
    service.start()
    try:
        assert service.improv is None
        assert service.lan is not None
    finally:
        service.stop()


def test_commands_report_status_and_reopen_the_window(tmp_path: pathlib.Path) -> None:
    clock = ManualClock(START)
    service = build_service(
        make_config(tmp_path, lan_max_failed_attempts=1, lan_lockout_seconds=3600),
        RadioDouble(),
        clock=clock,
    )
    service.start()
    try:
        commands = command_handlers(service)
        assert commands["provisioning.status"]({}) == {
            "provisioned": False,
            "bound": False,
            "window": "open",
        }
        assert service.lan is not None
        client = LanClient(f"http://127.0.0.1:{service.lan.port}")
        wrong = "40719382" if service.binding.verification_code != "40719382" else "50719382"
        with pytest.raises(VerificationError):
            client.authenticate(wrong, service.binding.serial_number)
        service.tick(clock.advance(600 + STATUS_GRACE_SECONDS))
        assert service.lan is None
        assert commands["provisioning.open_window"]({})["window"] == "open"
        assert service.lan is not None
        client = LanClient(f"http://127.0.0.1:{service.lan.port}")
        with pytest.raises(LockedOutError):  # reopening does not reset the lockout
            client.authenticate(service.binding.verification_code, service.binding.serial_number)
    finally:
        service.stop()


def test_audit_trail_and_logs_hold_neither_ssid_nor_account(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit log is append-only and outlives every erasure: no personal values in it."""
    caplog.set_level(logging.DEBUG)
    audit = RecordingAudit()
    provisioner = Provisioner(
        RadioDouble({"Home-Of-Alice": "passphrase-1"}),
        FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path))),
        FixedClock(START),
        audit=audit,
    )
    assert provisioner.apply(WifiCredentials("Home-Of-Alice", "passphrase-1"), "lan").ok
    db = Database.in_state_dir(tmp_path)
    try:
        provisioner.bind_owner(PrincipalStore(db), "alice.smith", bytes(range(32)), "lan")
    finally:
        db.close()
    assert audit.kinds() == ["provisioning.wifi", "provisioning.bound"]
    assert "Home-Of-Alice" not in repr(audit.records)
    assert "alice.smith" not in repr(audit.records)
    # The account name is no shape the redactor knows: it must not be logged at all.
    assert "alice.smith" not in "\n".join(r.getMessage() for r in caplog.records)
