"""``edge-agent data export|erase``: the owner's access and erasure rights, on the device.

``export`` writes the zip archive described in ``docs/export-format.md``; with
``--json`` stdout gets one JSON document: the export document itself, or with ``-o``
what was written there.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from agent.errors import PolicyError
from agent.ports import Outcome
from drivers.cli.common import add_config_options, add_json_option
from drivers.cli.composed import composed
from drivers.cli.output import print_json, write_output_file


def _export(args: argparse.Namespace) -> int:
    if args.json and not args.output:
        args.format = "json"  # stdout holds one JSON document: the export document itself
    from drivers.rights.feature import build_rights_handlers  # lazy: --help stays light

    with composed(args) as c:
        # The handler the daemon serves, without the cap an MQTT reply needs.
        export = build_rights_handlers(
            c.config, c.registry, clock=c.clock, audit=c.audit, max_reply_bytes=None
        )["data.export"]
        reply = export({"format": args.format})
    assert not isinstance(reply, Outcome)
    data = reply["data"]
    raw = data if isinstance(data, bytes) else str(data).encode("utf-8")
    complete = bool(reply.get("complete"))
    if args.output:
        write_output_file(pathlib.Path(args.output), raw)
    if args.json and args.output:
        print_json({"file": args.output, "format": args.format, "bytes": len(raw),
                    "complete": complete})
    elif args.output:
        print(f"exported {len(raw)} bytes to {args.output} (format: docs/export-format.md)",
              file=sys.stderr)
    else:
        sys.stdout.buffer.write(raw)
    return 0 if complete else 1


def _erase(args: argparse.Namespace) -> int:
    if not args.yes:
        raise PolicyError("erasure is irreversible: repeat with --yes")
    request = {
        "account_cancellation": args.account,
        "wifi": args.wifi or args.account,
        "binding": args.binding or args.account,
    }
    with composed(args) as c:
        outcome = c.commands["data.erase"](request)
    reply = outcome.result if isinstance(outcome, Outcome) else outcome
    print(json.dumps(dict(reply), indent=2, sort_keys=True))
    return 0 if reply.get("complete") else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="export or erase personal data held on the device")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    export = sub.add_parser(
        "export", help="every personal item the device holds, as one zip archive"
    )
    add_config_options(export)
    export.add_argument(
        "--format", choices=("zip", "json"), default="zip",
        help="zip: export.json and the files it names (default); json: the document alone",
    )
    export.add_argument("-o", "--output", default=None, help="file (default: stdout)")
    add_json_option(
        export, "one JSON document on stdout: the export document (--format json), or with -o "
        "what was written (file, format, bytes, complete)",
    )
    export.set_defaults(func=_export)
    erase = sub.add_parser("erase", help="erase personal data (irreversible)")
    add_config_options(erase)
    erase.add_argument("--yes", action="store_true", help="confirm the erasure")
    erase.add_argument("--json", action="store_true",
                       help="accepted for symmetry: the result is always JSON")
    erase.add_argument("--account", action="store_true",
                       help="account cancellation: also Wi-Fi credentials and binding")
    erase.add_argument("--wifi", action="store_true", help="also erase Wi-Fi credentials")
    erase.add_argument("--binding", action="store_true", help="also erase the cloud binding")
    erase.set_defaults(func=_erase)
