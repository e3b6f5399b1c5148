"""``edge-agent run``: the long-running agent (what systemd starts)."""

from __future__ import annotations

import argparse
from typing import Any

from drivers.cli.common import add_config_options, load_config, setup_console_logging
from drivers.runtime import run


def _run(args: argparse.Namespace) -> int:
    config = load_config(args)
    setup_console_logging(args.verbose)
    return run(config)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the agent")
    add_config_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(func=_run)
