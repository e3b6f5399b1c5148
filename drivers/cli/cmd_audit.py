"""``edge-agent audit verify|show``: check and read the hash-chained audit log."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from agent.audit import AuditLog
from agent.errors import DecodeError, VerificationError
from agent.layout import StateLayout
from drivers.cli.common import add_config_options, load_config


def _open(args: argparse.Namespace) -> AuditLog:
    return AuditLog(StateLayout(load_config(args).state_dir).audit)


def _verify(args: argparse.Namespace) -> int:
    if args.head and not re.fullmatch(r"[0-9a-fA-F]{64}", args.head):
        raise DecodeError("--head must be 64 hex digits")
    audit = _open(args)
    try:
        result = audit.verify(bytes.fromhex(args.head) if args.head else None)
    finally:
        audit.close()
    if not result.ok:
        raise VerificationError(
            f"audit log broken at index {result.first_bad_index}: {result.reason}"
        )
    print(f"audit log OK: {result.entries} entries, head {result.head.hex()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    audit = _open(args)
    try:
        entries = audit.entries()
    finally:
        audit.close()
    for entry in entries[-args.tail :] if args.tail else entries:
        print(json.dumps({"index": entry.index, "at": entry.at, "kind": entry.kind,
                          "detail": entry.detail, "hash": entry.hash.hex()}))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="verify or show the audit trail")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True
    verify = sub.add_parser("verify", help="check the hash chain; report the first bad entry")
    add_config_options(verify)
    verify.add_argument(
        "--head", default=None, help="a head hash printed earlier: also detects cut-off tails"
    )
    verify.set_defaults(func=_verify)
    show = sub.add_parser("show", help="print entries as JSON lines")
    add_config_options(show)
    show.add_argument("--tail", type=int, default=0, help="only the last N entries")
    show.set_defaults(func=_show)
