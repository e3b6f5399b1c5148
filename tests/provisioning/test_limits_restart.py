"""The provisioning window and the LAN attempt limiter survive a restart.

Each "restart" is a new ProvisioningService on the same state directory, with
real HTTP on 127.0.0.1 and real SPAKE2 proofs.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable, Iterator

import pytest

from agent.config import AgentConfig
from agent.errors import DecodeError, VerificationError
from agent.layout import StateLayout
from agent.provisioning.limits import (
    AttemptLimiter,
    LockedOutError,
    ProvisioningWindow,
    WindowClosedError,
    WindowState,
)
from agent.provisioning.wifi import WifiCredentials
from drivers.provisioning.lan_client import LanClient
from drivers.provisioning.service import ProvisioningService, build_service
from tests.provisioning.radio_double import RadioDouble
from tests.provisioning.support import START, make_config
from tests.support.clock import ManualClock

WINDOW = 3600
LOCKOUT = 600


@pytest.fixture
def config(tmp_path: pathlib.Path) -> AgentConfig:
    return make_config(
        tmp_path,
        window_seconds=WINDOW,
        lan_max_failed_attempts=2,
        lan_lockout_seconds=LOCKOUT,
        lan_lockout_max_seconds=4 * LOCKOUT,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


Boot = Callable[[], ProvisioningService]


@pytest.fixture
def boot(config: AgentConfig, clock: ManualClock) -> Iterator[Boot]:
    """Start a fresh service on the same state directory; every one is stopped at the end."""
    started: list[ProvisioningService] = []

    def start() -> ProvisioningService:
        if started:
            started[-1].stop()
        service = build_service(config, RadioDouble({"Home": "passphrase-1"}), clock=clock)
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        service.stop()


def client(service: ProvisioningService) -> LanClient:
    assert service.lan is not None
    return LanClient(f"http://127.0.0.1:{service.lan.port}")


def wrong_code(service: ProvisioningService) -> str:
    return "40719382" if service.binding.verification_code != "40719382" else "50719382"


def authenticate(service: ProvisioningService, code: str | None = None) -> None:
    client(service).authenticate(
        code or service.binding.verification_code, service.binding.serial_number
    )


def test_a_lockout_survives_a_restart(boot: Boot, clock: ManualClock) -> None:
    first = boot()
    for _ in range(2):
        with pytest.raises(VerificationError):
            authenticate(first, wrong_code(first))
    with pytest.raises(LockedOutError):
        authenticate(first)
    clock.advance(10)
    second = boot()
    with pytest.raises(LockedOutError) as locked:
        authenticate(second)  # even the right code: the lockout is not over
    assert LOCKOUT - 10 - 1 <= locked.value.retry_after <= LOCKOUT - 10 + 1
    clock.advance(LOCKOUT)
    authenticate(second)


def test_failures_and_escalation_survive_a_restart(boot: Boot, clock: ManualClock) -> None:
    first = boot()
    with pytest.raises(VerificationError):
        authenticate(first, wrong_code(first))
    second = boot()
    with pytest.raises(VerificationError):
        authenticate(second, wrong_code(second))  # the second of two: locks out
    with pytest.raises(LockedOutError):
        authenticate(second)
    clock.advance(LOCKOUT + 1)
    third = boot()
    for _ in range(2):
        with pytest.raises(VerificationError):
            authenticate(third, wrong_code(third))
    with pytest.raises(LockedOutError) as doubled:
        authenticate(third)
    assert doubled.value.retry_after > LOCKOUT + 1  # the second lockout doubles


def test_a_timed_out_window_stays_closed_after_a_restart(boot: Boot, clock: ManualClock) -> None:
    first = boot()
    assert first.status()["window"] == "open"
    clock.advance(WINDOW + 1)
    assert first.status()["window"] == "timed_out"
    second = boot()
    assert second.status()["window"] == "timed_out"
    assert second.lan is None
    # Only an explicit reopen (the provisioning.open_window command) opens it again.
    second.open_window()
    assert second.status()["window"] == "open"
    authenticate(second)


def test_a_succeeded_window_stays_closed_after_the_credentials_are_gone(
    boot: Boot, clock: ManualClock
) -> None:
    first = boot()
    pake = client(first).authenticate(
        first.binding.verification_code, first.binding.serial_number
    )
    client(first).provision(pake, WifiCredentials("Home", "passphrase-1"), poll_interval=0.02)
    assert first.status()["window"] == "succeeded"
    first.store.credentials_path.unlink()  # e.g. erased: unprovisioned again
    second = boot()
    assert not second.provisioned
    assert second.status()["window"] == "succeeded"
    assert second.lan is None


def test_an_open_window_keeps_only_its_remaining_time(boot: Boot, clock: ManualClock) -> None:
    boot()
    clock.advance(1000)
    second = boot()
    assert second.status()["window"] == "open"
    assert client(second).info()["remaining_seconds"] == WINDOW - 1000
    clock.advance(WINDOW - 1000)
    with pytest.raises(WindowClosedError):
        authenticate(second)


def test_a_corrupt_limiter_record_means_locked_out(
    boot: Boot, config: AgentConfig, caplog: pytest.LogCaptureFixture
) -> None:
    path = StateLayout(config.state_dir).provisioning_lan_limits
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"v": 1, "failures": [')
    caplog.set_level(logging.WARNING)
    service = boot()
    with pytest.raises(LockedOutError) as locked:
        authenticate(service)
    assert locked.value.retry_after == pytest.approx(LOCKOUT, abs=1)
    warnings = [r for r in caplog.records if str(path) in r.getMessage()]
    assert len(warnings) == 1 and "safe state" in warnings[0].getMessage()
    assert json.loads(path.read_text())["locked_until"] == START + LOCKOUT  # rewritten, valid


def test_a_corrupt_window_record_means_closed(boot: Boot, config: AgentConfig) -> None:
    path = StateLayout(config.state_dir).provisioning_window
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"v": 1, "saved_at": START, "state": "wide_open"}))
    service = boot()
    assert service.status()["window"] == "timed_out"
    assert service.lan is None


# --- the pure half: snapshot and restore ----------------------------------------------


def test_limiter_round_trip_and_a_clock_that_went_back() -> None:
    limiter = AttemptLimiter(max_failures=2, window=100, lockout=LOCKOUT, lockout_max=3600)
    limiter.record_failure(START + 1000)
    limiter.record_failure(START + 1001)
    saved = json.loads(json.dumps(limiter.snapshot(START + 1001)))
    restored = AttemptLimiter(max_failures=2, window=100, lockout=LOCKOUT, lockout_max=3600)
    # The board came back with its clock 5000 s earlier: the lockout keeps what it had left.
    restored.restore(saved, START - 4000)
    with pytest.raises(LockedOutError) as locked:
        restored.check(START - 4000)
    assert locked.value.retry_after == LOCKOUT
    assert restored.lockouts == 1


def test_window_round_trip_and_a_clock_that_went_back() -> None:
    window = ProvisioningWindow(WINDOW)
    window.open(START)
    saved = json.loads(json.dumps(window.snapshot(START + 100)))
    restored = ProvisioningWindow(WINDOW)
    restored.restore(saved, START - 10_000)
    assert restored.remaining(START - 10_000) == WINDOW - 100
    timed_out = ProvisioningWindow(WINDOW)
    timed_out.restore(json.loads(json.dumps(window.snapshot(START + WINDOW))), START)
    assert timed_out.state(START) is WindowState.TIMED_OUT


def test_a_longer_window_configured_meanwhile_does_not_reopen_or_stretch_one() -> None:
    window = ProvisioningWindow(600)
    window.open(START)
    saved = json.loads(json.dumps(window.snapshot(START + 100)))  # saved while open
    longer = ProvisioningWindow(WINDOW)
    longer.restore(saved, START + 700)  # the agent was down when the 600 s ran out
    assert longer.state(START + 700) is WindowState.TIMED_OUT
    assert longer.closed_at == START + 600
    still_open = ProvisioningWindow(WINDOW)
    still_open.restore(saved, START + 200)
    assert still_open.remaining(START + 200) == 400
    still_open.open(START + 1000)  # an explicit reopen gets the configured length
    assert still_open.remaining(START + 1000) == WINDOW


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"v": 2, "saved_at": START, "failures": [], "lockouts": 0, "locked_until": None},
        {"v": 1, "saved_at": "yesterday", "failures": [], "lockouts": 0, "locked_until": None},
        {"v": 1, "saved_at": START, "failures": [START] * 5, "lockouts": 0, "locked_until": None},
        {"v": 1, "saved_at": START, "failures": ["x"], "lockouts": 0, "locked_until": None},
        {"v": 1, "saved_at": START, "failures": [], "lockouts": -1, "locked_until": None},
        {"v": 1, "saved_at": START, "failures": [], "lockouts": True, "locked_until": None},
        {"v": 1, "saved_at": START, "failures": [], "lockouts": 0, "locked_until": float("nan")},
        {"v": 1, "saved_at": START, "failures": {}, "lockouts": 0, "locked_until": None},
    ],
)
def test_hostile_limiter_records_are_refused_whole(record: dict[str, object]) -> None:
    limiter = AttemptLimiter(max_failures=2, window=100, lockout=LOCKOUT, lockout_max=3600)
    with pytest.raises(DecodeError):
        limiter.restore(record, START)
    limiter.check(START)  # nothing half-restored


def test_a_record_cannot_lock_out_for_longer_than_the_maximum() -> None:
    limiter = AttemptLimiter(max_failures=2, window=100, lockout=LOCKOUT, lockout_max=3600)
    limiter.restore(
        {"v": 1, "saved_at": START, "failures": [], "lockouts": 3, "locked_until": START * 2},
        START,
    )
    with pytest.raises(LockedOutError) as locked:
        limiter.check(START)
    assert locked.value.retry_after == 3600
