"""The technician login limiter's record: round trip, hostile records, a corrupt file."""

from __future__ import annotations

import json
import logging
import pathlib
import stat

import pytest

from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.layout import StateLayout
from agent.logs.pull import AuthLimiter
from agent.logs.settings import LogSettings
from drivers.logs.feature import auth_limiter
from tests.support.clock import ManualClock

NOW = 1_800_000_000.0


def config(state: pathlib.Path) -> AgentConfig:
    logs = LogSettings(max_failed_auth=3, auth_lockout_seconds=300)
    return AgentConfig(state_dir=state, logs=logs)


def test_the_shared_limiter_is_restored_by_a_new_process_view(tmp_path: pathlib.Path) -> None:
    clock = ManualClock(NOW)
    first = auth_limiter(config(tmp_path), clock)
    first.failed(NOW)
    first.failed(NOW)
    path = StateLayout(tmp_path).logs_auth_limits
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = auth_limiter(config(tmp_path), clock)
    assert second.retry_after(NOW) == 0
    second.failed(clock.advance(1))  # the third failure in a row, counted across the restart
    third = auth_limiter(config(tmp_path), clock)
    assert third.retry_after(clock.now()) == 300
    third.succeeded()  # success ends a run of failures but never a lockout
    assert auth_limiter(config(tmp_path), clock).retry_after(clock.advance(1)) == 299


def test_a_success_with_nothing_to_clear_writes_nothing(tmp_path: pathlib.Path) -> None:
    limiter = auth_limiter(config(tmp_path), ManualClock(NOW))
    limiter.succeeded()
    assert not StateLayout(tmp_path).logs_auth_limits.exists()


@pytest.mark.parametrize(
    "content", [b"", b"\xff\xfe", b"[]", b'{"v": 1}', b'{"v": 1, "saved_at": 1, "failures": 9}']
)
def test_a_corrupt_record_locks_out_for_one_period(
    tmp_path: pathlib.Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = StateLayout(tmp_path).logs_auth_limits
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    caplog.set_level(logging.WARNING)
    limiter = auth_limiter(config(tmp_path), ManualClock(NOW))
    assert limiter.retry_after(NOW) == 300
    lines = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert json.loads(path.read_bytes())["locked_until"] == NOW + 300


def test_clock_gone_back_keeps_what_was_left() -> None:
    limiter = AuthLimiter(2, 300)
    limiter.failed(NOW)
    limiter.failed(NOW + 50)
    saved = json.loads(json.dumps(limiter.snapshot(NOW + 100)))
    restored = AuthLimiter(2, 300)
    restored.restore(saved, 0.0)  # a board without RTC, back at 1970
    assert restored.retry_after(0.0) == 250


@pytest.mark.parametrize(
    "record",
    [
        {"v": 1, "saved_at": NOW, "failures": 2, "locked_until": 0},
        {"v": 1, "saved_at": NOW, "failures": -1, "locked_until": 0},
        {"v": 1, "saved_at": NOW, "failures": 0, "locked_until": None},
        {"v": 1, "saved_at": NOW, "failures": 0, "locked_until": "soon"},
        {"v": 1, "saved_at": None, "failures": 0, "locked_until": 0},
        {"saved_at": NOW, "failures": 0, "locked_until": 0},
    ],
)
def test_hostile_records_are_refused_whole(record: dict[str, object]) -> None:
    limiter = AuthLimiter(2, 300)
    with pytest.raises(DecodeError):
        limiter.restore(record, NOW)
    assert limiter.retry_after(NOW) == 0


def test_a_record_cannot_lock_out_longer_than_one_period() -> None:
    limiter = AuthLimiter(2, 300)
    limiter.restore({"v": 1, "saved_at": NOW, "failures": 0, "locked_until": NOW * 3}, NOW)
    assert limiter.retry_after(NOW) == 300
