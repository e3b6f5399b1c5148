"""``edge-agent data export|erase``: the owner's access and erasure rights, on the device."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.errors import PolicyError
from agent.rights.registry import DataRegistry
from drivers import features
from drivers.cli.common import add_config_options, load_config
from drivers.logs.store import LogStore
from drivers.logs.wiring import build_rights_handlers, default_registry


def build_registry(config: AgentConfig) -> DataRegistry:
    """This package's stores plus whatever the runtime registers.

    ``drivers.runtime.register_personal_data(config, registry)``, when the
    composition root defines it, adds the consent ledger, outbox, gallery,
    watch-list and Wi-Fi credentials.
    """
    registry = default_registry(config, LogStore(config.state_dir, config.logs))
    features.register_personal_data(config, registry)
    return registry


def _handlers(args: argparse.Namespace) -> tuple[dict[str, Any], AuditLog]:
    config = load_config(args)
    audit = AuditLog.in_state_dir(config.state_dir)
    handlers = build_rights_handlers(config, build_registry(config), audit=audit, clock=time.time)
    return handlers, audit


def _export(args: argparse.Namespace) -> int:
    handlers, audit = _handlers(args)
    try:
        reply = handlers["data.export"]({"format": args.format})
    finally:
        audit.close()
    data = reply["data"]
    raw = data if isinstance(data, bytes) else str(data).encode("utf-8")
    if args.output:
        pathlib.Path(args.output).write_bytes(raw)
        print(f"exported {len(raw)} bytes to {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(raw)
    return 0 if reply.get("complete") else 1


def _erase(args: argparse.Namespace) -> int:
    if not args.yes:
        raise PolicyError("erasure is irreversible: repeat with --yes")
    handlers, audit = _handlers(args)
    try:
        reply = handlers["data.erase"](
            {"account_cancellation": args.account, "wifi": args.wifi or args.account,
             "binding": args.binding or args.account}
        )
    finally:
        audit.close()
    print(json.dumps(dict(reply), indent=2, sort_keys=True))
    return 0 if reply.get("complete") else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="export or erase personal data held on the device")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    export = sub.add_parser("export", help="every personal item the device holds, in one file")
    add_config_options(export)
    export.add_argument("--format", choices=("json", "cbor"), default="json")
    export.add_argument("-o", "--output", default=None, help="file (default: stdout)")
    export.set_defaults(func=_export)
    erase = sub.add_parser("erase", help="erase personal data (irreversible)")
    add_config_options(erase)
    erase.add_argument("--yes", action="store_true", help="confirm the erasure")
    erase.add_argument("--account", action="store_true",
                       help="account cancellation: also Wi-Fi credentials and binding")
    erase.add_argument("--wifi", action="store_true", help="also erase Wi-Fi credentials")
    erase.add_argument("--binding", action="store_true", help="also erase the cloud binding")
    erase.set_defaults(func=_erase)
