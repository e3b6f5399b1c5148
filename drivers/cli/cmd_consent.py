"""``edge-agent consent show|grant|withdraw|history`` for the owner on the device."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agent.consent import ConsentLedger
from agent.database import Database
from agent.purposes import CONSENTABLE, Purpose
from drivers.cli.common import add_config_options, load_config


def _ledger(args: argparse.Namespace) -> ConsentLedger:
    from agent.audit import AuditLog
    from drivers.features import add_cli_withdrawal_hooks

    config = load_config(args)
    ledger = ConsentLedger(
        Database.in_state_dir(config.state_dir),
        config.privacy.policy_version,
        audit=AuditLog.in_state_dir(config.state_dir),
    )
    add_cli_withdrawal_hooks(config, ledger)
    return ledger


def _show(args: argparse.Namespace) -> int:
    for purpose, granted in _ledger(args).snapshot().items():
        print(f"{purpose:22} {'granted' if granted else 'off'}")
    return 0


def _history(args: argparse.Namespace) -> int:
    print(json.dumps(_ledger(args).history(), indent=2))
    return 0


def _change(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    purposes = list(CONSENTABLE) if args.purpose == "all" else [Purpose.parse(args.purpose)]
    for purpose in purposes:
        change = ledger.set(purpose, args.grant, time.time(), source="cli")
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
