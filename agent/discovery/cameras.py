"""The WS-Discovery client side, sans I/O: what to probe and what came back.

A :class:`ProbeSession` builds one Probe per ONVIF type (cameras that only
advertise one of ``dn:NetworkVideoTransmitter`` / ``tds:Device`` still answer),
accepts the ProbeMatches that relate to those probes and merges them into one
:class:`Camera` per endpoint, whichever ``uuid:``/``urn:uuid:`` spelling it used.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable, Iterable

from agent.discovery.responder import ONVIF_SCOPE, new_message_id
from agent.discovery.wsd import (
    DEFAULT_MAX_DATAGRAM_BYTES,
    DEVICE,
    NETWORK_VIDEO_TRANSMITTER,
    Probe,
    ProbeMatches,
    QName,
    TargetService,
    WsdVersion,
    decode,
    encode,
    normalize_uuid_uri,
)
from agent.errors import DecodeError

PROBED_TYPES = (NETWORK_VIDEO_TRANSMITTER, DEVICE)
MAX_CAMERAS = 1024


@dataclasses.dataclass(frozen=True)
class Camera:
    endpoint: str
    address: str
    xaddrs: tuple[str, ...]
    types: tuple[QName, ...]
    scopes: tuple[str, ...]
    metadata_version: int

    def scope_value(self, key: str) -> str:
        """The last path part of ``onvif://www.onvif.org/<key>/...`` (key case-insensitive)."""
        prefix = f"{ONVIF_SCOPE}/"
        for scope in self.scopes:
            if scope.lower().startswith(prefix):
                parts = scope[len(prefix) :].split("/")
                if len(parts) >= 2 and parts[0].lower() == key.lower():
                    return urllib.parse.unquote(parts[-1])
        return ""

    @property
    def name(self) -> str:
        return self.scope_value("name")

    @property
    def model(self) -> str:
        return self.scope_value("model") or self.scope_value("hardware")

    def as_dict(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "address": self.address,
            "name": self.name,
            "model": self.model,
            "xaddrs": list(self.xaddrs),
            "types": [f"{{{t.namespace}}}{t.local}" for t in self.types],
            "scopes": list(self.scopes),
            "metadata_version": self.metadata_version,
        }


def _union(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*first, *second]))


def probe_offsets(repeats: int, initial: float, maximum: float) -> list[float]:
    """Send times (seconds after start) for ``repeats`` sends with doubling gaps."""
    offsets, at, gap = [], 0.0, initial
    for _ in range(repeats):
        offsets.append(at)
        at += gap
        gap = min(gap * 2, maximum)
    return offsets


@dataclasses.dataclass
class SessionStats:
    accepted: int = 0
    rejected: int = 0
    unrelated: int = 0


class ProbeSession:
    """One discovery run: the probes to send and the cameras heard so far."""

    def __init__(
        self,
        *,
        version: WsdVersion = WsdVersion.V2005_04,
        types: Iterable[QName] = PROBED_TYPES,
        make_message_id: Callable[[], str] = new_message_id,
        max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
    ) -> None:
        self.stats = SessionStats()
        self.max_datagram_bytes = max_datagram_bytes
        self._probes = [Probe(version, make_message_id(), (t,)) for t in types]
        self._ours = {normalize_uuid_uri(p.message_id) for p in self._probes}
        self._cameras: dict[str, Camera] = {}

    def probes(self) -> list[bytes]:
        """The probe datagrams; repeats resend the same bytes (same MessageID)."""
        return [encode(p) for p in self._probes]

    def feed(self, data: bytes, source: tuple[str, int]) -> list[Camera]:
        """Take one datagram; return the cameras it added or updated."""
        try:
            message = decode(data, self.max_datagram_bytes)
        except DecodeError:
            self.stats.rejected += 1
            return []
        # Some cameras leave RelatesTo out; a RelatesTo naming someone else's probe is not ours.
        if not isinstance(message, ProbeMatches) or (
            message.relates_to is not None
            and normalize_uuid_uri(message.relates_to) not in self._ours
        ):
            self.stats.unrelated += 1
            return []
        self.stats.accepted += 1
        merged = (self._merge(match, source[0]) for match in message.matches)
        return [camera for camera in merged if camera is not None]

    def _merge(self, match: TargetService, address: str) -> Camera | None:
        key = normalize_uuid_uri(match.endpoint)
        known = self._cameras.get(key)
        if known is None:
            if len(self._cameras) >= MAX_CAMERAS:
                return None  # a flood of fake endpoints must not grow memory without bound
            camera = Camera(
                key, address, match.xaddrs, match.types, match.scopes, match.metadata_version
            )
        else:
            camera = dataclasses.replace(
                known,
                xaddrs=_union(known.xaddrs, match.xaddrs),
                types=tuple(dict.fromkeys([*known.types, *match.types])),
                scopes=_union(known.scopes, match.scopes),
                metadata_version=max(known.metadata_version, match.metadata_version),
            )
        self._cameras[key] = camera
        return camera

    def cameras(self) -> list[Camera]:
        return sorted(self._cameras.values(), key=lambda c: (c.address, c.endpoint))
