"""A stand-in ``nmcli`` executable: installed on PATH by the tests.

It records every invocation (argv, stdin, and the passwd-file's content and
mode while it still exists) to ``$FAKE_NMCLI_DIR/calls.jsonl`` and answers
with real nmcli terse output, keeping its profiles in ``state.json`` between
runs.  ``scenario.json`` holds the visible networks and their keys.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import sys
import uuid as uuidlib

HOME = pathlib.Path(os.environ["FAKE_NMCLI_DIR"])


def _load(name: str, default: object) -> dict:  # type: ignore[type-arg]
    path = HOME / name
    return json.loads(path.read_text()) if path.exists() else default  # type: ignore[return-value]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def main(argv: list[str]) -> int:
    scenario = _load("scenario.json", {})
    state = _load("state.json", {"connections": {}, "active": None})
    call: dict[str, object] = {"argv": argv, "stdin": ""}
    if "passwd-file" in argv:
        path = argv[argv.index("passwd-file") + 1]
        call["passwd_file"] = pathlib.Path(path).read_text()
        call["passwd_mode"] = stat.S_IMODE(os.stat(path).st_mode)
        call["passwd_path"] = path
    with open(HOME / "calls.jsonl", "a") as log:
        log.write(json.dumps(call) + "\n")
    code = _dispatch(argv, scenario, state)
    (HOME / "state.json").write_text(json.dumps(state))
    return code


def _dispatch(argv: list[str], scenario: dict, state: dict) -> int:  # type: ignore[type-arg]
    words = [a for a in argv if a not in ("-t",)]
    if "-w" in words:
        index = words.index("-w")
        del words[index : index + 2]
    if "-f" in words:
        index = words.index("-f")
        fields = words[index + 1]
        del words[index : index + 2]
    else:
        fields = ""
    if words[:3] == ["device", "wifi", "list"]:
        for row in scenario.get("rows", []):
            sys.stdout.write(row + "\n")
        return 0
    if words[:2] == ["connection", "add"]:
        options = dict(zip(words[2::2], words[3::2], strict=False))
        new = str(uuidlib.uuid4())
        state["connections"][new] = {"options": options, "saved": options.get("save") != "no"}
        print(f"Connection '{options['con-name']}' ({new}) successfully added.")
        return 0
    if words[:3] == ["connection", "up", "uuid"]:
        connection = state["connections"].get(words[3])
        if connection is None:
            print(f"Error: unknown connection '{words[3]}'.", file=sys.stderr)
            return 10
        ssid = connection["options"]["ssid"]
        networks = scenario.get("networks", {})
        if ssid not in networks:
            print(
                "Error: Connection activation failed: The Wi-Fi network could not be found",
                file=sys.stderr,
            )
            return 4
        given = None
        if "passwd-file" in words:
            text = pathlib.Path(words[words.index("passwd-file") + 1]).read_text()
            key, _, given = text.rstrip("\n").partition(":")
            assert key == "802-11-wireless-security.psk"
        if networks[ssid] is not None and given not in (networks[ssid], scenario.get("pmk")):
            print(
                "Error: Connection activation failed: Secrets were required, but not provided.",
                file=sys.stderr,
            )
            return 4
        state["active"] = words[3]
        print(
            "Connection successfully activated (D-Bus active path: "
            "/org/freedesktop/NetworkManager/ActiveConnection/7)"
        )
        return 0
    if words[:3] == ["connection", "show", "--active"]:
        if state["active"]:
            print(f"802-11-wireless:{state['active']}")
        print("loopback:0b4b4f0e-1a2b-4c3d-8e9f-000000000001")
        return 0
    if words == ["connection", "show"]:
        # The profile list (-f NAME,UUID,TYPE); scenario "other_profiles": rows not ours.
        for uuid, connection in state["connections"].items():
            name = connection["options"].get("con-name", "")
            print(f"{_escape(name)}:{uuid}:802-11-wireless")
        for row in scenario.get("other_profiles", []):
            print(row)
        return 0
    if words[:3] == ["connection", "show", "uuid"]:
        connection = state["connections"].get(words[3])
        active = state["active"] == words[3]
        for name in fields.split(","):
            if name == "GENERAL.STATE" and active:
                print("GENERAL.STATE:activated")
            elif name == "IP4.ADDRESS" and active and scenario.get("address", True):
                print("IP4.ADDRESS[1]:192.168.1.50/24")
            elif name == "802-11-wireless.ssid" and connection:
                print(f"802-11-wireless.ssid:{connection['options']['ssid']}")
        return 0
    if words[:3] == ["connection", "modify", "uuid"]:
        connection = state["connections"][words[3]]
        connection["saved"] = True
        connection["options"].update(dict(zip(words[4::2], words[5::2], strict=False)))
        return 0
    if words[:3] == ["connection", "delete", "uuid"]:
        state["connections"].pop(words[3], None)
        if state["active"] == words[3]:
            state["active"] = None
        return 0
    print(f"Error: fake nmcli does not know {words}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
