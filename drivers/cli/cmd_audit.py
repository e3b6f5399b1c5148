"""``edge-agent audit verify|show``: check and read the keyed audit chain.

``verify`` walks the chain under the device's audit key and reports one verdict:
``intact``, ``edited``, ``rechained`` or ``truncated`` (exit code 0 only for
intact).  Cutting entries off the end, or recomputing the whole chain with the
device's own key, shows only against a head published earlier: pass the
``index`` and ``head`` of an ``audit.head`` event (or of an export) as
``--index N --head HEX``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any

from agent.errors import DecodeError, VerificationError
from drivers.cli.common import add_config_options, load_config

if TYPE_CHECKING:
    from agent.audit import AuditLog


def _open(args: argparse.Namespace) -> AuditLog:
    from agent.audit import AuditLog  # lazy: --help stays light

    return AuditLog.in_state_dir(load_config(args).state_dir)


def _verify(args: argparse.Namespace) -> int:
    if (args.head is None) != (args.index is None):
        raise DecodeError("--head and --index go together (both from one published audit.head)")
    if args.head is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.head):
        raise DecodeError("--head must be 64 hex digits")
    if args.index is not None and args.index < 0:
        raise DecodeError("--index must be 0 or more")
    from agent.audit import Verdict  # lazy: --help stays light

    audit = _open(args)
    try:
        head = bytes.fromhex(args.head) if args.head else None
        result = audit.verify(head, args.index)
    finally:
        audit.close()
    problem = (
        f"audit log {result.verdict.value} at index {result.first_bad_index}: {result.reason}"
    )
    if args.json:
        if not result.ok:
            # The verdict is the document; the failure still gets its one line.
            print(f"edge-agent: error: {problem}", file=sys.stderr)
        print(json.dumps({
            "ok": result.ok,
            "verdict": result.verdict.value,
            "entries": result.entries,
            "first_bad_index": result.first_bad_index,
            "reason": result.reason,
            "head_index": result.entries - 1,
            "head": result.head.hex(),
        }, sort_keys=True))
        return 0 if result.ok else 2
    if result.verdict is not Verdict.INTACT:
        raise VerificationError(problem)
    print(
        f"audit log intact: {result.entries} entries, head index {result.entries - 1} "
        f"mac {result.head.hex()}"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    audit = _open(args)
    try:
        entries = audit.entries()
    finally:
        audit.close()
    shown = [
        {"index": e.index, "at": e.at, "kind": e.kind, "detail": e.detail, "mac": e.hash.hex()}
        for e in (entries[-args.tail :] if args.tail else entries)
    ]
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    for entry in shown:
        print(json.dumps(entry))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="verify or show the audit trail")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True
    verify = sub.add_parser(
        "verify", help="check the keyed chain: intact, edited, rechained or truncated"
    )
    add_config_options(verify)
    verify.add_argument(
        "--head", default=None, metavar="HEX",
        help="the MAC of a published head (audit.head event or export): with --index, also "
        "detects a cut-off tail or a chain recomputed with the device key",
    )
    verify.add_argument("--index", type=int, default=None, metavar="N",
                        help="the index of that published head")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(func=_verify)
    show = sub.add_parser("show", help="print entries as JSON lines")
    add_config_options(show)
    show.add_argument("--tail", type=int, default=0, help="only the last N entries")
    show.add_argument("--json", action="store_true",
                      help="one JSON array instead of JSON lines")
    show.set_defaults(func=_show)
