"""docs/config.md is generated from the schema; every key is described; `config show` TOML."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

from agent import config as cfg
from agent.configschema import attribute_docs, reference, to_toml, undocumented
from drivers.cli.cmd_config import REFERENCE_PATH, reference_text

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "edge-agent config reference --output docs/config.md"


def edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drivers", *args], capture_output=True, text=True, cwd=REPO
    )


def test_every_key_has_a_description() -> None:
    missing = undocumented(cfg.AgentConfig)
    assert not missing, (
        f"{len(missing)} configuration key(s) lack a description: {', '.join(missing)}.\n"
        "Describe each under `Attributes:` in its section class's docstring, as "
        "`name (unit): text` (see agent/configschema.py), then run " + REGENERATE
    )


def test_docs_config_md_is_current() -> None:
    current = (REPO / REFERENCE_PATH).read_text(encoding="utf-8")
    assert current == reference_text(), f"docs/config.md is stale: run {REGENERATE}"


def test_the_reference_lists_every_key_once_with_type_default_unit_and_range() -> None:
    keys = [k for _, _, section in reference(cfg.AgentConfig) for k in section]
    names = [k.key for k in keys]
    assert len(names) == len(set(names)) and len(names) > 150
    by_name = {k.key: k for k in keys}
    fps = by_name["camera.fps"]
    assert (fps.type, fps.default, fps.unit) == ("number", "5.0", "frames/s")
    assert fps.bounds == "0.1 … 60"
    port = by_name["mqtt.port"]
    assert (port.type, port.default, port.unit) == ("integer", "8883", "")
    assert by_name["mqtt.tls"].type == '"off" | "on"'
    assert by_name["mqtt.client_id"].default == "(unset)"
    assert by_name["upgrade.hawkbit.min_poll_seconds"].unit == "s"
    assert by_name["storage.max_state_bytes"].unit == "bytes"
    assert by_name["logs.lan_port"].unit == ""  # "(-)": a port number, not a duration
    text = reference_text()
    assert "## `[upgrade.hawkbit]`" in text and "**undocumented**" not in text
    assert "| `motion_update_seconds` | number | `5.0` | s | 0.1 … 3600 |" in text


def test_the_cli_prints_the_same_reference() -> None:
    result = edge_agent("config", "reference")
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference_text()


@dataclasses.dataclass(frozen=True)
class Sample:
    """A section.

    Attributes:
        wait_seconds: How long to wait,
            over two lines.
        size (px): The size.
        gone: A key that no longer exists.

    Example:
        not: an attribute
    """

    wait_seconds: float = 1.0
    size: int = 3
    bare: bool = False


def test_attribute_sections_parse_and_stale_or_missing_entries_are_named() -> None:
    assert attribute_docs(Sample) == {
        "wait_seconds": ("", "How long to wait, over two lines."),
        "size": ("px", "The size."),
        "gone": ("", "A key that no longer exists."),
    }
    assert undocumented(Sample) == [
        "bare",
        "gone (described in Sample, but no such key)",
    ]


def test_config_show_toml_reads_back_to_the_same_configuration(tmp_path: Path) -> None:
    source = tmp_path / "agent.toml"
    source.write_text(
        'state_dir = "/srv/edge"\n'
        "[mqtt]\nclient_id = \"cam-1\"\nport = 1883\n"
        "[camera]\nsource = \"file\"\nuri = \"/tmp/a \\\"b\\\".avi\"\nmotion_update_seconds = 2.5\n"
        '[upgrade]\nmaintenance_windows = ["02:00-04:00"]\naccepted_algorithms = ["ed25519"]\n'
        '[upgrade.hawkbit]\ntenant = "ACME"\n',
        encoding="utf-8",
    )
    expected = cfg.load_file(source)
    shown = edge_agent("config", "show", "--config", str(source), "--format", "toml")
    assert shown.returncode == 0, shown.stderr
    assert "# username = (unset)" in shown.stdout  # TOML has no null: unset keys as comments
    written = tmp_path / "shown.toml"
    written.write_text(shown.stdout, encoding="utf-8")
    assert cfg.load_file(written) == expected
    assert tomllib.loads(shown.stdout)["upgrade"]["hawkbit"]["tenant"] == "ACME"
    checked = edge_agent("config", "check", str(written))
    assert checked.returncode == 0, checked.stderr
    # The defaults round-trip too, and JSON stays the default format.
    assert cfg.parse(to_toml(cfg.AgentConfig())) == cfg.AgentConfig()
    defaults = edge_agent("config", "show")
    assert defaults.returncode == 0 and defaults.stdout.lstrip().startswith("{")

