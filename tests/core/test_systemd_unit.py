"""The unit file promises what the runtime relies on (notify, watchdog, state dir, hardening)."""

from __future__ import annotations

import configparser
import os
import re
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


SYSTEMD = UNIT.parent
REPO = UNIT.parents[1]
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd not installed (make test installs it)"
)


def _runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart= pointing at this checkout's edge-agent (verify checks it exists)."""
    executable = shutil.which("edge-agent") or str(REPO / ".venv" / "bin" / "edge-agent")
    copy = tmp_path / "edge-agent.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/edge-agent", executable))
    return copy


@needs_systemd
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(_runnable_unit(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "edge-agent.service" not in result.stderr, result.stderr


@needs_systemd
def test_security_exposure_stays_at_most_2_5(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager",
         str(_runnable_unit(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:]
    assert float(match.group(1)) <= 2.5, result.stdout[-2000:]


def test_unit_has_no_hard_dependency_on_optional_groups_or_paths() -> None:
    service = service_section()
    # A group the system lacks makes the unit fail (216/GROUP): groups come from sysusers.d.
    assert "SupplementaryGroups" not in service
    for value in service.get("ReadWritePaths", []) + service.get("ReadOnlyPaths", []):
        for path in value.split():
            if "wpa_supplicant" in path:
                assert path.startswith("-"), f"{path} must be optional (-{path})"


def _sysusers_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(SYSTEMD / "edge-agent.sysusers.conf")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd not installed")
def test_sysusers_creates_the_user_and_its_groups_even_without_netdev(tmp_path: Path) -> None:
    root = _sysusers_root(tmp_path)
    passwd = {line.split(":")[0]: line.split(":") for line in
              (root / "etc" / "passwd").read_text().splitlines()}
    assert passwd["edge-agent"][5] == "/var/lib/edge-agent"
    assert passwd["edge-agent"][6].endswith("nologin")
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in
              (root / "etc" / "group").read_text().splitlines()}
    for group in ("video", "dialout", "netdev"):
        assert "edge-agent" in groups[group], group
    service = service_section()
    assert service["User"] == ["edge-agent"] and service["Group"] == ["edge-agent"]


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="systemd not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles needs root to chown")
def test_tmpfiles_makes_the_config_and_state_directories(tmp_path: Path) -> None:
    root = _sysusers_root(tmp_path)
    uid = next(int(line.split(":")[2]) for line in
               (root / "etc" / "passwd").read_text().splitlines()
               if line.startswith("edge-agent:"))
    result = subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create",
         str(SYSTEMD / "edge-agent.tmpfiles.conf")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    etc = (root / "etc" / "edge-agent").stat()
    assert (etc.st_uid, etc.st_mode & 0o777) == (0, 0o750)
    state = (root / "var" / "lib" / "edge-agent").stat()
    assert (state.st_uid, state.st_mode & 0o777) == (uid, 0o700)
    # The unit's StateDirectory=/StateDirectoryMode= agree with it.
    assert service_section()["StateDirectoryMode"] == ["0700"]
