"""``edge-agent config check FILE``, ``config show`` and ``config reference``."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from agent.atomicfile import write_atomic
from agent.errors import ConfigError
from drivers.cli.common import CONFIG_ENV, DEFAULT_CONFIG, add_json_option, config_path
from drivers.cli.output import dumps, print_json

REFERENCE_PATH = pathlib.Path("docs/config.md")

INTRO = """\
# Configuration reference

<!-- Generated from the schema (agent/config.py and the feature settings modules) by
`edge-agent config reference --output docs/config.md`; do not edit by hand.
tests/core/test_config_reference.py fails when this file is stale. -->

The agent reads one TOML file (`edge-agent --config FILE`, the `[Service]` unit's
`/etc/edge-agent/agent.toml`); every key is optional and an empty file is the set of
defaults below (`config/agent.toml` spells them out). Unknown keys, wrong types and
values out of range are refused with the key's dotted path:
`edge-agent config check FILE` validates a file, `edge-agent config show --format toml`
prints the effective configuration. Durations are in seconds unless the unit says
otherwise; sizes are in bytes. "(unset)" means the key is absent by default: a
feature then uses its built-in behaviour, described with the key."""


def reference_text() -> str:
    """docs/config.md as the current schema renders it."""
    # lazy: the schema (agent.config) is a tenth of a second that --help must not pay
    from agent import config as agent_config
    from agent.configschema import render_reference

    return render_reference(agent_config.AgentConfig, INTRO)


def _check(args: argparse.Namespace) -> int:
    from agent import config as agent_config  # lazy: --help stays light

    cfg = agent_config.load_file(pathlib.Path(args.file))
    if cfg.mqtt.plaintext_warning:
        print(f"{args.file}: warning: {cfg.mqtt.plaintext_warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"file": args.file, "ok": True, "serial_number": cfg.device.serial_number,
                          "state_dir": str(cfg.state_dir),
                          "warnings": [w for w in (cfg.mqtt.plaintext_warning,) if w]},
                         sort_keys=True))
        return 0
    print(f"{args.file}: OK (device {cfg.device.serial_number}, state in {cfg.state_dir})")
    return 0


def _show(args: argparse.Namespace) -> int:
    from agent import config as agent_config  # lazy: --help stays light
    from agent.configschema import to_mapping, to_toml

    try:
        path = config_path(args)
    except ConfigError:
        path = None  # nothing installed: the effective configuration is the built-in one
    cfg = agent_config.load(path)
    if args.format == "toml" and not args.json:
        sys.stdout.write(to_toml(cfg))
    else:
        print(json.dumps(to_mapping(cfg), indent=2, sort_keys=True))
    return 0


def reference_keys() -> list[dict[str, object]]:
    """Every key of the schema as the reference documents it (``reference --json``)."""
    from agent import config as agent_config  # lazy: --help stays light
    from agent.configschema import reference

    return [
        {
            "key": key.key,
            "section": section,
            "type": key.type,
            "default": key.default,
            "unit": key.unit or None,
            "bounds": key.bounds or None,
            "description": key.description,
        }
        for section, _, keys in reference(agent_config.AgentConfig)
        for key in keys
    ]


def _reference(args: argparse.Namespace) -> int:
    if args.json:
        if args.output is None:
            print_json(reference_keys())
            return 0
        write_atomic(pathlib.Path(args.output), (dumps(reference_keys(), indent=2) + "\n").encode())
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    text = reference_text()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_atomic(pathlib.Path(args.output), text.encode())
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="check, show or document the configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", help="the TOML file to validate")
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.set_defaults(func=_check)
    show = sub.add_parser("show", help="print the effective configuration")
    show.add_argument(
        "--config", default=None, metavar="FILE",
        help=f"configuration file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG} if it exists, "
        "else the built-in defaults)"
    )
    show.add_argument(
        "--format",
        choices=("json", "toml"),
        default="json",
        help="json (default) or toml, which `config check` and `run --config` read back",
    )
    show.add_argument("--json", action="store_true", help="the same as --format json")
    show.set_defaults(func=_show)
    reference = sub.add_parser(
        "reference", help="print the configuration reference (Markdown) generated from the schema"
    )
    reference.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help=f"write it to FILE (the repository's copy is {REFERENCE_PATH}) instead of stdout",
    )
    add_json_option(
        reference, "print every key as JSON (key, section, type, default, unit, bounds, "
        "description) instead of Markdown",
    )
    reference.set_defaults(func=_reference)
