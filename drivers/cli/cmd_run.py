"""``edge-agent run``: the long-running agent (what systemd starts)."""

from __future__ import annotations

import argparse
from typing import Any

from drivers.cli.common import (
    add_config_options,
    config_path,
    load_config,
    setup_console_logging,
)


def _run(args: argparse.Namespace) -> int:
    # lazy: heavy (the composition root and every feature's drivers; --help skips them)
    from drivers.heap import keep_large_blocks_mapped
    from drivers.runtime import run

    # Before the first frame: freed frames must not stay resident (drivers/heap.py).
    keep_large_blocks_mapped()

    config = load_config(args)
    setup_console_logging(args.verbose)
    path = config_path(args)
    return run(config, config_path=str(path) if path is not None else None)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the agent")
    add_config_options(parser)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG on the console"
    )
    parser.set_defaults(func=_run)
