"""SOAP envelopes of the ONVIF device service, sans I/O: parse a request, write a reply.

Requests come from anyone on the LAN, so :func:`parse_request` caps the body
in bytes, nesting depth and element count, insists on UTF-8 (what ONVIF
mandates) and parses through defusedxml with DOCTYPE forbidden (no entity
expansion, no external entities).  The only exceptions that escape it are
:class:`DecodeError` and its subclass :class:`TooLargeError`.

Replies are written as text from escaped pieces (:func:`element`), never by
echoing request XML back.
"""

from __future__ import annotations

import dataclasses
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

import defusedxml
import defusedxml.ElementTree as DET

from agent.errors import DecodeError, TooLargeError

MAX_DEPTH = 32
MAX_ELEMENTS = 1024
MAX_TOKEN_FIELD = 256

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
USERNAME_PROFILE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
)
PASSWORD_DIGEST = f"{USERNAME_PROFILE}#PasswordDigest"
PASSWORD_TEXT = f"{USERNAME_PROFILE}#PasswordText"
# WS-Addressing headers (WCF clients such as ONVIF Device Manager mark them
# mustUnderstand): understood in the sense that ignoring them is correct here.
WSA_NAMESPACES = frozenset(
    {
        "http://www.w3.org/2005/08/addressing",
        "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    }
)

TT_NS = "http://www.onvif.org/ver10/schema"
TDS_NS = "http://www.onvif.org/ver10/device/wsdl"
TRT_NS = "http://www.onvif.org/ver10/media/wsdl"
TR2_NS = "http://www.onvif.org/ver20/media/wsdl"
TER_NS = "http://www.onvif.org/ver10/error"

PREFIXES = {"tt": TT_NS, "tds": TDS_NS, "trt": TRT_NS, "tr2": TR2_NS, "ter": TER_NS}

_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class QName(NamedTuple):
    namespace: str
    local: str


@dataclasses.dataclass(frozen=True)
class UsernameToken:
    """A WS-Security UsernameToken as received (nothing checked yet)."""

    username: str
    password: str = dataclasses.field(repr=False)
    password_type: str
    nonce: str
    created: str


@dataclasses.dataclass(frozen=True)
class SoapRequest:
    soap_ns: str
    operation: QName
    body: ET.Element
    token: UsernameToken | None
    # Header blocks marked mustUnderstand that this service does not process.
    not_understood: tuple[QName, ...] = ()

    def child_text(self, *path: str) -> str | None:
        """Text of the first ``path`` (local names) below the operation element, if any."""
        node = self.body
        for local in path:
            found = next((c for c in node if _local(c.tag) == local), None)
            if found is None:
                return None
            node = found
        return (node.text or "").strip()

    def children_text(self, local: str) -> list[str]:
        return [(c.text or "").strip() for c in self.body if _local(c.tag) == local]


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


def _namespace(tag: object) -> str:
    text = str(tag)
    return text[1:].partition("}")[0] if text.startswith("{") else ""


def _check_encoding(data: bytes) -> None:
    """ONVIF messages are UTF-8: refuse anything else before the parser sees it."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"body is not UTF-8 (byte {exc.start})") from None
    declared = _XML_DECLARATION.match(data.removeprefix(b"\xef\xbb\xbf"))
    if declared is not None and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise DecodeError("only UTF-8 is accepted")


def _parse_xml(data: bytes, max_bytes: int) -> ET.Element:
    if len(data) > max_bytes:
        raise TooLargeError(f"body of {len(data)} bytes exceeds {max_bytes}")
    _check_encoding(data)
    root: ET.Element | None = None
    depth = elements = 0
    try:
        events = DET.iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True)
        for event, item in events:
            if event == "start":
                depth += 1
                elements += 1
                if depth > MAX_DEPTH:
                    raise TooLargeError(f"XML nested deeper than {MAX_DEPTH}")
                if elements > MAX_ELEMENTS:
                    raise TooLargeError(f"XML has more than {MAX_ELEMENTS} elements")
                if root is None:
                    root = item
            else:
                depth -= 1
    except TooLargeError:
        raise
    except defusedxml.DefusedXmlException as exc:
        raise DecodeError(f"forbidden XML construct: {type(exc).__name__}") from exc
    except (ET.ParseError, ValueError, UnicodeError, LookupError, RecursionError) as exc:
        raise DecodeError(f"malformed XML: {str(exc)[:120]}") from exc
    if root is None:
        raise DecodeError("empty XML document")
    return root


class VersionMismatchError(DecodeError):
    """The root is not a SOAP 1.1 or 1.2 Envelope."""


def _field(parent: ET.Element, namespace: str, local: str) -> ET.Element | None:
    found = parent.findall(f"{{{namespace}}}{local}")
    if len(found) > 1:
        raise DecodeError(f"more than one {local} in the UsernameToken")
    return found[0] if found else None


def _token_text(element: ET.Element | None, what: str) -> str:
    text = (element.text or "").strip() if element is not None else ""
    if len(text) > MAX_TOKEN_FIELD:
        raise DecodeError(f"UsernameToken {what} longer than {MAX_TOKEN_FIELD} characters")
    return text


def _username_token(header: ET.Element | None) -> UsernameToken | None:
    if header is None:
        return None
    tokens = [
        token
        for security in header.findall(f"{{{WSSE_NS}}}Security")
        for token in security.findall(f"{{{WSSE_NS}}}UsernameToken")
    ]
    if not tokens:
        return None
    if len(tokens) > 1:
        raise DecodeError("more than one UsernameToken")
    token = tokens[0]
    password = _field(token, WSSE_NS, "Password")
    return UsernameToken(
        username=_token_text(_field(token, WSSE_NS, "Username"), "Username"),
        password=_token_text(password, "Password"),
        # WS-Security: a Password without Type is a PasswordText.
        password_type=(password.get("Type", PASSWORD_TEXT) if password is not None else ""),
        nonce=_token_text(_field(token, WSSE_NS, "Nonce"), "Nonce"),
        created=_token_text(_field(token, WSU_NS, "Created"), "Created"),
    )


def _must_understand(block: ET.Element, soap_ns: str) -> bool:
    value = block.get(f"{{{soap_ns}}}mustUnderstand", "false").strip().lower()
    return value in ("true", "1")


def parse_request(data: bytes, max_bytes: int) -> SoapRequest:
    """One SOAP request: its operation element, UsernameToken and unhandled headers."""
    root = _parse_xml(data, max_bytes)
    soap_ns = _namespace(root.tag)
    if _local(root.tag) != "Envelope" or soap_ns not in (SOAP12_NS, SOAP11_NS):
        raise VersionMismatchError("not a SOAP 1.1 or 1.2 Envelope")
    headers = root.findall(f"{{{soap_ns}}}Header")
    bodies = root.findall(f"{{{soap_ns}}}Body")
    if len(headers) > 1 or len(bodies) != 1:
        raise DecodeError("an Envelope has at most one Header and exactly one Body")
    header = headers[0] if headers else None
    operations = list(bodies[0])
    if len(operations) != 1:
        raise DecodeError("the Body must hold exactly one operation")
    operation = operations[0]
    not_understood = tuple(
        QName(_namespace(block.tag), _local(block.tag))
        for block in (header if header is not None else ())
        if _must_understand(block, soap_ns)
        and _namespace(block.tag) != WSSE_NS
        and _namespace(block.tag) not in WSA_NAMESPACES
    )
    return SoapRequest(
        soap_ns=soap_ns,
        operation=QName(_namespace(operation.tag), _local(operation.tag)),
        body=operation,
        token=_username_token(header),
        not_understood=not_understood,
    )


# --- writing -------------------------------------------------------------------


def text(value: object) -> str:
    """``value`` as XML character data (illegal characters dropped)."""
    return escape(_XML_ILLEGAL.sub("", str(value)))


def element(
    name: str,
    content: str | Iterable[str] | None = None,
    attributes: Mapping[str, object] | None = None,
) -> str:
    """``<name attr="...">content</name>``; ``content`` is already XML (use :func:`text`)."""
    attrs = "".join(
        f" {key}={quoteattr(_XML_ILLEGAL.sub('', str(value)))}"
        for key, value in (attributes or {}).items()
    )
    if content is None:
        return f"<{name}{attrs}/>"
    inner = content if isinstance(content, str) else "".join(content)
    return f"<{name}{attrs}>{inner}</{name}>"


def leaf(name: str, value: object) -> str:
    """An element holding plain text: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return element(name, text(value))


def envelope(soap_ns: str, body: str) -> bytes:
    namespaces = "".join(f' xmlns:{p}="{ns}"' for p, ns in PREFIXES.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<env:Envelope xmlns:env="{soap_ns}"{namespaces}>'
        f"<env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


@dataclasses.dataclass(frozen=True)
class Fault:
    """A SOAP fault: ``sender`` (the request was wrong) or the receiver failed."""

    sender: bool
    subcodes: tuple[str, ...]  # ONVIF ter: subcodes, outermost first
    reason: str
    code: str = ""  # a SOAP code other than Sender/Receiver (VersionMismatch, MustUnderstand)

    @property
    def http_status(self) -> int:
        return 400 if self.sender or self.code else 500


def fault_body(fault: Fault, soap_ns: str) -> bytes:
    if soap_ns == SOAP11_NS:
        code = fault.code or ("Client" if fault.sender else "Server")
        body = element(
            "env:Fault",
            [leaf("faultcode", f"env:{code}"), leaf("faultstring", fault.reason)],
        )
        return envelope(soap_ns, body)
    subcode = ""
    for value in reversed(fault.subcodes):
        inner = subcode
        subcode = element("env:Subcode", leaf("env:Value", value) + inner)
    code = fault.code or ("Sender" if fault.sender else "Receiver")
    body = element(
        "env:Fault",
        [
            element("env:Code", leaf("env:Value", f"env:{code}") + subcode),
            element(
                "env:Reason",
                element("env:Text", text(fault.reason), {"xml:lang": "en"}),
            ),
        ],
    )
    return envelope(soap_ns, body)


def content_type(soap_ns: str) -> str:
    if soap_ns == SOAP11_NS:
        return "text/xml; charset=utf-8"
    return "application/soap+xml; charset=utf-8"
