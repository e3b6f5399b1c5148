"""``edge-agent config check FILE`` and ``edge-agent config show``."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from agent import config as agent_config
from agent.configschema import to_mapping


def _check(args: argparse.Namespace) -> int:
    cfg = agent_config.load_file(pathlib.Path(args.file))
    if cfg.mqtt.plaintext_warning:
        print(f"{args.file}: warning: {cfg.mqtt.plaintext_warning}", file=sys.stderr)
    print(f"{args.file}: OK (device {cfg.device.serial_number}, state in {cfg.state_dir})")
    return 0


def _show(args: argparse.Namespace) -> int:
    path = pathlib.Path(args.config) if args.config else None
    cfg = agent_config.load(path)
    print(json.dumps(to_mapping(cfg), indent=2, sort_keys=True))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="check or show the configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=_check)
    show = sub.add_parser("show", help="print the effective configuration")
    show.add_argument("--config", default=None)
    show.set_defaults(func=_show)
