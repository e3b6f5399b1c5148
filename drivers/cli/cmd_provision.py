"""``edge-agent provision``: installer tools for the provisioning channels.

* ``provision label``  -- the sticker text (serial + verification code), optional PNG
* ``provision lan``    -- send Wi-Fi credentials over the LAN API (SPAKE2)
* ``provision improv`` -- send Wi-Fi credentials over Improv serial

The passphrase comes from ``--passphrase-file`` or an interactive prompt,
never from argv (it would show in ``ps``).  Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agent import config as agent_config
from agent.errors import DecodeError, DeviceIOError, NotFoundError, TooLargeError
from agent.provisioning.binding import check_verification_code, label_payload, parse_label
from agent.provisioning.wifi import WifiCredentials

MAX_PASSPHRASE_FILE = 1024


def _progress(message: str) -> None:
    print(f"edge-agent: {message}", file=sys.stderr, flush=True)


def _load_config(args: argparse.Namespace) -> agent_config.AgentConfig:
    path = pathlib.Path(args.config) if args.config else None
    state_dir = pathlib.Path(args.state_dir) if args.state_dir else None
    return agent_config.load(path, state_dir=state_dir)


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

    cfg = _load_config(args)
    binding = load_or_create_binding(cfg.state_dir, cfg.device.serial_number)
    payload = label_payload(binding)
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


def _lan(args: argparse.Namespace) -> int:
    from drivers.provisioning.lan_client import LanClient

    client = LanClient(args.device)
    info = client.info()
    if args.label:
        binding = parse_label(args.label)
        code, serial = binding.verification_code, binding.serial_number
    else:
        if not args.code:
            raise DecodeError("give --code or --label")
        code, serial = check_verification_code(args.code), str(info.get("serial_number", ""))
    _progress(f"device {serial}, window {info.get('window')}")
    ssid = args.ssid
    if ssid is None:
        _progress("asking the device for the networks it sees")
        networks = client.networks()
        ssid = choose_ssid([str(n["ssid"]) for n in networks])
    credentials = _credentials(args, ssid)
    _progress("proving the verification code (SPAKE2)")
    pake = client.authenticate(code, serial)
    _progress("device verified")
    status = client.provision(pake, credentials, wait=args.wait, progress=_progress)
    print(f"connected: {credentials.ssid} ({status.get('ip_address', 'no address')})")
    return 0


def _improv(args: argparse.Namespace) -> int:
    from drivers.provisioning.improv_serial import ImprovClient, open_port

    port = open_port(args.port, args.baud)
    try:
        client = ImprovClient(port)
        state = client.current_state()
        _progress(f"device state: {state.name.lower()}")
        ssid = args.ssid
        if ssid is None:
            _progress("asking the device for the networks it sees")
            ssid = choose_ssid([name for name, _, _ in client.scan()])
        credentials = _credentials(args, ssid)
        url = client.send_wifi(credentials, timeout=args.wait, progress=_progress)
    finally:
        port.close()
    print(f"connected: {credentials.ssid}" + (f" ({url})" if url else ""))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("provision", help="installer tools: label, LAN, Improv")
    sub = parser.add_subparsers(dest="provision_command", metavar="ACTION")
    sub.required = True

    label = sub.add_parser("label", help="print the sticker payload (serial + code)")
    label.add_argument("--config", default=None)
    label.add_argument("--state-dir", default=None)
    label.add_argument("--png", default=None, help="also write the QR code as a PNG")
    label.set_defaults(func=_label)

    def wifi_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ssid", default=None, help="network name (default: choose from a scan)")
        p.add_argument("--passphrase-file", default=None, help="file holding the passphrase")
        p.add_argument("--hidden", action="store_true", help="the network is hidden")
        p.add_argument("--wait", type=float, default=90.0, help="seconds to wait for the result")

    lan = sub.add_parser("lan", help="provision over the LAN API")
    lan.add_argument("--device", required=True, help="http://HOST:PORT of the device")
    lan.add_argument("--code", default=None, help="verification code from the label")
    lan.add_argument("--label", default=None, help="the label's QR text instead of --code")
    wifi_options(lan)
    lan.set_defaults(func=_lan)

    improv = sub.add_parser("improv", help="provision over Improv serial")
    improv.add_argument("--port", required=True, help="serial device or pyserial URL")
    improv.add_argument("--baud", type=int, default=115200)
    wifi_options(improv)
    improv.set_defaults(func=_improv)
