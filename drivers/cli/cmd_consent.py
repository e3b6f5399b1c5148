"""``edge-agent consent show|grant|withdraw|history`` for the owner on the device.

``grant`` says what each purpose lets the device do and, on a terminal, asks
before granting; a script passes ``--yes`` (without a terminal and without
``--yes`` it refuses: a grant nobody read is not consent).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from agent.errors import PolicyError
from agent.purposes import CONSENTABLE, Purpose
from drivers.cli.common import add_config_options, add_json_option
from drivers.cli.composed import composed

# What the owner agrees to, in one line each (README "Consent purposes" says the same).
DESCRIPTIONS: dict[Purpose, str] = {
    Purpose.FACE_RECOGNITION: "match faces seen by the cameras against the faces you enrolled, "
    "and keep that gallery on the device",
    Purpose.PLATE_RECOGNITION: "read licence plates and match them against your watch-list",
    Purpose.EVENT_SNAPSHOTS: "attach a camera image to a face match and keep snapshots "
    "on the device",
    Purpose.USAGE_STATISTICS: "send aggregate counts of events (no identities, no counts "
    "below the minimum)",
    Purpose.TROUBLESHOOTING_LOGS: "let the device's redacted logs leave it (logs.upload, "
    "a technician's LAN pull)",
    Purpose.CLOUD_EVENTS: "publish events (motion, matches) to your MQTT broker / cloud",
}


def _show(args: argparse.Namespace) -> int:
    with composed(args) as c:
        snapshot = c.ledger.snapshot()
    if args.json:
        print(json.dumps(
            {str(p): {"granted": bool(g), "description": _describe(str(p))}
             for p, g in snapshot.items()},
            indent=2, sort_keys=True,
        ))
        return 0
    for purpose, granted in snapshot.items():
        print(f"{purpose:22} {'granted' if granted else 'off'}")
    return 0


def _describe(value: str) -> str:
    for purpose, text in DESCRIPTIONS.items():
        if purpose.value == value:
            return text
    return ""


def _history(args: argparse.Namespace) -> int:
    with composed(args) as c:
        print(json.dumps(c.ledger.history(), indent=2))
    return 0


def confirm(
    purposes: list[Purpose],
    *,
    yes: bool,
    interactive: bool | None = None,
    answer: Callable[[str], str] | None = None,
) -> None:
    """Describe ``purposes`` on stderr and ask on a terminal; raise unless agreed."""
    for purpose in purposes:
        print(f"  {purpose.value}: {DESCRIPTIONS[purpose]}", file=sys.stderr)
    if yes:
        return
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise PolicyError("consent grant needs confirmation: run it on a terminal, or add --yes")
    reply = (answer or input)(f"Grant {len(purposes)} purpose(s)? [y/N] ").strip().lower()
    if reply not in {"y", "yes"}:
        raise PolicyError("nothing granted")


def _change(args: argparse.Namespace) -> int:
    purposes = list(CONSENTABLE) if args.purpose == "all" else [Purpose.parse(args.purpose)]
    if args.grant:
        confirm(purposes, yes=args.yes)
    results: dict[str, dict[str, object]] = {}
    with composed(args) as c:
        for purpose in purposes:
            change = c.ledger.set(purpose, args.grant, c.clock.now(), source="cli")
            purged = sum(change.purged.values())
            results[purpose.value] = {"granted": args.grant, "purged": purged}
            if not args.json:
                verb = "granted" if args.grant else f"withdrawn ({purged} stored items purged)"
                print(f"{purpose.value}: {verb}")
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("consent", help="show or change per-purpose consent")
    sub = parser.add_subparsers(dest="consent_command", metavar="ACTION")
    sub.required = True
    choices = [p.value for p in CONSENTABLE] + ["all"]
    show = sub.add_parser("show", help="list each purpose and whether it is granted")
    add_config_options(show)
    add_json_option(show)
    show.set_defaults(func=_show)
    history = sub.add_parser(
        "history", help="every grant and withdrawal with time and policy version (JSON)"
    )
    add_config_options(history)
    history.add_argument(
        "--json", action="store_true", help="accepted for symmetry: the history is JSON"
    )
    history.set_defaults(func=_history)
    purposes_help = "; ".join(f"{p.value}: {t}" for p, t in DESCRIPTIONS.items())
    for name, grant in (("grant", True), ("withdraw", False)):
        p = sub.add_parser(
            name,
            help=f"{name} consent for a purpose",
            description=f"{name.capitalize()} consent for a purpose. Purposes -- {purposes_help}.",
        )
        p.add_argument("purpose", choices=choices, help="the purpose, or all of them")
        add_config_options(p)
        add_json_option(p)
        if grant:
            p.add_argument(
                "--yes", action="store_true",
                help="grant without asking (scripts); the descriptions still go to stderr",
            )
        p.set_defaults(func=_change, grant=grant)
