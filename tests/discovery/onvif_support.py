"""Helpers for the ONVIF tests: SOAP requests signed by zeep's own WS-Security code.

The UsernameToken in these requests is made by ``zeep.wsse.username.UsernameToken``
(the code onvif-zeep-async uses), not by the agent's digest function, so a
digest bug in the agent cannot cancel out against the same bug in the test.
"""

from __future__ import annotations

import datetime
import http.client
import xml.etree.ElementTree as ET

from lxml import etree
from zeep.wsse.username import UsernameToken

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TR2 = "http://www.onvif.org/ver20/media/wsdl"
TT = "http://www.onvif.org/ver10/schema"
TER = "http://www.onvif.org/ver10/error"


def envelope(operation: str, namespace: str = TDS, inner: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP12}">'
        f'<s:Header/><s:Body><op:{operation} xmlns:op="{namespace}" xmlns:tt="{TT}">{inner}'
        f"</op:{operation}></s:Body></s:Envelope>"
    ).encode()


def signed(
    body: bytes,
    username: str,
    password: str,
    *,
    nonce: str | None = None,
    created: datetime.datetime | None = None,
    digest: bool = True,
) -> bytes:
    """``body`` with a UsernameToken that zeep writes (PasswordDigest unless ``digest=False``)."""
    document = etree.fromstring(body)
    token = UsernameToken(
        username,
        password,
        use_digest=digest,
        nonce=nonce,
        created=created,
        zulu_timestamp=True,
    )
    token.apply(document, {})
    return bytes(etree.tostring(document, xml_declaration=True, encoding="UTF-8"))


def post(
    port: int,
    body: bytes,
    path: str = "/onvif/device_service",
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(
            "POST",
            path,
            body,
            {"Content-Type": "application/soap+xml; charset=utf-8", **(headers or {})},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def fault_subcodes(body: bytes) -> list[str]:
    """The ter: subcodes of a SOAP 1.2 fault (``[]`` if ``body`` is no fault)."""
    root = ET.fromstring(body)
    values = root.findall(f".//{{{SOAP12}}}Subcode/{{{SOAP12}}}Value")
    return [(v.text or "").strip() for v in values]


def fault_code(body: bytes) -> str:
    root = ET.fromstring(body)
    value = root.find(f".//{{{SOAP12}}}Code/{{{SOAP12}}}Value")
    return (value.text or "").strip() if value is not None else ""


def find_text(body: bytes, path: str) -> list[str]:
    root = ET.fromstring(body)
    namespaces = {"tds": TDS, "trt": TRT, "tr2": TR2, "tt": TT, "s": SOAP12}
    return [(e.text or "").strip() for e in root.findall(path, namespaces)]
