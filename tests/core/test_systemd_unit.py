"""The unit file promises what the runtime relies on (notify, watchdog, state dir, hardening)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-agent.service"


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            values.setdefault(key, []).append(value)
    return values


def test_unit_is_notify_with_watchdog_state_directory_and_hardening() -> None:
    service = service_section()
    assert service["Type"] == ["notify"]
    assert int(service["WatchdogSec"][0]) > 0
    assert service["StateDirectory"] == ["edge-agent"]
    assert service["StateDirectoryMode"] == ["0700"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert "run" in service["ExecStart"][0].split()
    capabilities = set(service["CapabilityBoundingSet"][0].split())
    assert capabilities <= {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"}
    assert service["User"] != ["root"]


def test_unit_parses_as_ini_without_duplicate_sections() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_accepts_the_unit() -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(UNIT)], capture_output=True, text=True
    )
    assert "Unknown key" not in result.stderr and "Unknown section" not in result.stderr


def test_unit_does_not_restart_on_an_unusable_state_directory() -> None:
    from drivers.cli import EXIT_STATE_DIR

    service = service_section()
    assert service["Restart"] == ["on-failure"]
    values = service["RestartPreventExitStatus"]
    prevented = {int(code) for value in values for code in value.split()}
    assert EXIT_STATE_DIR in prevented
