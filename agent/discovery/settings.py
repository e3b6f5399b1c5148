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


def _http_urls(value: object) -> str | None:
    if not isinstance(value, tuple):
        return "must be a list of http:// or https:// URLs"
    for url in value:
        if (
            not isinstance(url, str)
            or not url.startswith(("http://", "https://"))
            or any(c.isspace() for c in url)
            or len(url) > 512
        ):
            return "every XAddr must be an http:// or https:// URL without whitespace"
    return None


def _uri_or_empty(*schemes: str) -> object:
    def check(value: object) -> str | None:
        if value == "":
            return None
        if (
            not isinstance(value, str)
            or not value.lower().startswith(tuple(f"{s}://" for s in schemes))
            or any(c.isspace() for c in value)
            or len(value) > 1024
        ):
            return f"must be empty or a {' or '.join(schemes)} URI without whitespace"
        return None

    return check


def _text(value: object) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        return "must be 1 to 64 printable characters"
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
    """Being found on the LAN (WS-Discovery, ONVIF, mDNS); finding cameras (``discover``).

    Attributes:
        discoverable: Announce the device; false = non-discoverable mode: no Hello/Bye,
            Probes ignored, no mDNS announcement.
        http_port (-): TCP port of the ONVIF device service (the advertised XAddrs);
            0 = any free port.
        wsd_enabled: Answer WS-Discovery Probes and send Hello/Bye.
        wsd_port (-): WS-Discovery UDP port.
        wsd_multicast_group: WS-Discovery IPv4 multicast group.
        interface_address: Local IPv4 address of the interface discovery runs on; empty:
            the kernel's default. The default keeps a development machine's discovery on
            loopback; a device names its LAN interface.
        reply_delay_max_ms: Answers to a multicast Probe wait a random delay up to this
            (WS-Discovery's APP_MAX_DELAY is 500 ms).
        max_datagram_bytes: Largest WS-Discovery datagram read; larger ones are ignored.
        xaddrs_path: URI path of the ONVIF device service in the advertised XAddrs.
        metadata_version (-): WS-Discovery MetadataVersion announced; raise it when the
            device's metadata changes.
        extra_scopes: ONVIF scope URIs added to the built-in ones (type, profile, name,
            hardware).
        address_check_seconds: How often the interface address is checked for a change
            (then re-announced).
        wsd_source_burst (datagrams): Datagrams looked at from one source address at
            once, before its rate applies.
        wsd_source_rate_per_second: Steady datagram rate looked at per source address.
        wsd_global_burst (replies): Replies sent at once, over all sources.
        wsd_global_rate_per_second: Steady reply rate over all sources.
        wsd_tracked_sources (addresses): Source addresses remembered for rate limits;
            the least recently seen is forgotten first.
        onvif_enabled: Serve the ONVIF device service (at ``interface_address``,
            ``http_port``, ``xaddrs_path``), discoverable or not.
        onvif_xaddrs: XAddrs of an ONVIF device service the firmware already runs,
            advertised as they are (the agent then serves none of its own); empty: the
            agent's own.
        onvif_credentials_file: A ``username:password`` file the image provides (mode
            0600, owned by the agent's user); empty: the owner sets the ONVIF user with
            ``onvif.set_credentials``.
        onvif_manufacturer: Manufacturer named by GetDeviceInformation (1-64 printable
            characters).
        onvif_stream_uri: rtsp:// or rtsps:// URI GetStreamUri answers; empty: ``camera.uri``
            when ``camera.source`` is ``"rtsp"``.
        onvif_snapshot_uri: http(s) URL of a JPEG snapshot the firmware serves; empty:
            GetSnapshotUri is not supported.
        onvif_max_body_bytes: Largest ONVIF request body read.
        onvif_clock_skew_seconds: How far a WS-Security UsernameToken's Created may lie
            from the device clock (either way); nonces are remembered that long.
        onvif_max_nonces (nonces): Nonces remembered against replay.
        onvif_max_failed_auth (attempts): Failed ONVIF digests within
            ``onvif_failure_window_seconds`` before a lockout (kept across restarts).
        onvif_failure_window_seconds: Sliding window those failures are counted in.
        onvif_lockout_seconds: First lockout; it doubles with each further one.
        onvif_lockout_max_seconds: Longest lockout.
        onvif_max_connections (connections): Open ONVIF connections at once; more are
            answered 503 and closed.
        onvif_max_connections_per_source (connections): Open ONVIF connections at once
            from one source address.
        onvif_timeout_seconds: Time a whole ONVIF request may take to arrive.
        probe_repeats (probes): Probes ``edge-agent discover`` sends (UDP is lossy).
        probe_initial_interval_ms: Delay before the first repeated Probe; doubles after
            each.
        probe_max_interval_ms: Longest delay between repeated Probes.
        default_timeout_seconds: How long ``edge-agent discover`` listens for answers
            (``--timeout`` overrides).
        ssdp_port (-): SSDP UDP port ``edge-agent discover`` searches on.
        ssdp_mx_seconds: SSDP MX: answers are spread over this many seconds.
        mdns_enabled: Announce the device over mDNS/DNS-SD.
        mdns_interfaces: Interface addresses mDNS binds to; empty: all interfaces.
    """

    # False = non-discoverable mode: no Hello/Bye, Probes are ignored, no mDNS announcement.
    discoverable: bool = True
    # The port of the agent's ONVIF device service (the XAddrs advertised); 0 = any free port.
    http_port: int = dataclasses.field(default=8080, metadata={"min": 0, "max": 65535})

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

    # --- ONVIF device service (agent/discovery/onvif*.py) -------------------------
    # Served on interface_address:http_port at xaddrs_path (and /onvif/media_service,
    # /onvif/media2_service), whether or not the device is discoverable.
    onvif_enabled: bool = True
    # The XAddrs of an ONVIF device service the firmware already runs: advertised as
    # they are, and the agent then serves none of its own.  Empty: the agent's own.
    onvif_xaddrs: tuple[str, ...] = dataclasses.field(default=(), metadata={"check": _http_urls})
    # Where the ONVIF user comes from: "" = the owner sets it (onvif.set_credentials,
    # sealed in the state directory); a path = a "username:password" file the image
    # provides (mode 0600, owned by the agent's user).
    onvif_credentials_file: str = ""
    onvif_manufacturer: str = dataclasses.field(default="edge-agent", metadata={"check": _text})
    # The stream GetStreamUri answers: empty = [camera] uri when [camera] source is rtsp.
    onvif_stream_uri: str = dataclasses.field(
        default="", metadata={"check": _uri_or_empty("rtsp", "rtsps")}
    )
    # A JPEG snapshot URL the firmware serves; empty = GetSnapshotUri is not supported.
    onvif_snapshot_uri: str = dataclasses.field(
        default="", metadata={"check": _uri_or_empty("http", "https")}
    )
    onvif_max_body_bytes: int = dataclasses.field(
        default=32768, metadata={"min": 1024, "max": 1048576}
    )
    # WS-Security: how far a UsernameToken's Created may lie from the device clock
    # (either way); a nonce is remembered that long, so a token is good exactly once.
    onvif_clock_skew_seconds: int = dataclasses.field(default=300, metadata={"min": 5, "max": 3600})
    onvif_max_nonces: int = dataclasses.field(default=8192, metadata={"min": 16, "max": 1000000})
    # Failed digests (wrong user or password) before a lockout, within a sliding window;
    # the lockout doubles with each one up to the maximum, and survives a restart.
    onvif_max_failed_auth: int = dataclasses.field(default=5, metadata={"min": 1, "max": 1000})
    onvif_failure_window_seconds: int = dataclasses.field(
        default=60, metadata={"min": 1, "max": 86400}
    )
    onvif_lockout_seconds: int = dataclasses.field(default=30, metadata={"min": 1, "max": 86400})
    onvif_lockout_max_seconds: int = dataclasses.field(
        default=900, metadata={"min": 1, "max": 604800}
    )
    onvif_max_connections: int = dataclasses.field(default=16, metadata={"min": 1, "max": 1024})
    onvif_max_connections_per_source: int = dataclasses.field(
        default=4, metadata={"min": 1, "max": 1024}
    )
    onvif_timeout_seconds: float = dataclasses.field(
        default=10.0, metadata={"min": 0.5, "max": 300}
    )

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
