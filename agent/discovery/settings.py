"""Configuration of LAN discovery (section ``[discovery]``)."""

from __future__ import annotations

import dataclasses
import ipaddress


def _ipv4_multicast(value: object) -> str | None:
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        return "must be an IPv4 address"
    return None if address.is_multicast else "must be an IPv4 multicast address"


def _ipv4_or_empty(value: object) -> str | None:
    if value == "":
        return None
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        return "must be an IPv4 address or empty (any interface)"
    return None


def _uri_path(value: object) -> str | None:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        return "must be an absolute URI path without whitespace"
    return None


def _scopes(value: object) -> str | None:
    if not isinstance(value, tuple):
        return "must be a list of URIs"
    for scope in value:
        if not isinstance(scope, str) or not scope or any(c.isspace() for c in scope):
            return "every scope must be a non-empty URI without whitespace"
    return None


@dataclasses.dataclass(frozen=True)
class DiscoverySettings:
    # False = non-discoverable mode: no Hello/Bye, Probes are ignored, no mDNS announcement.
    discoverable: bool = True
    http_port: int = dataclasses.field(default=8080, metadata={"min": 1, "max": 65535})

    # --- WS-Discovery (ONVIF) responder ---------------------------------------
    wsd_enabled: bool = True
    wsd_port: int = dataclasses.field(default=3702, metadata={"min": 1, "max": 65535})
    wsd_multicast_group: str = dataclasses.field(
        default="239.255.255.250", metadata={"check": _ipv4_multicast}
    )
    # Local IPv4 address of the interface to join the group on; empty = kernel default.
    # The built-in default keeps a development machine's discovery on loopback; a
    # device's /etc/edge-agent/agent.toml names its LAN interface (or "" for the default).
    interface_address: str = dataclasses.field(
        default="127.0.0.1", metadata={"check": _ipv4_or_empty}
    )
    # WS-Discovery asks targets to wait a random 0..APP_MAX_DELAY (500 ms) before answering.
    reply_delay_max_ms: int = dataclasses.field(default=500, metadata={"min": 0, "max": 500})
    max_datagram_bytes: int = dataclasses.field(default=16384, metadata={"min": 1024, "max": 65507})
    xaddrs_path: str = dataclasses.field(
        default="/onvif/device_service", metadata={"check": _uri_path}
    )
    metadata_version: int = dataclasses.field(default=1, metadata={"min": 1, "max": 2**32 - 1})
    # Added to the built-in ONVIF scopes (type, profile, name, hardware).
    extra_scopes: tuple[str, ...] = dataclasses.field(default=(), metadata={"check": _scopes})
    address_check_seconds: float = dataclasses.field(
        default=10.0, metadata={"min": 0.5, "max": 3600}
    )
    # Abuse limits (agent/discovery/ratelimit.py).  Per source address: datagrams looked
    # at, a burst then a steady rate (a real client sends a Probe and 2 repeats); the
    # table of sources is bounded, least recently seen evicted.  Globally: replies sent,
    # whatever the sources.  A flood is then answered at most this often, never 1:1.
    wsd_source_burst: int = dataclasses.field(default=5, metadata={"min": 1, "max": 1000})
    wsd_source_rate_per_second: float = dataclasses.field(
        default=1.0, metadata={"min": 0.01, "max": 1000.0}
    )
    wsd_global_burst: int = dataclasses.field(default=40, metadata={"min": 1, "max": 10000})
    wsd_global_rate_per_second: float = dataclasses.field(
        default=20.0, metadata={"min": 0.1, "max": 10000.0}
    )
    wsd_tracked_sources: int = dataclasses.field(default=256, metadata={"min": 1, "max": 65536})

    # --- WS-Discovery client (edge-agent discover) -----------------------------
    probe_repeats: int = dataclasses.field(default=3, metadata={"min": 1, "max": 10})
    probe_initial_interval_ms: int = dataclasses.field(
        default=100, metadata={"min": 10, "max": 5000}
    )
    probe_max_interval_ms: int = dataclasses.field(default=1000, metadata={"min": 10, "max": 10000})
    default_timeout_seconds: float = dataclasses.field(
        default=3.0, metadata={"min": 0.1, "max": 60}
    )

    # --- SSDP ------------------------------------------------------------------
    ssdp_port: int = dataclasses.field(default=1900, metadata={"min": 1, "max": 65535})
    ssdp_mx_seconds: int = dataclasses.field(default=1, metadata={"min": 1, "max": 5})

    # --- mDNS ------------------------------------------------------------------
    mdns_enabled: bool = True
    # Interface addresses zeroconf binds to; empty = all interfaces (loopback by default,
    # as for interface_address).
    mdns_interfaces: tuple[str, ...] = ("127.0.0.1",)
