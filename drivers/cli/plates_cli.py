"""Plate sub-commands, hooked in by ``cmd_matching`` under ``enrol`` and ``gallery``.

* ``edge-agent enrol plate TEXT [--label L] [--list allow|deny] [--format REGEX]``
* ``edge-agent gallery plates [--json]``: list the watch-list
* ``edge-agent gallery remove-plate TEXT``: delete one plate

Enrolment needs the ``plate_recognition`` consent (``edge-agent consent grant
plate_recognition``); listing and removal always work, so the owner can see
and delete their data.  Without that consent any leftover watch-list is
erased on sight, as the agent does at start-up.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from drivers.cli.common import add_config_options, add_json_option
from drivers.cli.composed import with_composition
from drivers.cli.output import print_json

if TYPE_CHECKING:
    from agent.matching.plates_service import PlateRecognition
    from drivers.compose import Composition

# The values of agent.matching.plates.PlateList, spelled out so that building
# the parser (edge-agent --help) does not load numpy; tests/core/test_cli_startup.py
# checks they stay equal.
PLATE_LISTS = ("allow", "deny")


def _core(c: Composition) -> PlateRecognition:
    # lazy: heavy (numpy/cv2)
    from agent.matching.plates_service import PURPOSE, PlateRecognition
    from drivers.vision.plate_reader import match_policy, open_store

    keys = c.ledger.keys
    assert keys is not None  # compose() hands the ledger the one DataKeys
    core = PlateRecognition(
        open_store(c.config, keys), match_policy(c.config.matching), c.ledger.is_granted,
        audit=c.audit,
    )
    if not c.ledger.is_granted(PURPOSE):
        # A withdrawal made while no agent ran to purge: no watch-list without consent.
        core.erase_personal_data()
    return core


@with_composition
def _enrol(c: Composition, args: argparse.Namespace) -> int:
    entry = _core(c).enrol(
        args.text,
        plate_list=args.list,
        label=args.label,
        plate_format=args.format,
        now=c.clock.now(),
    )
    if args.json:
        print_json(entry.as_dict())
        return 0
    label = f" ({entry.label})" if entry.label else ""
    print(f"enrolled plate {entry.plate} on the {entry.list.value} list{label}")
    return 0


@with_composition
def _list(c: Composition, args: argparse.Namespace) -> int:
    entries = _core(c).entries()
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2, ensure_ascii=False))
        return 0
    for entry in entries:
        extras = "".join(
            f"  {name}={value}"
            for name, value in (("label", entry.label), ("format", entry.format))
            if value
        )
        print(f"{entry.plate:16} {entry.list.value:5}{extras}")
    if not entries:
        print("no plates enrolled")
    return 0


@with_composition
def _remove(c: Composition, args: argparse.Namespace) -> int:
    entry = _core(c).remove(args.text, now=c.clock.now())
    if args.json:
        print_json({"removed": entry.as_dict()})
        return 0
    print(f"removed plate {entry.plate}")
    return 0


def register_enrol_plate(enrol_subparsers: Any) -> None:
    parser = enrol_subparsers.add_parser("plate", help="add a licence plate to the watch-list")
    parser.add_argument("text", metavar="TEXT", help="plate text; spaces and dashes are ignored")
    parser.add_argument("--label", default=None, help="owner's label, sent with matches")
    parser.add_argument(
        "--list",
        choices=PLATE_LISTS,
        default=PLATE_LISTS[0],
        help="which list the plate goes on (default: allow)",
    )
    parser.add_argument(
        "--format",
        default=None,
        metavar="REGEX",
        help="plate format, e.g. '[A-Z]{1,3}\\d{1,4}'; readings must fit it to match",
    )
    add_config_options(parser)
    add_json_option(parser)
    parser.set_defaults(func=_enrol)


def register_gallery_plate(gallery_subparsers: Any) -> None:
    listing = gallery_subparsers.add_parser("plates", help="list the plate watch-list")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_options(listing)
    listing.set_defaults(func=_list)
    remove = gallery_subparsers.add_parser("remove-plate", help="remove a plate")
    remove.add_argument("text", metavar="TEXT", help="the plate to remove")
    add_config_options(remove)
    add_json_option(remove)
    remove.set_defaults(func=_remove)
