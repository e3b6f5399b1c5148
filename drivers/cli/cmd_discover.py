"""``edge-agent discover``: cameras (WS-Discovery), the router (SSDP), agents (mDNS)."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agent.errors import BadDataError, ConfigError, TransportError
from drivers.cli.common import CONFIG_ENV, DEFAULT_CONFIG, config_path


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return f"{title}: none found"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        f"{title} ({len(rows)})",
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _discover(args: argparse.Namespace) -> int:
    # lazy: heavy (zeroconf, asyncio, the LAN clients): 40 ms of every `edge-agent --help`
    from agent import config as agent_config
    from drivers.discovery.clients import default_gateway, probe_cameras, search_upnp
    from drivers.discovery.mdns_zc import browse

    try:
        path = config_path(args)
    except ConfigError:
        path = None  # nothing installed: a technician's laptop, the built-in defaults suit
    state_dir = pathlib.Path(args.state_dir) if args.state_dir else None
    settings = agent_config.load(path, state_dir=state_dir).discovery
    timeout = args.timeout if args.timeout is not None else settings.default_timeout_seconds
    if not 0 < timeout <= 60:
        raise ConfigError("--timeout", "must be between 0 and 60 seconds")
    gateway = args.gateway or default_gateway()
    jobs: dict[str, Callable[[], list[Any]]] = {}
    if not args.no_cameras:
        jobs["cameras"] = lambda: probe_cameras(
            settings, timeout=timeout, destination=args.wsd_target
        )
    if not args.no_router:
        jobs["upnp"] = lambda: search_upnp(
            settings, timeout=timeout, destination=args.ssdp_target, gateway=gateway
        )
    if not args.no_agents:
        jobs["agents"] = lambda: browse(
            timeout=timeout, interfaces=args.mdns_interface or settings.mdns_interfaces
        )
    print(f"edge-agent: discovering for {timeout:g} s ...", file=sys.stderr)
    results: dict[str, list[Any]] = {}
    failures: dict[str, str] = {}
    first_error: TransportError | BadDataError | None = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(jobs), 1)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except (TransportError, BadDataError) as exc:
                failures[name] = str(exc)
                first_error = first_error or exc
                print(f"edge-agent: {name} search failed: {exc}", file=sys.stderr)
    if first_error is not None and len(failures) == len(jobs):
        raise first_error
    if args.json:
        document: dict[str, object] = {
            name: [item.as_dict() for item in items] for name, items in results.items()
        }
        document["gateway"] = gateway
        document["errors"] = failures
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    blocks = []
    if "cameras" in results:
        blocks.append(
            _table(
                "Cameras (WS-Discovery)",
                ("ADDRESS", "NAME", "MODEL", "XADDRS", "ENDPOINT"),
                [
                    (c.address, c.name, c.model, " ".join(c.xaddrs), c.endpoint)
                    for c in results["cameras"]
                ],
            )
        )
    if "upnp" in results:
        blocks.append(
            _table(
                f"Router and UPnP devices (SSDP, gateway {gateway or 'unknown'})",
                ("ROUTER", "LOCATION", "SERVER", "TYPES"),
                [
                    ("yes" if d.is_router else "", d.location, d.server, " ".join(d.search_targets))
                    for d in results["upnp"]
                ],
            )
        )
    if "agents" in results:
        blocks.append(
            _table(
                "Agents and streams (mDNS)",
                ("NAME", "ADDRESSES", "PORT", "SERIAL", "MODEL", "CLAIMED"),
                [
                    (
                        p.name,
                        " ".join(p.addresses),
                        str(p.port),
                        p.properties.get("sn", ""),
                        p.properties.get("model", ""),
                        p.properties.get("claimed", ""),
                    )
                    for p in results["agents"]
                ],
            )
        )
    print("\n\n".join(blocks))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "discover", help="list cameras, the router and other agents on the LAN"
    )
    parser.add_argument(
        "--config", default=None, metavar="FILE",
        help=f"TOML configuration (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG} if it exists, "
        "else the built-in defaults, fit for a laptop)",
    )
    parser.add_argument("--state-dir", default=None, metavar="DIR",
                        help="state directory (default: the configuration's)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to listen (mDNS listens at least 1.5)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--no-cameras", action="store_true", help="skip WS-Discovery")
    parser.add_argument("--no-router", action="store_true", help="skip SSDP")
    parser.add_argument("--no-agents", action="store_true", help="skip mDNS")
    parser.add_argument(
        "--wsd-target",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="unicast the WS-Discovery probe here instead of the multicast group",
    )
    parser.add_argument(
        "--ssdp-target",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="unicast the SSDP M-SEARCH here instead of the multicast group",
    )
    parser.add_argument("--gateway", default=None, help="router address (default: from routes)")
    parser.add_argument(
        "--mdns-interface",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="interface address for mDNS (repeatable; default: all)",
    )
    parser.set_defaults(func=_discover)
