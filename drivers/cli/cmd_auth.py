"""``edge-agent auth keygen|enrol|list|reset|device-id`` and ``edge-agent remote``.

``auth`` manages the keys this device obeys, as root on the device (whoever can
write the state directory already owns the device, so no signature is asked
for): ``enrol`` trusts a public key for a role -- for the owner a new binding
with a fresh device id --, ``reset`` forgets every key.  ``keygen`` makes a key
anywhere.  ``remote`` sends one signed command to a device over MQTT through
:mod:`drivers.auth.client` and prints the result as JSON (bytes as base64).

cryptography and paho are imported inside the handlers (``--help`` stays light).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import pathlib
import re
from typing import TYPE_CHECKING, Any

from agent.auth.roles import Role
from agent.errors import DecodeError, DeviceIOError, PolicyError
from drivers.cli.common import add_config_options, add_json_option
from drivers.cli.composed import with_composition
from drivers.cli.output import print_json

if TYPE_CHECKING:
    from drivers.compose import Composition

MAX_ARGUMENT_FILE_BYTES = 16 * 1024 * 1024
_INT = re.compile(r"^-?[0-9]+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
RESTART_NOTE = "note: an agent already running moves to the new device id when restarted"


# --- on the device ---------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    from drivers.auth import keys  # lazy: heavy (cryptography)

    key = keys.generate_key()
    out = pathlib.Path(args.out)
    keys.save_private_key(out, key)
    if args.json:
        print(json.dumps({"private_key_file": str(out), "public_key": keys.public_key_hex(key),
                          "kid": keys.key_id_hex(key)}, sort_keys=True))
        return 0
    print(f"wrote private key {out} (mode 0600; keep it secret)")
    print(f"public key {keys.public_key_hex(key)}")
    print(f"key id     {keys.key_id_hex(key)}")
    return 0


@with_composition
def _enrol(c: Composition, args: argparse.Namespace) -> int:
    from agent.auth.principals import key_id
    from drivers.auth.keys import parse_public_key  # lazy: heavy (cryptography)

    role = Role(args.role)
    public_key = parse_public_key(args.public_key)
    kid = key_id(public_key).hex()
    store, now = c.principals, c.clock.now()
    label = args.label or f"{role.value} (cli)"
    if role is Role.OWNER:
        owner = store.owner()
        if owner is not None and owner.public_key == public_key and not args.replace:
            if args.json:
                print_json({"role": role.value, "kid": kid, "device_id": store.device_id,
                            "changed": False, "replaced": False})
                return 0
            print(f"owner {kid} is already bound; device id {store.device_id}")
            return 0
        if owner is not None and not args.replace:
            raise PolicyError(
                f"the device already has an owner ({owner.kid.hex()}): "
                "--replace unbinds it (forgetting every key) first"
            )
        replaced = owner is not None
        if replaced:
            store.unbind()
        device_id = store.bind_owner(public_key, label, now, source="cli")
        c.audit.record(
            "auth.enrol", {"role": role.value, "kid": kid, "channel": "cli", "replaced": replaced},
            now,
        )
        if args.json:
            print_json({"role": role.value, "kid": kid, "device_id": device_id,
                        "changed": True, "replaced": replaced})
            return 0
        print(f"owner {kid} bound; device id is now {device_id} (every other key forgotten)")
        print(RESTART_NOTE)
        return 0
    if args.replace:
        raise DecodeError("--replace is for the owner role only")
    existing = store.get(key_id(public_key))
    if existing is not None and existing.role is Role.OWNER:
        # The store would re-role the key, leaving the device without an owner.
        raise PolicyError(f"{kid} is the owner's key; a key has one role")
    store.add(role, public_key, label, now, added_by="cli")
    c.audit.record("auth.enrol", {"role": role.value, "kid": kid, "channel": "cli"}, now)
    if args.json:
        print_json({"role": role.value, "kid": kid, "device_id": store.device_id,
                    "changed": True, "replaced": False})
        return 0
    print(f"{role.value} {kid} trusted; device id {store.device_id}")
    return 0


@with_composition
def _list(c: Composition, args: argparse.Namespace) -> int:
    principals = [p.describe() for p in c.principals.principals()]
    if args.json:
        print(json.dumps({"device_id": c.principals.device_id, "principals": principals},
                         indent=2, sort_keys=True))
        return 0
    print(f"device id {c.principals.device_id}")
    if not principals:
        print("no keys trusted (unbound)")
    for p in principals:
        added = datetime.datetime.fromtimestamp(int(str(p["added_at"])), datetime.UTC)
        print(f"{p['role']:11} {p['kid']}  {p['label']!s:24} "
              f"added {added:%Y-%m-%d %H:%M}Z by {p['added_by']}")
    return 0


@with_composition
def _reset(c: Composition, args: argparse.Namespace) -> int:
    store, now = c.principals, c.clock.now()
    forgotten, before = len(store.principals()), store.device_id
    device_id = store.unbind()
    c.audit.record("auth.reset", {"forgotten": forgotten, "channel": "cli"}, now)
    if args.json:
        print_json({"forgotten": forgotten, "device_id": device_id, "previous_device_id": before})
        return 0
    print(f"forgot {forgotten} key(s); device id is now {device_id} (was {before})")
    print(RESTART_NOTE)
    return 0


@with_composition
def _device_id(c: Composition, args: argparse.Namespace) -> int:
    from agent.sealedparams import SealingKey  # lazy: heavy (cryptography)

    # Read here, on the device, the sealing key is as authentic as `auth enrol`:
    # `remote --sealing-key` pins it (docs/sealed-parameters.md).
    sealing = SealingKey(c.layout.sealing_key, c.keys.device).public_key().hex()
    if args.json:
        print(json.dumps({"device_id": c.principals.device_id, "sealing_key": sealing}))
    else:
        print(c.principals.device_id)
    return 0


# --- from anywhere: one signed command over MQTT ------------------------------------


def parse_value(text: str) -> object:
    """``true``/``false``, integers, JSON, ``@FILE`` (bytes), ``hex:..`` (bytes), else text."""
    if text.startswith("@"):
        from drivers.auth.keys import read_capped

        return read_capped(pathlib.Path(text[1:]), MAX_ARGUMENT_FILE_BYTES)
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError:
            raise DecodeError(f"{text[:40]!r} is not hex") from None
    if text in ("true", "false"):
        return text == "true"
    if _INT.match(text):
        return int(text)
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict[str, object]:
    arguments: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _KEY.match(key):
            raise DecodeError(f"argument {item[:40]!r} must be key=value")
        if key in arguments:
            raise DecodeError(f"argument {key!r} given twice")
        arguments[key] = parse_value(value)
    return arguments


def jsonable(value: object) -> object:
    """CBOR results as JSON: bytes become base64 text, map keys text."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _remote(args: argparse.Namespace) -> int:
    from drivers.auth.client import (  # lazy: heavy (cryptography, paho)
        CommandClient,
        TlsOptions,
        load_private_key,
    )

    tls_files = (args.ca_file, args.cert_file, args.client_key_file)
    if not args.tls and any(tls_files):
        raise DecodeError("--ca-file, --cert-file and --client-key-file need --tls")
    tls = (
        TlsOptions(*(pathlib.Path(f) if f else None for f in tls_files)) if args.tls else None
    )
    password = None
    if args.password_file:
        try:
            password = pathlib.Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DeviceIOError(f"cannot read {args.password_file}: {exc.strerror}") from exc
    arguments = parse_assignments(args.assignments)
    sealing_key = None
    if args.sealing_key:
        text = args.sealing_key
        if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
            try:
                text = pathlib.Path(text).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise DeviceIOError(f"cannot read {args.sealing_key}: {exc.strerror}") from exc
        try:
            sealing_key = bytes.fromhex(text)
        except ValueError:
            sealing_key = b""
        if len(sealing_key) != 32:
            raise DecodeError("--sealing-key must be 64 hex digits or a file holding them")
    client = CommandClient(
        args.host,
        args.port or (8883 if args.tls else 1883),
        device_id=args.device_id,
        signing_key=load_private_key(pathlib.Path(args.key)),
        prefix=args.prefix,
        tls=tls,
        allow_plaintext=args.allow_plaintext,
        username=args.username,
        password=password,
        connect_timeout=args.timeout,
        sealing_key=sealing_key,
    )
    with client:
        result = client.call(
            args.name, arguments, timeout=args.timeout, sealed=args.sealed,
            seal=frozenset(args.seal),
        )
    print(json.dumps(jsonable(result), indent=2, sort_keys=True))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("auth", help="the keys this device obeys (on the device)")
    sub = parser.add_subparsers(dest="auth_command", metavar="ACTION")
    sub.required = True
    keygen = sub.add_parser("keygen", help="create a command signing key (Ed25519, PKCS8 PEM)")
    keygen.add_argument("--out", required=True, help="private key file (never overwritten)")
    keygen.add_argument("--json", action="store_true", help="print JSON")
    keygen.set_defaults(func=_keygen)
    enrol = sub.add_parser("enrol", help="trust a public key for a role (root on the device)")
    add_config_options(enrol)
    enrol.add_argument("--role", required=True, choices=[r.value for r in Role],
                       help="what the key may do (see README: Who may command the device)")
    enrol.add_argument("--public-key", required=True, help="64 hex digits, or a file (hex/PEM)")
    enrol.add_argument("--label", default="", help="a name for the key (at most 64 characters)")
    enrol.add_argument("--replace", action="store_true",
                       help="owner only: unbind the current owner (and every key) first")
    add_json_option(enrol)
    enrol.set_defaults(func=_enrol)
    listing = sub.add_parser("list", help="the trusted keys and the device id")
    add_config_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list)
    reset = sub.add_parser("reset", help="forget every key and take a new device id (unbind)")
    add_config_options(reset)
    add_json_option(reset)
    reset.set_defaults(func=_reset)
    device_id = sub.add_parser("device-id", help="the id naming this device's MQTT topics")
    add_config_options(device_id)
    device_id.add_argument("--json", action="store_true", help="print JSON")
    device_id.set_defaults(func=_device_id)

    remote = subparsers.add_parser("remote", help="send one signed command to a device over MQTT")
    remote.add_argument("--key", required=True, help="signing key (from `auth keygen`)")
    remote.add_argument("--device-id", required=True, help="from `auth device-id` or the app")
    remote.add_argument("--host", default="127.0.0.1", help="the broker (default 127.0.0.1)")
    remote.add_argument("--port", type=int, default=None, help="default 8883 (TLS) or 1883")
    remote.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True,
                        help="TLS to the broker (default on)")
    remote.add_argument("--allow-plaintext", action="store_true",
                        help="--no-tls to a broker off this host")
    remote.add_argument("--ca-file", default=None, help="PEM CA bundle (default: system CAs)")
    remote.add_argument("--cert-file", default=None, help="client certificate (mutual TLS)")
    remote.add_argument("--client-key-file", default=None, help="its private key")
    remote.add_argument("--username", default=None, help="broker user name")
    remote.add_argument("--password-file", default=None, help="file holding its password")
    remote.add_argument("--prefix", default="edge", help="mqtt.topic_prefix of the device")
    remote.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    remote.add_argument("--sealed", action="store_true",
                        help="ask for the reply sealed to a one-time key (always for data.export)")
    remote.add_argument("--seal", action="append", default=[], metavar="KEY",
                        help="send this argument sealed to the device's key (passwords of "
                        "*.set_credentials always are)")
    remote.add_argument("--sealing-key", default=None, metavar="HEX|FILE",
                        help="the device's sealing key, from `auth device-id --json` on the "
                        "device (default: asked for with device.sealing_key)")
    remote.add_argument("--json", action="store_true",
                        help="accepted for symmetry: the result is always JSON")
    remote.add_argument("name", metavar="COMMAND", help="e.g. consent.get")
    remote.add_argument("assignments", metavar="KEY=VALUE", nargs="*",
                        help="arguments: true/false, integers, JSON, @FILE or hex:.. for bytes")
    remote.set_defaults(func=_remote)
