"""Maintenance windows, per-model auto-install, deferral bounds, config validation."""

from __future__ import annotations

import pytest

from agent import config as agent_config
from agent.errors import ConfigError, DecodeError
from agent.upgrade.policy import auto_install_allowed, deferral_until, in_maintenance_window
from agent.upgrade.window import parse_window


def _minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@pytest.mark.parametrize(
    ("window", "inside", "outside"),
    [
        ("02:00-04:00", ["02:00", "03:59"], ["01:59", "04:00", "23:00"]),
        ("23:30-01:15", ["23:30", "00:00", "01:14"], ["23:29", "01:15", "12:00"]),
        ("00:00-00:00", ["00:00", "12:34", "23:59"], []),
    ],
)
def test_maintenance_windows_including_midnight_crossing(
    window: str, inside: list[str], outside: list[str]
) -> None:
    for t in inside:
        assert in_maintenance_window([window], _minute(t)), t
    for t in outside:
        assert not in_maintenance_window([window], _minute(t)), t


def test_no_window_means_any_time_and_several_windows_combine() -> None:
    assert in_maintenance_window([], _minute("13:00"))
    windows = ["02:00-03:00", "14:00-15:00"]
    assert in_maintenance_window(windows, _minute("14:30"))
    assert not in_maintenance_window(windows, _minute("10:00"))


@pytest.mark.parametrize("bad", ["2:00-04:00", "02:00-24:00", "02:60-03:00", "02:00", "x"])
def test_malformed_window_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_window(bad)


def test_malformed_window_in_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"upgrade\.maintenance_windows"):
        agent_config.parse('[upgrade]\nmaintenance_windows = ["25:00-01:00"]\n')
    cfg = agent_config.parse('[upgrade]\nmaintenance_windows = ["22:00-02:00"]\n')
    assert cfg.upgrade.maintenance_windows == ("22:00-02:00",)


def test_auto_install_only_for_listed_models_when_enabled() -> None:
    assert auto_install_allowed(True, ["edge-cam-1"], "edge-cam-1")
    assert not auto_install_allowed(True, ["edge-cam-1"], "nvr-2")
    assert not auto_install_allowed(False, ["edge-cam-1"], "edge-cam-1")


def test_deferral_is_bounded() -> None:
    assert deferral_until(60, 1000.0, 3600) == 1060.0
    for bad in (-1, 3601, "10", True, None):
        with pytest.raises(DecodeError):
            deferral_until(bad, 1000.0, 3600)
