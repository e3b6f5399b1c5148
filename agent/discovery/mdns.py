"""mDNS records of the agent, sans I/O: what we announce and how we read peers.

The agent announces only services that answer on the port it names
(:func:`adverts`): its ONVIF device service while it is serving, and the LAN
provisioning API while the provisioning window is open and the API listens.
Each is an ``_http._tcp`` instance whose TXT record is built from an
allow-list: serial number, model, whether the device is claimed, the API
(``onvif`` or ``provisioning``) and its path.  Nothing else -- no keys,
tokens, PINs or Wi-Fi data -- can reach the LAN through it, whatever the
caller passes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

HTTP_SERVICE = "_http._tcp.local."
RTSP_SERVICE = "_rtsp._tcp.local."
BROWSED_SERVICES = (RTSP_SERVICE, HTTP_SERVICE)
TXT_KEYS = ("sn", "model", "claimed")
ADVERT_TXT_KEYS = (*TXT_KEYS, "api", "path")
ONVIF_API = "onvif"
PROVISIONING_API = "provisioning"
PROVISIONING_PATH = "/provision/v1/info"
MAX_TXT_VALUE = 63
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def instance_name(serial_number: str) -> str:
    """``edge-agent-<serial>`` limited to one DNS label."""
    label = _LABEL_UNSAFE.sub("-", serial_number).strip("-") or "device"
    return f"edge-agent-{label}"[:63]


def announcement_txt(*, serial_number: str, model: str, claimed: bool) -> dict[str, str]:
    return {
        "sn": serial_number[:MAX_TXT_VALUE],
        "model": model[:MAX_TXT_VALUE],
        "claimed": "1" if claimed else "0",
    }


@dataclasses.dataclass(frozen=True)
class Advert:
    """One service instance to announce: it answers at ``port`` on the advertised addresses."""

    service_type: str
    instance: str
    port: int
    properties: Mapping[str, str]
    host: str  # the A record's name, without ".local."

    @property
    def name(self) -> str:
        return f"{self.instance}.{self.service_type}"


def adverts(
    *,
    serial_number: str,
    model: str,
    claimed: bool,
    onvif_port: int | None,
    onvif_path: str,
    provisioning_port: int | None,
) -> tuple[Advert, ...]:
    """What to announce now: only the services whose port is given (they are serving)."""
    base = announcement_txt(serial_number=serial_number, model=model, claimed=claimed)
    instance = instance_name(serial_number)
    found = []
    if onvif_port:
        txt = {**base, "api": ONVIF_API, "path": onvif_path[:MAX_TXT_VALUE]}
        found.append(Advert(HTTP_SERVICE, instance, onvif_port, txt, instance))
    if provisioning_port:
        txt = {**base, "api": PROVISIONING_API, "path": PROVISIONING_PATH}
        setup = f"{instance[: 63 - len('-setup')]}-setup"
        found.append(Advert(HTTP_SERVICE, setup, provisioning_port, txt, instance))
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class MdnsPeer:
    service_type: str
    name: str
    addresses: tuple[str, ...]
    port: int
    properties: Mapping[str, str]

    @property
    def is_edge_agent(self) -> bool:
        return self.service_type == HTTP_SERVICE and "sn" in self.properties

    def as_dict(self) -> dict[str, object]:
        return {
            "service_type": self.service_type,
            "name": self.name,
            "addresses": list(self.addresses),
            "port": self.port,
            "properties": dict(self.properties),
        }


def decode_txt(properties: Mapping[bytes, bytes | None], max_items: int = 32) -> dict[str, str]:
    """TXT key/values from the LAN as printable text, capped in count and length."""
    decoded: dict[str, str] = {}
    for key, value in list(properties.items())[:max_items]:
        name = key.decode("utf-8", errors="replace")[:MAX_TXT_VALUE]
        text = (value or b"").decode("utf-8", errors="replace")[:255]
        decoded[name] = "".join(c if c.isprintable() else "?" for c in text)
    return decoded
