"""``edge-agent provision``: installer tools for the provisioning channels.

* ``provision label``  -- the sticker text (serial + verification code), optional PNG
* ``provision lan``    -- send Wi-Fi credentials over the LAN API (SPAKE2);
  with ``--bind ACCOUNT --owner-key FILE`` it binds the owner first
* ``provision bind``   -- only bind the owner over the LAN API (e.g. over Ethernet)
* ``provision binding-qr`` -- the text of a binding QR for the camera, as the
  owner's app makes it
* ``provision improv`` -- send Wi-Fi credentials over Improv serial

``--owner-key`` takes the owner's Ed25519 public key as 64 hex digits or a
file holding it (PEM SubjectPublicKeyInfo as ``openssl pkey -pubout`` writes
it, hex, or the 32 raw bytes).

The passphrase comes from ``--passphrase-file`` or an interactive prompt,
never from argv (it would show in ``ps``).  Progress goes to stderr; with
``--json`` ``lan`` and ``improv`` print it as JSON Lines on stdout instead
(``{"event": "progress", "message": ...}``, then ``{"event": "result", "ok": true, ...}``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.errors import ConfigError, DecodeError, DeviceIOError, NotFoundError, TooLargeError
from agent.provisioning.binding import (
    Binding,
    build_binding_payload,
    check_account,
    check_verification_code,
    label_payload,
    parse_label,
)
from agent.provisioning.wifi import WifiCredentials
from drivers.cli.common import add_config_options, add_json_option, is_sample_serial, load_config
from drivers.cli.output import JSON_LINES_HELP, JsonLines, print_json

MAX_PASSPHRASE_FILE = 1024


def _progress(message: str) -> None:
    print(f"edge-agent: {message}", file=sys.stderr, flush=True)


def _stream(args: argparse.Namespace) -> tuple[JsonLines | None, Callable[[str], None]]:
    """(JSON Lines or None, progress): under --json progress is an event on stdout."""
    if not args.json:
        return None, _progress
    lines = JsonLines()
    return lines, lambda message: lines.event("progress", message=message)


def read_passphrase(path: str | None, prompt: Callable[[str], str] | None = None) -> str:
    if path is None:
        ask = prompt or getpass.getpass
        return ask("Wi-Fi passphrase (empty for an open network): ")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PASSPHRASE_FILE + 1)
    except OSError as exc:
        raise DeviceIOError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_PASSPHRASE_FILE:
        raise TooLargeError(f"passphrase file {path} is too large")
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"passphrase file {path} is not UTF-8") from exc


def read_owner_key(value: str) -> bytes:
    """The owner's raw Ed25519 public key: 64 hex digits, or a PEM/hex/raw key file."""
    # One parser for every key an operator hands over (``edge-agent auth`` uses it too).
    from drivers.auth.keys import parse_public_key

    return parse_public_key(value)


def choose_ssid(names: Sequence[str], answer: Callable[[str], str] | None = None) -> str:
    if not names:
        raise NotFoundError("the device sees no Wi-Fi networks; pass --ssid")
    for index, name in enumerate(names, 1):
        print(f"  {index:2d}. {name}", file=sys.stderr)
    reply = (answer or input)("Network number: ").strip()
    if not reply.isdigit() or not 1 <= int(reply) <= len(names):
        raise DecodeError(f"choose a number from 1 to {len(names)}")
    return names[int(reply) - 1]


def _credentials(args: argparse.Namespace, ssid: str) -> WifiCredentials:
    passphrase = read_passphrase(args.passphrase_file)
    return WifiCredentials(ssid=ssid, passphrase=passphrase or None, hidden=args.hidden)


def _label(args: argparse.Namespace) -> int:
    from drivers.provisioning.store import load_or_create_binding

    cfg = load_config(args)
    if is_sample_serial(cfg.device.serial_number):
        # A sticker with the sample serial and this device's real code would bind nothing.
        raise ConfigError(
            "device.serial_number",
            f"{cfg.device.serial_number} is the sample serial number: set the device's own "
            "under [device] in its configuration before printing a label",
        )
    binding = load_or_create_binding(cfg.state_dir, cfg.device.serial_number)
    payload = label_payload(binding)
    if args.json:
        print(json.dumps({
            "payload": payload,
            "serial_number": binding.serial_number,
            "verification_code": binding.verification_code,
        }, sort_keys=True))
    else:
        print(payload)
        print(f"serial number: {binding.serial_number}", file=sys.stderr)
        print(f"verification code: {binding.verification_code}", file=sys.stderr)
    if args.png:
        import cv2

        from drivers.provisioning.qr_reader import render_qr

        if not cv2.imwrite(args.png, render_qr(payload)):
            raise DeviceIOError(f"cannot write {args.png}")
        _progress(f"label QR written to {args.png}")
    return 0


def _device_code(args: argparse.Namespace, info: dict[str, object]) -> tuple[str, str]:
    """(verification code, serial number) from --label, else --code and the device's info."""
    if args.label:
        binding = parse_label(args.label)
        return binding.verification_code, binding.serial_number
    if not args.code:
        raise DecodeError("give --code or --label")
    return check_verification_code(args.code), str(info.get("serial_number", ""))


def _owner(args: argparse.Namespace) -> tuple[str, bytes] | None:
    """(account, owner key) when binding was asked for; read before any network step."""
    if args.bind is None and args.owner_key is None:
        return None
    if args.bind is None or args.owner_key is None:
        raise DecodeError("binding needs both --bind ACCOUNT and --owner-key KEY")
    return check_account(args.bind), read_owner_key(args.owner_key)


def _lan(args: argparse.Namespace) -> int:
    from drivers.provisioning.lan_client import LanClient

    owner = _owner(args)
    lines, progress = _stream(args)
    client = LanClient(args.device)
    info = client.info()
    code, serial = _device_code(args, info)
    progress(f"device {serial}, window {info.get('window')}")
    ssid = args.ssid
    if ssid is None:
        progress("asking the device for the networks it sees")
        networks = client.networks()
        ssid = choose_ssid([str(n["ssid"]) for n in networks])
    credentials = _credentials(args, ssid)
    progress("proving the verification code (SPAKE2)")
    pake = client.authenticate(code, serial)
    progress("device verified")
    device_id = None
    if owner is not None:
        # Before the Wi-Fi: a successful connection closes the provisioning window.
        device_id = client.bind(pake, *owner)
        if lines is not None:
            lines.event("bound", account=owner[0], device_id=device_id)
        else:
            print(f"bound: {owner[0]} (device id {device_id})")
    status = client.provision(pake, credentials, wait=args.wait, progress=progress)
    if lines is not None:
        lines.result(serial_number=serial, ssid=credentials.ssid,
                     ip_address=status.get("ip_address"), device_id=device_id)
        return 0
    print(f"connected: {credentials.ssid} ({status.get('ip_address', 'no address')})")
    return 0


def _bind(args: argparse.Namespace) -> int:
    from drivers.provisioning.lan_client import LanClient

    account, owner_key = check_account(args.account), read_owner_key(args.owner_key)
    client = LanClient(args.device)
    info = client.info()
    code, serial = _device_code(args, info)
    _progress(f"device {serial}, window {info.get('window')}")
    _progress("proving the verification code (SPAKE2)")
    pake = client.authenticate(code, serial)
    _progress("device verified")
    device_id = client.bind(pake, account, owner_key)
    if args.json:
        print_json({"account": account, "device_id": device_id, "serial_number": serial})
        return 0
    print(f"bound: {account} (device id {device_id})")
    return 0


def _binding_qr(args: argparse.Namespace) -> int:
    if args.label:
        device = parse_label(args.label)
    elif args.code and args.serial:
        device = Binding(args.serial, check_verification_code(args.code))
    else:
        raise DecodeError("give --label, or --code and --serial")
    # A real token comes from the account service, which redeems it once; a
    # generated one suits a device that checks nothing beyond its own ledger.
    token = args.token or secrets.token_urlsafe(24)
    exp = int(time.time() + args.ttl)
    payload = build_binding_payload(
        device, check_account(args.account), token, exp, read_owner_key(args.owner_key)
    )
    if args.png:
        import cv2

        from drivers.provisioning.qr_reader import render_qr

        if not cv2.imwrite(args.png, render_qr(payload)):
            raise DeviceIOError(f"cannot write {args.png}")
        _progress(f"binding QR written to {args.png}")
    if args.json:
        print_json({"payload": payload, "expires_at": exp, "png": args.png})
    else:
        print(payload)
    return 0


def _improv(args: argparse.Namespace) -> int:
    from drivers.provisioning.improv_serial import ImprovClient, open_port

    lines, progress = _stream(args)
    port = open_port(args.port, args.baud)
    try:
        client = ImprovClient(port)
        state = client.current_state()
        progress(f"device state: {state.name.lower()}")
        ssid = args.ssid
        if ssid is None:
            progress("asking the device for the networks it sees")
            ssid = choose_ssid([name for name, _, _ in client.scan()])
        credentials = _credentials(args, ssid)
        url = client.send_wifi(credentials, timeout=args.wait, progress=progress)
    finally:
        port.close()
    if lines is not None:
        lines.result(ssid=credentials.ssid, url=url or None)
        return 0
    print(f"connected: {credentials.ssid}" + (f" ({url})" if url else ""))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("provision", help="installer tools: label, LAN, Improv")
    sub = parser.add_subparsers(dest="provision_command", metavar="ACTION")
    sub.required = True

    label = sub.add_parser("label", help="print the sticker payload (serial + code)")
    add_config_options(label)
    add_json_option(label)
    label.add_argument("--png", default=None, help="also write the QR code as a PNG")
    label.set_defaults(func=_label)

    def wifi_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ssid", default=None, help="network name (default: choose from a scan)")
        p.add_argument("--passphrase-file", default=None, help="file holding the passphrase")
        p.add_argument("--hidden", action="store_true", help="the network is hidden")
        p.add_argument("--wait", type=float, default=90.0, help="seconds to wait for the result")

    def device_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", required=True, help="http://HOST:PORT of the device")
        p.add_argument("--code", default=None, help="verification code from the label")
        p.add_argument("--label", default=None, help="the label's QR text instead of --code")

    key_help = "the owner's Ed25519 public key: 64 hex digits, or a PEM or hex file"
    lan = sub.add_parser("lan", help="provision over the LAN API")
    device_options(lan)
    wifi_options(lan)
    lan.add_argument("--bind", default=None, metavar="ACCOUNT", help="also bind this account")
    lan.add_argument("--owner-key", default=None, metavar="KEY", help=key_help)
    add_json_option(lan, JSON_LINES_HELP)
    lan.set_defaults(func=_lan)

    bind = sub.add_parser("bind", help="bind the owner over the LAN API")
    device_options(bind)
    bind.add_argument("--account", required=True, help="the owner's account")
    bind.add_argument("--owner-key", required=True, metavar="KEY", help=key_help)
    add_json_option(bind)
    bind.set_defaults(func=_bind)

    qr = sub.add_parser("binding-qr", help="print a binding QR's text (as the owner's app)")
    qr.add_argument("--account", required=True, help="the owner's account")
    qr.add_argument("--owner-key", required=True, metavar="KEY", help=key_help)
    qr.add_argument("--code", default=None, help="the device's verification code")
    qr.add_argument("--serial", default=None, help="the device's serial number")
    qr.add_argument("--label", default=None, help="the label's QR text instead")
    qr.add_argument("--token", default=None, help="single-use token (default: a random one)")
    qr.add_argument("--ttl", type=int, default=600, help="seconds the QR stays valid")
    qr.add_argument("--png", default=None, help="also write the QR code as a PNG")
    add_json_option(qr)
    qr.set_defaults(func=_binding_qr)

    improv = sub.add_parser("improv", help="provision over Improv serial")
    improv.add_argument("--port", required=True, help="serial device or pyserial URL")
    improv.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    wifi_options(improv)
    add_json_option(improv, JSON_LINES_HELP)
    improv.set_defaults(func=_improv)
