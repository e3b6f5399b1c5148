"""SSDP (UPnP discovery over HTTPU), sans I/O: M-SEARCH out, responses in.

Used to find the LAN's router: the Internet Gateway Device whose description
URL (``LOCATION``) lives on the default gateway's address.  Responses come from
anything on the LAN, so parsing is capped and header names are matched
case-insensitively as HTTP requires.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Iterable

from agent.errors import DecodeError, TooLargeError

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
IGD_V1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
IGD_V2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
ROOT_DEVICE = "upnp:rootdevice"
SEARCH_TARGETS = (IGD_V1, IGD_V2, ROOT_DEVICE)
MAX_RESPONSE_BYTES = 8192
MAX_HEADERS = 64
MAX_HEADER_LINE = 2048
_RTF_UP = 0x1
_RTF_GATEWAY = 0x2


def build_msearch(
    search_target: str, mx_seconds: int = 1, host: str = f"{SSDP_GROUP}:{SSDP_PORT}"
) -> bytes:
    if any(c in search_target for c in "\r\n") or not search_target:
        raise ValueError(f"invalid search target {search_target!r}")
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {host}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {int(mx_seconds)}\r\n"
        f"ST: {search_target}\r\n"
        "USER-AGENT: Linux UPnP/1.1 edge-agent/1\r\n"
        "\r\n"
    ).encode("ascii")


@dataclasses.dataclass(frozen=True)
class SsdpResponse:
    search_target: str
    location: str
    usn: str
    server: str

    @property
    def location_host(self) -> str:
        try:
            return urllib.parse.urlsplit(self.location).hostname or ""
        except ValueError:
            return ""

    @property
    def device_id(self) -> str:
        """The ``uuid:...`` part of the USN (one device answers once per ST)."""
        return self.usn.partition("::")[0].lower() or self.location


def parse_headers(data: bytes, max_bytes: int = MAX_RESPONSE_BYTES) -> tuple[str, dict[str, str]]:
    """Split an HTTPU message into its start line and lower-cased headers."""
    if len(data) > max_bytes:
        raise TooLargeError(f"SSDP message of {len(data)} bytes exceeds {max_bytes}")
    text = data.decode("utf-8", errors="replace")
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.replace("\r\n", "\n").split("\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise TooLargeError(f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if len(line) > MAX_HEADER_LINE:
            raise TooLargeError(f"header line longer than {MAX_HEADER_LINE}")
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            if line.strip():
                raise DecodeError(f"malformed header line {line[:80]!r}")
            continue
        headers.setdefault(name.strip().lower(), value.strip())
    return lines[0].strip(), headers


def parse_response(data: bytes, max_bytes: int = MAX_RESPONSE_BYTES) -> SsdpResponse:
    """Parse one M-SEARCH response; NOTIFYs and requests are DecodeError."""
    start, headers = parse_headers(data, max_bytes)
    parts = start.split(None, 2)
    if len(parts) < 2 or not parts[0].upper().startswith("HTTP/1.") or parts[1] != "200":
        raise DecodeError(f"not an SSDP search response: {start[:80]!r}")
    location = headers.get("location", "")
    if not location.lower().startswith(("http://", "https://")):
        raise DecodeError(f"LOCATION missing or not an http URL: {location[:80]!r}")
    return SsdpResponse(
        search_target=headers.get("st", ""),
        location=location,
        usn=headers.get("usn", ""),
        server=headers.get("server", ""),
    )


@dataclasses.dataclass(frozen=True)
class UpnpDevice:
    device_id: str
    location: str
    server: str
    search_targets: tuple[str, ...]
    is_router: bool

    @property
    def is_gateway_device(self) -> bool:
        return any(st in (IGD_V1, IGD_V2) for st in self.search_targets)

    def as_dict(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "location": self.location,
            "server": self.server,
            "search_targets": list(self.search_targets),
            "is_router": self.is_router,
        }


def group_devices(responses: Iterable[SsdpResponse], gateway: str | None) -> list[UpnpDevice]:
    """One entry per device; the one whose LOCATION host is ``gateway`` is the router."""
    merged: dict[str, UpnpDevice] = {}
    for response in responses:
        known = merged.get(response.device_id)
        targets = (known.search_targets if known else ()) + (response.search_target,)
        merged[response.device_id] = UpnpDevice(
            device_id=response.device_id,
            location=known.location if known else response.location,
            server=(known.server if known else "") or response.server,
            search_targets=tuple(dict.fromkeys(t for t in targets if t)),
            is_router=(known.is_router if known else False)
            or (gateway is not None and response.location_host == gateway),
        )
    return sorted(merged.values(), key=lambda d: (not d.is_router, d.location))


def parse_default_gateway(route_table: str) -> str | None:
    """The default IPv4 gateway from the text of ``/proc/net/route`` (lowest metric)."""
    best: tuple[int, str] | None = None
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination, gateway = int(fields[1], 16), int(fields[2], 16)
            flags, metric, mask = int(fields[3], 16), int(fields[6]), int(fields[7], 16)
        except ValueError:
            continue
        is_default = not destination and not mask and flags & _RTF_UP and flags & _RTF_GATEWAY
        if not is_default or not 0 <= gateway <= 0xFFFFFFFF:
            continue
        # The kernel prints the address in host (little-endian) byte order.
        address = str(ipaddress.IPv4Address(gateway.to_bytes(4, "little")))
        if best is None or metric < best[0]:
            best = (metric, address)
    return best[1] if best else None
