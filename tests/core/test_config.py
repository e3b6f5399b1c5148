from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as cfg
from agent.configschema import validate_defaults
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_embedded_defaults_are_valid_and_private() -> None:
    defaults = cfg.AgentConfig()
    validate_defaults(cfg.AgentConfig)
    assert defaults.mqtt.host == "127.0.0.1"
    assert defaults.camera.source is cfg.CameraSource.SAMPLE


def test_shipped_toml_matches_the_embedded_defaults() -> None:
    shipped = cfg.load_file(REPO / "config" / "agent.toml")
    assert shipped == cfg.AgentConfig()


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[mqtt]\nprot = 1\n", "mqtt.prot"),
        ("[nosuchsection]\n", "nosuchsection"),
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
        ("[mqtt]\nport = '1883'\n", "mqtt.port"),
        ("[mqtt]\ntls = 'maybe'\n", "mqtt.tls"),
        ("[mqtt]\ntopic_prefix = 'a/#'\n", "mqtt.topic_prefix"),
        ("[device]\nserial_number = 'x/y'\n", "device.serial_number"),
        ("[privacy]\ntimestamp_precision = 'day'\n", "privacy.timestamp_precision"),
        ("[camera]\nfps = true\n", "camera.fps"),
    ],
)
def test_bad_config_names_the_key_path(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse(text)
    assert info.value.path == path
    assert path in str(info.value)


def test_invalid_toml_and_huge_files_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        cfg.parse("[mqtt\n")
    with pytest.raises(ConfigError, match="larger than"):
        cfg.parse(b"#" * (cfg.MAX_CONFIG_BYTES + 1))


def test_values_are_typed_and_frozen() -> None:
    loaded = cfg.parse("[mqtt]\nport = 2883\ntls = 'on'\n[privacy]\ntimestamp_precision='hour'\n")
    assert loaded.mqtt.port == 2883 and loaded.mqtt.tls is cfg.TlsMode.ON
    assert loaded.privacy.timestamp_precision is cfg.TimestampPrecision.HOUR
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.mqtt.port = 1  # type: ignore[misc]


def test_state_directory_precedence(tmp_path: Path) -> None:
    assert cfg.load(None, environ={"STATE_DIRECTORY": "/run/a:/run/b"}).state_dir == Path("/run/a")
    assert (
        cfg.load(None, state_dir=tmp_path, environ={"STATE_DIRECTORY": "/x"}).state_dir == tmp_path
    )


def test_cli_config_check_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[outbox]\nmax_messages = -5\n")
    result = subprocess.run(
        [sys.executable, "-m", "drivers", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "outbox.max_messages" in result.stderr and "Traceback" not in result.stderr
    good = subprocess.run(
        [sys.executable, "-m", "drivers", "config", "check", str(REPO / "config" / "agent.toml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert good.returncode == 0, good.stderr
