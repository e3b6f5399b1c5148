"""The WS-Discovery target side, sans I/O: who we are and what we answer.

:class:`Responder` takes a datagram and its source address and returns the
:class:`Reply` to send (bytes, destination, how long to wait first) or None.
The driver owns the socket and the waiting; this module never touches either.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from agent.discovery.ratelimit import ProbeRateLimiter
from agent.discovery.wsd import (
    DEFAULT_MAX_DATAGRAM_BYTES,
    DEVICE,
    NETWORK_VIDEO_TRANSMITTER,
    AppSequence,
    Bye,
    Hello,
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

# A fixed namespace so one serial number always yields the same endpoint UUID.
ENDPOINT_NAMESPACE = uuid.UUID("6f0b7c62-3c1e-5d5e-9a55-2f0d1c0e4a11")
ONVIF_SCOPE = "onvif://www.onvif.org"
_MATCH_BY_SUFFIXES = ("rfc3986", "strcmp0", "uuid", "none")
_REMEMBERED_PROBES = 64
# RelatesTo echoes the Probe's MessageID: a longer one (no real client sends more than
# ~50 characters) would only make the reply a bigger reflector.
MAX_MESSAGE_ID_CHARS = 256
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


def endpoint_for_serial(serial_number: str) -> str:
    return f"urn:uuid:{uuid.uuid5(ENDPOINT_NAMESPACE, serial_number)}"


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def device_target(
    *,
    serial_number: str,
    model: str,
    hardware: str,
    xaddrs: Sequence[str],
    metadata_version: int,
    extra_scopes: Iterable[str] = (),
) -> TargetService:
    """This device as an ONVIF Network Video Transmitter."""

    def quoted(value: str) -> str:
        return urllib.parse.quote(value, safe="")

    scopes = (
        f"{ONVIF_SCOPE}/type/video_encoder",
        f"{ONVIF_SCOPE}/type/Network_Video_Transmitter",
        f"{ONVIF_SCOPE}/Profile/Streaming",
        f"{ONVIF_SCOPE}/name/{quoted(model)}",
        f"{ONVIF_SCOPE}/hardware/{quoted(hardware)}",
        *extra_scopes,
    )
    return TargetService(
        endpoint=endpoint_for_serial(serial_number),
        types=(NETWORK_VIDEO_TRANSMITTER, DEVICE),
        scopes=scopes,
        xaddrs=tuple(xaddrs),
        metadata_version=metadata_version,
    )


def is_local_source(host: str) -> bool:
    """Private, link-local or loopback: the only peers a LAN responder answers."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LOCAL_NETWORKS)


def types_match(requested: Iterable[QName], offered: Iterable[QName]) -> bool:
    """Every requested type must be offered; an empty request matches everything."""
    return set(requested) <= set(offered)


def _rfc3986_parts(uri: str) -> tuple[str, str, tuple[str, ...]] | None:
    try:
        parsed = urllib.parse.urlsplit(uri)
    except ValueError:
        return None
    segments = tuple(urllib.parse.unquote(s) for s in parsed.path.split("/") if s)
    if "." in segments or ".." in segments:
        return None
    return parsed.scheme.lower(), parsed.netloc.lower(), segments


def _scope_matches(rule: str, requested: str, offered: str) -> bool:
    if rule == "strcmp0":
        return requested == offered
    if rule == "uuid":
        try:
            return uuid.UUID(requested) == uuid.UUID(offered)
        except ValueError:
            return False
    wanted, have = _rfc3986_parts(requested), _rfc3986_parts(offered)
    if wanted is None or have is None:
        return False
    return wanted[:2] == have[:2] and have[2][: len(wanted[2])] == wanted[2]


def scopes_match(
    requested: Sequence[str], offered: Sequence[str], match_by: str | None = None
) -> bool:
    """WS-Discovery scope matching; unknown rules (e.g. ldap) match nothing."""
    rule = "rfc3986"
    if match_by is not None:
        rule = next((s for s in _MATCH_BY_SUFFIXES if match_by.strip().endswith(f"/{s}")), "")
        if not rule:
            return False
    if rule == "none":
        return not offered
    return all(any(_scope_matches(rule, r, o) for o in offered) for r in requested)


@dataclasses.dataclass(frozen=True)
class Reply:
    payload: bytes
    destination: tuple[str, int]
    delay: float


@dataclasses.dataclass
class ResponderStats:
    answered: int = 0
    not_matching: int = 0
    rejected: int = 0
    foreign_source: int = 0
    duplicates: int = 0
    rate_limited: int = 0


class Responder:
    """Answers Probes for one target service and builds its Hello/Bye."""

    def __init__(
        self,
        target: TargetService,
        *,
        instance_id: int,
        max_delay: float = 0.5,
        discoverable: bool = True,
        max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
        random_fraction: Callable[[], float] = random.random,
        make_message_id: Callable[[], str] = new_message_id,
        limiter: ProbeRateLimiter | None = None,
    ) -> None:
        self.target = target
        self.limiter = limiter
        self.instance_id = instance_id
        self.max_delay = max_delay
        self.discoverable = discoverable
        self.max_datagram_bytes = max_datagram_bytes
        self.stats = ResponderStats()
        self._random_fraction = random_fraction
        self._make_message_id = make_message_id
        self._message_number = 0
        self._recent: OrderedDict[str, None] = OrderedDict()

    def _next_sequence(self) -> AppSequence:
        self._message_number += 1
        return AppSequence(self.instance_id, self._message_number)

    def _seen_before(self, message_id: str) -> bool:
        key = normalize_uuid_uri(message_id)
        if key in self._recent:
            return True
        self._recent[key] = None
        if len(self._recent) > _REMEMBERED_PROBES:
            self._recent.popitem(last=False)
        return False

    def handle(
        self, data: bytes, source: tuple[str, int], now: float | None = None
    ) -> Reply | None:
        """The reply owed to one incoming datagram, if any (``now``: for the limiter)."""
        if not self.accepts(source, now):
            return None
        return self.answer(data, source, now)

    def accepts(self, source: tuple[str, int], now: float | None = None) -> bool:
        """The cheap checks, before any parsing: discoverable, a LAN source, within its rate."""
        if not self.discoverable:
            return False
        if not is_local_source(source[0]):
            self.stats.foreign_source += 1
            return False
        if self.limiter is not None:
            if now is None:
                raise ValueError("a rate-limited responder needs the time")
            # A flooding source costs a table look-up, not an XML parse.
            if not self.limiter.admit(source[0], now):
                self.stats.rate_limited += 1
                return False
        return True

    def answer(
        self, data: bytes, source: tuple[str, int], now: float | None = None
    ) -> Reply | None:
        """Parse a datagram :meth:`accepts` let through and build the reply owed, if any."""
        try:
            message = decode(data, self.max_datagram_bytes)
        except DecodeError:
            self.stats.rejected += 1
            return None
        if not isinstance(message, Probe):
            return None
        if len(message.message_id) > MAX_MESSAGE_ID_CHARS:
            self.stats.rejected += 1
            return None
        if self._seen_before(message.message_id):
            # SOAP-over-UDP retransmits the same MessageID; one answer is enough.
            self.stats.duplicates += 1
            return None
        if not (
            types_match(message.types, self.target.types)
            and scopes_match(message.scopes, self.target.scopes, message.match_by)
        ):
            self.stats.not_matching += 1
            return None
        if self.limiter is not None and now is not None and not self.limiter.may_reply(now):
            # However many sources a flood claims, the device's total answers stay capped.
            self.stats.rate_limited += 1
            return None
        reply = ProbeMatches(
            version=message.version,
            message_id=self._make_message_id(),
            relates_to=message.message_id,
            matches=(self.target,),
            app_sequence=self._next_sequence(),
        )
        self.stats.answered += 1
        # ReplyTo is ignored on purpose: answering to an address named in the
        # packet would let anyone aim our replies at a third party.
        return Reply(encode(reply), source, self.max_delay * self._random_fraction())

    def hello(self) -> bytes | None:
        if not self.discoverable:
            return None
        message = Hello(
            WsdVersion.V2005_04, self._make_message_id(), self.target, self._next_sequence()
        )
        return encode(message)

    def bye(self) -> bytes | None:
        if not self.discoverable:
            return None
        message = Bye(
            WsdVersion.V2005_04,
            self._make_message_id(),
            self.target.endpoint,
            self._next_sequence(),
        )
        return encode(message)

    def update_xaddrs(self, xaddrs: Sequence[str]) -> bool:
        """Adopt new transport addresses; True if they changed (time for a Hello)."""
        if tuple(xaddrs) == self.target.xaddrs:
            return False
        self.target = dataclasses.replace(self.target, xaddrs=tuple(xaddrs))
        return True
