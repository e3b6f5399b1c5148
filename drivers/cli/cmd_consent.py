"""``edge-agent consent show|grant|withdraw|history`` for the owner on the device."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.purposes import CONSENTABLE, Purpose
from drivers.cli.common import add_config_options
from drivers.cli.composed import composed


def _show(args: argparse.Namespace) -> int:
    with composed(args) as c:
        for purpose, granted in c.ledger.snapshot().items():
            print(f"{purpose:22} {'granted' if granted else 'off'}")
    return 0


def _history(args: argparse.Namespace) -> int:
    with composed(args) as c:
        print(json.dumps(c.ledger.history(), indent=2))
    return 0


def _change(args: argparse.Namespace) -> int:
    purposes = list(CONSENTABLE) if args.purpose == "all" else [Purpose.parse(args.purpose)]
    with composed(args) as c:
        for purpose in purposes:
            change = c.ledger.set(purpose, args.grant, c.clock.now(), source="cli")
            purged = sum(change.purged.values())
            verb = "granted" if args.grant else f"withdrawn ({purged} stored items purged)"
            print(f"{purpose.value}: {verb}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("consent", help="show or change per-purpose consent")
    sub = parser.add_subparsers(dest="consent_command", metavar="ACTION")
    sub.required = True
    choices = [p.value for p in CONSENTABLE] + ["all"]
    for name, func, help_text in (
        ("show", _show, "list each purpose and whether it is granted"),
        ("history", _history, "every grant and withdrawal with time and policy version"),
    ):
        p = sub.add_parser(name, help=help_text)
        add_config_options(p)
        p.set_defaults(func=func)
    for name, grant in (("grant", True), ("withdraw", False)):
        p = sub.add_parser(name, help=f"{name} consent for a purpose")
        p.add_argument("purpose", choices=choices)
        add_config_options(p)
        p.set_defaults(func=_change, grant=grant)
