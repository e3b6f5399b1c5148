"""Options and helpers shared by the ``edge-agent`` sub-commands.

Which configuration a command reads, first match wins:

1. ``--config FILE``;
2. ``$EDGE_AGENT_CONFIG``;
3. ``/etc/edge-agent/agent.toml`` (:data:`DEFAULT_CONFIG`), what a device image ships
   and ``systemd/edge-agent.service`` passes.

The state directory comes from that configuration (``state_dir``), unless
``--state-dir`` or systemd's ``$STATE_DIRECTORY`` overrides it.  With neither a
configuration file nor a state directory named, the command stops with one line
naming the path it looked for and the fix -- it never silently runs on the built-in
sample configuration (sample serial, ``/var/lib/edge-agent``).  A state directory
named on its own (``make run``'s ``--state-dir .state``) keeps the built-in defaults
for everything else: the development set-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
from collections.abc import Mapping

from agent import config as agent_config
from agent.config import AgentConfig
from agent.errors import ConfigError

DEFAULT_CONFIG = pathlib.Path("/etc/edge-agent/agent.toml")
CONFIG_ENV = "EDGE_AGENT_CONFIG"
# The serial number of the built-in defaults (and config/agent.toml): never a real device's.
SAMPLE_SERIAL_PREFIX = "EA-SAMPLE-"


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"TOML configuration (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="state directory (default: $STATE_DIRECTORY, else the configuration's state_dir)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON (one document) instead of text"
    )


def config_path(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> pathlib.Path | None:
    """The configuration file to read, or None for the built-in defaults (see module doc)."""
    env = os.environ if environ is None else environ
    if getattr(args, "config", None):
        return pathlib.Path(args.config)
    if env.get(CONFIG_ENV):
        return pathlib.Path(env[CONFIG_ENV])
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    if getattr(args, "state_dir", None) or env.get("STATE_DIRECTORY"):
        return None
    raise ConfigError(
        "",
        f"no configuration at {DEFAULT_CONFIG}: install one there (config/agent.toml is the "
        f"template), or pass --config FILE or set {CONFIG_ENV}",
    )


def load_config(args: argparse.Namespace) -> AgentConfig:
    path = config_path(args)
    state = pathlib.Path(args.state_dir) if getattr(args, "state_dir", None) else None
    return agent_config.load(path, state_dir=state)


def is_sample_serial(serial: str) -> bool:
    return serial.startswith(SAMPLE_SERIAL_PREFIX)


def setup_console_logging(verbose: bool = False) -> None:
    # Under systemd every line carries its syslog priority (drivers/logs/setup.py).
    from drivers.logs.setup import install_console_logging

    install_console_logging(logging.DEBUG if verbose else logging.INFO)
