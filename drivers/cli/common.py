"""Options and helpers shared by the ``edge-agent`` sub-commands."""

from __future__ import annotations

import argparse
import logging
import pathlib

from agent import config as agent_config
from agent.config import AgentConfig


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None, help="TOML configuration (default: the embedded defaults)"
    )
    parser.add_argument(
        "--state-dir", default=None, help="state directory (default: $STATE_DIRECTORY or config)"
    )


def load_config(args: argparse.Namespace) -> AgentConfig:
    path = pathlib.Path(args.config) if getattr(args, "config", None) else None
    state = pathlib.Path(args.state_dir) if getattr(args, "state_dir", None) else None
    return agent_config.load(path, state_dir=state)


def setup_console_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
