"""WS-Discovery (SOAP-over-UDP) wire codec, sans I/O.

:func:`decode` turns one datagram into a :class:`Probe`, :class:`ProbeMatches`,
:class:`Hello` or :class:`Bye`; :func:`encode` does the reverse.  Both the
2005/04 draft (what ONVIF mandates) and the OASIS 2009/01 namespaces are
understood.  Datagrams come from anyone on the LAN, so decoding is capped in
size, depth and element count and goes through defusedxml with DOCTYPE
forbidden: the only exceptions that escape are :class:`DecodeError` and its
subclass :class:`TooLargeError`.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

import defusedxml
import defusedxml.ElementTree as DET

from agent.errors import DecodeError, TooLargeError

DEFAULT_MAX_DATAGRAM_BYTES = 16384
MAX_DEPTH = 24
MAX_ELEMENTS = 512

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
DN_NS = "http://www.onvif.org/ver10/network/wsdl"
TDS_NS = "http://www.onvif.org/ver10/device/wsdl"
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class QName(NamedTuple):
    namespace: str
    local: str


NETWORK_VIDEO_TRANSMITTER = QName(DN_NS, "NetworkVideoTransmitter")
DEVICE = QName(TDS_NS, "Device")
# Cameras in the wild send Types with prefixes they forgot to declare.
_WELL_KNOWN_PREFIXES = {"dn": DN_NS, "tdn": DN_NS, "tds": TDS_NS}


@dataclasses.dataclass(frozen=True)
class _Namespaces:
    wsd: str
    wsa: str
    multicast_to: str
    anonymous: str


class WsdVersion(enum.Enum):
    V2005_04 = _Namespaces(
        wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery",
        wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing",
        multicast_to="urn:schemas-xmlsoap-org:ws:2005:04:discovery",
        anonymous="http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous",
    )
    V2009_01 = _Namespaces(
        wsd="http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01",
        wsa="http://www.w3.org/2005/08/addressing",
        multicast_to="urn:docs-oasis-open-org:ws-dd:ns:discovery:2009:01",
        anonymous="http://www.w3.org/2005/08/addressing/anonymous",
    )

    @property
    def ns(self) -> _Namespaces:
        value: _Namespaces = self.value
        return value


_VERSION_BY_WSD_NS = {v.ns.wsd: v for v in WsdVersion}
_WSA_NAMESPACES = frozenset(v.ns.wsa for v in WsdVersion)
_UNDERSTOOD_WSA = frozenset({"Action", "MessageID", "RelatesTo", "To", "ReplyTo", "From"})


@dataclasses.dataclass(frozen=True)
class AppSequence:
    instance_id: int
    message_number: int
    sequence_id: str | None = None


@dataclasses.dataclass(frozen=True)
class TargetService:
    endpoint: str
    types: tuple[QName, ...] = ()
    scopes: tuple[str, ...] = ()
    xaddrs: tuple[str, ...] = ()
    metadata_version: int = 0


@dataclasses.dataclass(frozen=True)
class Probe:
    version: WsdVersion
    message_id: str
    types: tuple[QName, ...] = ()
    scopes: tuple[str, ...] = ()
    match_by: str | None = None


@dataclasses.dataclass(frozen=True)
class ProbeMatches:
    version: WsdVersion
    message_id: str
    relates_to: str | None
    matches: tuple[TargetService, ...]
    app_sequence: AppSequence | None = None


@dataclasses.dataclass(frozen=True)
class Hello:
    version: WsdVersion
    message_id: str
    target: TargetService
    app_sequence: AppSequence | None = None


@dataclasses.dataclass(frozen=True)
class Bye:
    version: WsdVersion
    message_id: str
    endpoint: str
    app_sequence: AppSequence | None = None


Message = Probe | ProbeMatches | Hello | Bye


def normalize_uuid_uri(value: str) -> str:
    """``uuid:X``, ``urn:uuid:X`` and case variants compare equal after this."""
    text = value.strip()
    lowered = text.lower()
    if lowered.startswith("urn:uuid:"):
        return lowered
    if lowered.startswith("uuid:"):
        return "urn:" + lowered
    return text


# --- decoding ----------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def _parse(data: bytes, max_bytes: int) -> tuple[ET.Element, dict[int, dict[str, str]]]:
    """Parse ``data``; also return the in-scope prefixes of every ``Types`` element."""
    if len(data) > max_bytes:
        raise TooLargeError(f"datagram of {len(data)} bytes exceeds {max_bytes}")
    scope_stack: list[dict[str, str]] = [{}]
    pending: dict[str, str] = {}
    prefixes_of_types: dict[int, dict[str, str]] = {}
    root: ET.Element | None = None
    depth = elements = 0
    try:
        for event, item in DET.iterparse(
            io.BytesIO(data), events=("start-ns", "start", "end"), forbid_dtd=True
        ):
            if event == "start-ns":
                prefix, uri = item
                pending[prefix] = uri
            elif event == "start":
                depth += 1
                elements += 1
                if depth > MAX_DEPTH:
                    raise TooLargeError(f"XML nested deeper than {MAX_DEPTH}")
                if elements > MAX_ELEMENTS:
                    raise TooLargeError(f"XML has more than {MAX_ELEMENTS} elements")
                scope_stack.append({**scope_stack[-1], **pending} if pending else scope_stack[-1])
                pending = {}
                if root is None:
                    root = item
                if _local(item.tag) == "Types":
                    prefixes_of_types[id(item)] = scope_stack[-1]
            else:
                depth -= 1
                scope_stack.pop()
    except TooLargeError:
        raise
    except defusedxml.DefusedXmlException as exc:
        raise DecodeError(f"forbidden XML construct: {type(exc).__name__}") from exc
    except (ET.ParseError, ValueError, UnicodeError, LookupError) as exc:
        raise DecodeError(f"malformed XML: {exc}") from exc
    if root is None:
        raise DecodeError("empty XML document")
    return root, prefixes_of_types


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _child(parent: ET.Element, namespace: str, local: str) -> ET.Element | None:
    return parent.find(f"{{{namespace}}}{local}")


def _uint(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise DecodeError(f"{what} is not an unsigned integer: {text[:40]!r}")
    value = int(text)
    if value > 2**32 - 1:
        raise DecodeError(f"{what} out of range: {value}")
    return value


def _must_understand(header: ET.Element, soap_ns: str) -> bool:
    value = header.get(f"{{{soap_ns}}}mustUnderstand", "false").strip().lower()
    return value in ("true", "1")


def _qnames(element: ET.Element | None, prefixes: dict[int, dict[str, str]]) -> tuple[QName, ...]:
    if element is None:
        return ()
    in_scope = prefixes.get(id(element), {})
    names = []
    for token in _text(element).split():
        prefix, _, local = token.rpartition(":")
        namespace = in_scope.get(prefix) or _WELL_KNOWN_PREFIXES.get(prefix)
        if namespace is None:
            # Undeclared, unknown prefix: keep the raw token; it matches nothing we offer.
            names.append(QName("", token))
        else:
            names.append(QName(namespace, local))
    return tuple(names)


def _endpoint(parent: ET.Element, wsa_ns: str) -> str:
    for ns in (wsa_ns, *_WSA_NAMESPACES):
        epr = _child(parent, ns, "EndpointReference")
        if epr is not None:
            address = _text(_child(epr, ns, "Address"))
            if address:
                return address
    raise DecodeError("EndpointReference/Address is missing")


def _target(
    element: ET.Element, version: WsdVersion, wsa_ns: str, prefixes: dict[int, dict[str, str]]
) -> TargetService:
    wsd = version.ns.wsd
    version_text = _text(_child(element, wsd, "MetadataVersion"))
    return TargetService(
        endpoint=_endpoint(element, wsa_ns),
        types=_qnames(_child(element, wsd, "Types"), prefixes),
        scopes=tuple(_text(_child(element, wsd, "Scopes")).split()),
        xaddrs=tuple(_text(_child(element, wsd, "XAddrs")).split()),
        metadata_version=_uint(version_text, "MetadataVersion") if version_text else 0,
    )


def _app_sequence(header: ET.Element | None, wsd: str) -> AppSequence | None:
    element = _child(header, wsd, "AppSequence") if header is not None else None
    if element is None:
        return None
    return AppSequence(
        instance_id=_uint(element.get("InstanceId", "").strip(), "InstanceId"),
        message_number=_uint(element.get("MessageNumber", "").strip(), "MessageNumber"),
        sequence_id=element.get("SequenceId"),
    )


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES) -> Message:
    """Decode one WS-Discovery datagram; raises DecodeError/TooLargeError only."""
    root, prefixes = _parse(data, max_bytes)
    soap_ns = _namespace(root.tag)
    if _local(root.tag) != "Envelope" or soap_ns not in (SOAP12_NS, SOAP11_NS):
        raise DecodeError(f"not a SOAP envelope: {root.tag[:120]!r}")
    header = _child(root, soap_ns, "Header")
    body = _child(root, soap_ns, "Body")
    payload = next(iter(body), None) if body is not None else None
    if payload is None:
        raise DecodeError("SOAP Body is missing or empty")
    version = _VERSION_BY_WSD_NS.get(_namespace(payload.tag))
    if version is None:
        raise DecodeError(f"not a WS-Discovery message: {payload.tag[:120]!r}")
    kind = _local(payload.tag)

    headers: dict[str, str] = {}
    wsa_ns = version.ns.wsa
    for item in header if header is not None else ():
        ns, local = _namespace(item.tag), _local(item.tag)
        if ns in _WSA_NAMESPACES and local in _UNDERSTOOD_WSA:
            wsa_ns = ns
            headers[local] = _text(item)
        elif not (ns == version.ns.wsd and local == "AppSequence") and _must_understand(
            item, soap_ns
        ):
            raise DecodeError(f"header {item.tag[:120]!r} must be understood")
    message_id = headers.get("MessageID", "")
    if not message_id:
        raise DecodeError("wsa:MessageID is missing")
    action = headers.get("Action")
    if action and action != f"{version.ns.wsd}/{kind}":
        raise DecodeError(f"Action {action[:120]!r} does not match body {kind!r}")
    sequence = _app_sequence(header, version.ns.wsd)

    if kind == "Probe":
        scopes_element = _child(payload, version.ns.wsd, "Scopes")
        return Probe(
            version=version,
            message_id=message_id,
            types=_qnames(_child(payload, version.ns.wsd, "Types"), prefixes),
            scopes=tuple(_text(scopes_element).split()),
            match_by=scopes_element.get("MatchBy") if scopes_element is not None else None,
        )
    if kind == "ProbeMatches":
        matches = tuple(
            _target(item, version, wsa_ns, prefixes)
            for item in payload.findall(f"{{{version.ns.wsd}}}ProbeMatch")
        )
        return ProbeMatches(version, message_id, headers.get("RelatesTo"), matches, sequence)
    if kind == "Hello":
        return Hello(version, message_id, _target(payload, version, wsa_ns, prefixes), sequence)
    if kind == "Bye":
        return Bye(version, message_id, _endpoint(payload, wsa_ns), sequence)
    raise DecodeError(f"unsupported WS-Discovery message {kind!r}")


# --- encoding ----------------------------------------------------------------


def _checked(value: str, what: str, *, tokens: bool = False) -> str:
    if _XML_ILLEGAL.search(value) or value != value.strip() or not value:
        raise ValueError(f"{what} cannot be carried in XML: {value!r}")
    if tokens and any(c.isspace() for c in value):
        raise ValueError(f"{what} must not contain whitespace: {value!r}")
    return value


def _list(values: Iterable[str], what: str) -> str:
    return " ".join(escape(_checked(v, what, tokens=True)) for v in values)


class _TypePrefixes:
    def __init__(self, types: Iterable[QName]) -> None:
        self.prefixes = {DN_NS: "dn", TDS_NS: "tds"}
        self.used: set[str] = set()
        for name in types:
            if name.namespace and name.namespace not in self.prefixes:
                self.prefixes[name.namespace] = f"t{len(self.prefixes)}"

    def declarations(self) -> str:
        # Only the prefixes render() used: a Bye or an untyped Probe declares none.
        return "".join(
            f" xmlns:{p}={quoteattr(_checked(ns, 'namespace'))}"
            for ns, p in self.prefixes.items()
            if ns in self.used
        )

    def render(self, types: Iterable[QName]) -> str:
        rendered = []
        for name in types:
            local = _checked(name.local, "type name", tokens=True)
            if not re.fullmatch(r"[A-Za-z_][\w.\-]*", local):
                raise ValueError(f"type name is not an XML NCName: {local!r}")
            prefix = self.prefixes.get(name.namespace)
            if prefix:
                self.used.add(name.namespace)
            rendered.append(f"{prefix}:{local}" if prefix else local)
        return " ".join(rendered)


def _target_xml(target: TargetService, version: WsdVersion, prefixes: _TypePrefixes) -> str:
    parts = [
        "<a:EndpointReference><a:Address>"
        f"{escape(_checked(target.endpoint, 'endpoint'))}</a:Address></a:EndpointReference>"
    ]
    if target.types:
        parts.append(f"<d:Types>{prefixes.render(target.types)}</d:Types>")
    if target.scopes:
        parts.append(f"<d:Scopes>{_list(target.scopes, 'scope')}</d:Scopes>")
    if target.xaddrs:
        parts.append(f"<d:XAddrs>{_list(target.xaddrs, 'XAddr')}</d:XAddrs>")
    parts.append(f"<d:MetadataVersion>{int(target.metadata_version)}</d:MetadataVersion>")
    return "".join(parts)


def _sequence_xml(sequence: AppSequence | None) -> str:
    if sequence is None:
        return ""
    sequence_id = (
        f" SequenceId={quoteattr(_checked(sequence.sequence_id, 'SequenceId'))}"
        if sequence.sequence_id is not None
        else ""
    )
    return (
        f'<d:AppSequence InstanceId="{int(sequence.instance_id)}"{sequence_id}'
        f' MessageNumber="{int(sequence.message_number)}"/>'
    )


def encode(message: Message) -> bytes:
    """Serialise ``message``; raises ValueError for values XML cannot carry."""
    ns = message.version.ns
    relates_to: str | None = None
    to = ns.multicast_to
    sequence: AppSequence | None = None
    types: list[QName] = []
    if isinstance(message, Probe):
        kind = "Probe"
        types = list(message.types)
        prefixes = _TypePrefixes(types)
        match_by = (
            f" MatchBy={quoteattr(_checked(message.match_by, 'MatchBy'))}"
            if message.match_by is not None
            else ""
        )
        body = (f"<d:Types>{prefixes.render(message.types)}</d:Types>" if message.types else "") + (
            f"<d:Scopes{match_by}>{_list(message.scopes, 'scope')}</d:Scopes>"
            if message.scopes or match_by
            else ""
        )
    elif isinstance(message, ProbeMatches):
        kind = "ProbeMatches"
        relates_to, to, sequence = message.relates_to, ns.anonymous, message.app_sequence
        types = [t for match in message.matches for t in match.types]
        prefixes = _TypePrefixes(types)
        body = "".join(
            f"<d:ProbeMatch>{_target_xml(m, message.version, prefixes)}</d:ProbeMatch>"
            for m in message.matches
        )
    elif isinstance(message, Hello):
        kind, sequence = "Hello", message.app_sequence
        prefixes = _TypePrefixes(message.target.types)
        body = _target_xml(message.target, message.version, prefixes)
    else:
        kind, sequence = "Bye", message.app_sequence
        prefixes = _TypePrefixes(())
        body = (
            "<a:EndpointReference><a:Address>"
            f"{escape(_checked(message.endpoint, 'endpoint'))}</a:Address></a:EndpointReference>"
        )
    relates = (
        f"<a:RelatesTo>{escape(_checked(relates_to, 'RelatesTo'))}</a:RelatesTo>"
        if relates_to is not None
        else ""
    )
    # Nothing optional goes out: no XML declaration (UTF-8 is the default) and no
    # mustUnderstand flags (every WS-Discovery peer understands Action and To).  A
    # ProbeMatches is what a spoofed Probe reflects at a victim, so every byte counts.
    text = (
        f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:a="{ns.wsa}" xmlns:d="{ns.wsd}"'
        f"{prefixes.declarations()}>"
        "<s:Header>"
        f"<a:Action>{ns.wsd}/{kind}</a:Action>"
        f"<a:MessageID>{escape(_checked(message.message_id, 'MessageID'))}</a:MessageID>"
        f"{relates}"
        f"<a:To>{to}</a:To>"
        f"{_sequence_xml(sequence)}"
        "</s:Header>"
        f"<s:Body><d:{kind}>{body}</d:{kind}></s:Body>"
        "</s:Envelope>"
    )
    return text.encode("utf-8")
