"""NVR hub adoption, sans I/O: which cameras heard on the LAN become sources, and their names.

With ``[camera] adopt_discovered`` the hub searches the LAN (WS-Discovery,
:mod:`drivers.camera.adopt`) and every camera that answers becomes an
:class:`Adopted` entry of the :class:`AdoptionRegistry`:

* its **name** (events' ``camera``, the ``camera/<name>/motion`` topic) comes from
  its ONVIF ``name`` scope, else ``hardware``, else ``camera``, cut down to
  ``[a-z0-9-]`` (:func:`sanitise`); a name already taken gets a suffix from the
  hash of the endpoint reference, so two cameras of one model differ.  The
  registry is persisted, so a name never changes across restarts, nor when the
  camera renames itself, nor after it vanished and came back;
* it is **captured** only while it is present and the owner gave it credentials;
  a Bye, or ``missing_probes`` searches in a row without an answer, stop it;
* a **hostile LAN** cannot grow it without bound: at most ``max_cameras``
  entries, at most :data:`MAX_PER_ADDRESS` per source address, the service
  address must be on the host that answered (an answer cannot aim the hub's
  ONVIF client, and the owner's credentials, at a third host), and every text
  kept is length-capped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Set

from agent.discovery.cameras import Camera
from agent.discovery.wsd import normalize_uuid_uri
from agent.errors import DecodeError

MAX_NAME = 64  # an MQTT topic segment of ours (config: camera.sources name)
MAX_BASE = 40  # leaves room for "-" and a hash suffix
MAX_TEXT = 256  # endpoint, address, XAddr, model kept per camera
MAX_PER_ADDRESS = 4  # one host claiming dozens of endpoints is not a camera
FALLBACK = "camera"
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\Z")


def valid_name(name: str) -> bool:
    """What :func:`derive_name` makes: ``[a-z0-9]`` words joined by ``-``, at most 64."""
    return len(name) <= MAX_NAME and _NAME.match(name) is not None


def sanitise(text: str) -> str:
    """``text`` as a name part: ASCII ``[a-z0-9-]``, no leading/trailing ``-``, capped."""
    ascii_text = unicodedata.normalize("NFKD", text[: 4 * MAX_BASE]).encode("ascii", "ignore")
    return _NOT_NAME.sub("-", ascii_text.decode().lower()).strip("-")[:MAX_BASE].strip("-")


def base_name(camera: Camera) -> str:
    """The name the camera gives itself in its scopes, sanitised; ``camera`` if none."""
    for key in ("name", "hardware"):
        part = sanitise(camera.scope_value(key))
        if part:
            return part
    return FALLBACK


def derive_name(base: str, endpoint: str, taken: Set[str]) -> str:
    """``base``, or ``base-<hash of endpoint>`` if taken: unique, at most 64 characters."""
    base = sanitise(base) or FALLBACK
    if base not in taken:
        return base
    digest = hashlib.sha256(normalize_uuid_uri(endpoint).encode()).hexdigest()
    for length in (6, 10, 16):
        candidate = f"{base}-{digest[:length]}"
        if candidate not in taken:
            return candidate
    counter = 2
    while f"{base}-{digest[:16]}-{counter}" in taken:
        counter += 1
    return f"{base}-{digest[:16]}-{counter}"


def _host(url: str) -> str:
    """The host of ``scheme://[user@]host[:port]/...``, lower case (no urllib in agent/)."""
    authority = url.partition("://")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    return host.partition(":")[0].lower()


def service_address(camera: Camera) -> str:
    """The first http(s) XAddr on the host that answered; empty if there is none."""
    for xaddr in camera.xaddrs:
        if len(xaddr) > MAX_TEXT or not xaddr.lower().startswith(("http://", "https://")):
            continue
        if _host(xaddr) == camera.address.lower() and xaddr.isprintable() and " " not in xaddr:
            return xaddr
    return ""


@dataclasses.dataclass
class Adopted:
    endpoint: str
    name: str
    address: str
    xaddr: str
    model: str = ""
    seen_at: float = 0.0
    # Not persisted: after a restart a camera is captured again once it answers.
    present: bool = False
    missed: int = 0

    def record(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "name": self.name,
            "address": self.address,
            "xaddr": self.xaddr,
            "model": self.model,
            "seen_at": self.seen_at,
        }


@dataclasses.dataclass
class AdoptionStats:
    adopted: int = 0
    evicted: int = 0
    refused_full: int = 0
    refused_address: int = 0  # over MAX_PER_ADDRESS from one host
    refused_xaddr: int = 0  # no service address on the host that answered
    ignored_configured: int = 0  # the host is a [[camera.sources]] camera already
    vanished: int = 0


class AdoptionRegistry:
    """The adopted cameras by endpoint; the caller persists :meth:`record` when ``changed``."""

    def __init__(
        self,
        *,
        own_endpoint: str,
        reserved_names: Iterable[str],
        configured_hosts: Iterable[str],
        max_cameras: int,
        missing_probes: int,
    ) -> None:
        self.own_endpoint = normalize_uuid_uri(own_endpoint)
        self.reserved = frozenset(reserved_names)
        self.configured_hosts = frozenset(h.lower() for h in configured_hosts if h)
        self.max_cameras = max_cameras
        self.missing_probes = missing_probes
        self.cameras: dict[str, Adopted] = {}
        self.stats = AdoptionStats()
        # Set when what is persisted changed (a new, evicted or moved camera).
        self.changed = False

    # --- persistence ----------------------------------------------------------

    def restore(self, record: object) -> None:
        """Load a :meth:`record`; entries that break the rules are dropped, not trusted."""
        if not isinstance(record, Mapping) or not isinstance(record.get("cameras"), list):
            raise DecodeError("not an adopted cameras record")
        for entry in record["cameras"][: self.max_cameras]:
            if not isinstance(entry, Mapping):
                continue
            texts = [entry.get(k) for k in ("endpoint", "name", "address", "xaddr", "model")]
            if not all(isinstance(t, str) and len(t) <= MAX_TEXT for t in texts):
                continue
            endpoint, name, address, xaddr, model = (str(t) for t in texts)
            endpoint = normalize_uuid_uri(endpoint)
            taken = self.names()
            if not endpoint or endpoint in self.cameras or not valid_name(name):
                continue
            if name in taken or name in self.reserved:
                continue
            seen = entry.get("seen_at")
            self.cameras[endpoint] = Adopted(
                endpoint,
                name,
                address,
                xaddr,
                model,
                float(seen) if isinstance(seen, (int, float)) else 0.0,
            )

    def record(self) -> dict[str, object]:
        return {"v": 1, "cameras": [c.record() for c in self.cameras.values()]}

    # --- what the LAN said ------------------------------------------------------

    def names(self) -> set[str]:
        return {c.name for c in self.cameras.values()}

    def by_name(self, name: str) -> Adopted | None:
        return next((c for c in self.cameras.values() if c.name == name), None)

    def probed(
        self, found: Iterable[Camera], now: float, credentialed: Set[str] = frozenset()
    ) -> None:
        """One complete search: who answered is present, who did not has missed one more."""
        heard = {self.heard(camera, now, credentialed) for camera in found} - {None}
        for camera in self.cameras.values():
            if camera.endpoint in heard:
                continue
            camera.missed += 1
            if camera.present and camera.missed >= self.missing_probes:
                self._vanish(camera)

    def heard(self, camera: Camera, now: float, credentialed: Set[str] = frozenset()) -> str | None:
        """One camera answered (a ProbeMatch); returns its endpoint if it is adopted now."""
        endpoint = normalize_uuid_uri(camera.endpoint)
        if endpoint == self.own_endpoint or not endpoint or len(endpoint) > MAX_TEXT:
            return None
        if camera.address.lower() in self.configured_hosts:
            self.stats.ignored_configured += 1
            return None
        xaddr = service_address(camera)
        if not xaddr:
            # Not even a known camera counts as present without a service on its own host.
            self.stats.refused_xaddr += 1
            return None
        known = self.cameras.get(endpoint)
        if known is None:
            known = self._adopt(camera, endpoint, xaddr, now, credentialed)
            if known is None:
                return None
        elif (xaddr, camera.address) != (known.xaddr, known.address):
            # Moved (DHCP): the name stays, the capture follows the new address.
            known.xaddr, known.address = xaddr, camera.address
            self.changed = True
        known.present = True
        known.missed = 0
        known.seen_at = now
        return endpoint

    def bye(self, endpoint: str) -> None:
        camera = self.cameras.get(normalize_uuid_uri(endpoint))
        if camera is not None and camera.present:
            self._vanish(camera)

    def _vanish(self, camera: Adopted) -> None:
        camera.present = False
        self.stats.vanished += 1

    def _adopt(
        self, camera: Camera, endpoint: str, xaddr: str, now: float, credentialed: Set[str]
    ) -> Adopted | None:
        same_host = sum(1 for c in self.cameras.values() if c.address == camera.address)
        if same_host >= MAX_PER_ADDRESS:
            self.stats.refused_address += 1
            return None
        if len(self.cameras) >= self.max_cameras and not self._evict(credentialed):
            self.stats.refused_full += 1
            return None
        name = derive_name(base_name(camera), endpoint, self.names() | self.reserved)
        adopted = Adopted(
            endpoint, name, camera.address, xaddr, sanitise(camera.model), seen_at=now
        )
        self.cameras[endpoint] = adopted
        self.stats.adopted += 1
        self.changed = True
        return adopted

    def _evict(self, credentialed: Set[str]) -> bool:
        """Forget the camera gone longest that the owner never gave credentials."""
        idle = [c for c in self.cameras.values() if not c.present and c.name not in credentialed]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.seen_at)
        del self.cameras[oldest.endpoint]
        self.stats.evicted += 1
        self.changed = True
        return True

    def wanted(self, credentialed: Set[str]) -> dict[str, Adopted]:
        """The cameras to capture now, by name: present and with the owner's credentials."""
        return {c.name: c for c in self.cameras.values() if c.present and c.name in credentialed}
