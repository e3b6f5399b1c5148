"""The NVR hub, sans I/O: fair scheduling of many cameras and the ONVIF client's messages.

A hub captures several cameras (one thread each, in :mod:`drivers.camera.hub`);
each keeps only its newest frame in a :class:`CameraSlot` (a frame not taken
before the next arrives is dropped and counted), and :class:`FairScheduler`
hands the frames to the one shared pipeline round-robin, so a fast camera never
starves a slow one and the pipeline never falls behind.

The ONVIF client side is :func:`onvif_request` (a SOAP 1.2 envelope with a
WS-Security UsernameToken PasswordDigest) and the parsers of the three answers
the hub needs: GetCapabilities (the media service address), GetProfiles (the
first profile token) and GetStreamUri.
"""

from __future__ import annotations

import base64
import datetime
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Generic, TypeVar
from xml.sax.saxutils import escape

import defusedxml.ElementTree as DET

from agent.discovery.onvif_auth import OnvifCredentials, password_digest
from agent.errors import DecodeError

Frame = TypeVar("Frame")

MAX_ONVIF_REPLY_BYTES = 256 * 1024
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
TDS_NS = "http://www.onvif.org/ver10/device/wsdl"
TRT_NS = "http://www.onvif.org/ver10/media/wsdl"
TT_NS = "http://www.onvif.org/ver10/schema"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
NONCE_ENCODING = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0"
    "#Base64Binary"
)


class CameraSlot(Generic[Frame]):
    """One camera's newest frame: thread-safe, a frame not taken in time is dropped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.captured = 0
        self.dropped = 0
        self.scheduled = 0
        self._frame: Frame | None = None
        self._lock = threading.Lock()

    def offer(self, frame: Frame) -> None:
        with self._lock:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.captured += 1

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._frame = self._frame, None
            if frame is not None:
                self.scheduled += 1
        return frame


class FairScheduler(Generic[Frame]):
    """Round-robin over the cameras' slots; each call resumes after the last camera served."""

    def __init__(self, slots: Iterable[CameraSlot[Frame]]) -> None:
        self.slots = list(slots)
        names = [slot.name for slot in self.slots]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique: {names}")
        self._next = 0

    def add(self, slot: CameraSlot[Frame]) -> None:
        """A camera joins at run time (an adopted one); it gets its turn after the others."""
        if any(s.name == slot.name for s in self.slots):
            raise ValueError(f"camera names must be unique: {slot.name!r} is taken")
        self.slots.append(slot)

    def remove(self, name: str) -> CameraSlot[Frame] | None:
        """A camera leaves at run time; the round-robin resumes where it was."""
        index = next((i for i, s in enumerate(self.slots) if s.name == name), None)
        if index is None:
            return None
        slot = self.slots.pop(index)
        if index < self._next:
            self._next -= 1
        if self._next >= len(self.slots):
            self._next = 0
        return slot

    def take(self, limit: int) -> list[tuple[str, Frame]]:
        """At most ``limit`` frames, no camera a second time before every other had its turn."""
        taken: list[tuple[str, Frame]] = []
        count = len(self.slots)
        idle = 0
        while len(taken) < limit and idle < count and count:
            slot = self.slots[self._next]
            self._next = (self._next + 1) % count
            frame = slot.take()
            if frame is None:
                idle += 1
                continue
            idle = 0
            taken.append((slot.name, frame))
        return taken

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            s.name: {"captured": s.captured, "dropped": s.dropped, "scheduled": s.scheduled}
            for s in list(self.slots)
        }


# --- the ONVIF client's messages --------------------------------------------------


def _created(now: float) -> str:
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def onvif_request(
    body: str, credentials: OnvifCredentials | None, now: float, nonce: bytes
) -> bytes:
    """A SOAP 1.2 request; with ``credentials`` a UsernameToken with PasswordDigest."""
    header = ""
    if credentials is not None:
        created = _created(now)
        digest = password_digest(nonce, created, credentials.password)
        header = (
            f'<s:Header><wsse:Security xmlns:wsse="{WSSE_NS}" xmlns:wsu="{WSU_NS}">'
            f"<wsse:UsernameToken><wsse:Username>{escape(credentials.username)}</wsse:Username>"
            f'<wsse:Password Type="{DIGEST_TYPE}">{digest}</wsse:Password>'
            f'<wsse:Nonce EncodingType="{NONCE_ENCODING}">'
            f"{base64.b64encode(nonce).decode()}</wsse:Nonce>"
            f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
            "</s:Header>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP12_NS}" '
        f'xmlns:tds="{TDS_NS}" xmlns:trt="{TRT_NS}" xmlns:tt="{TT_NS}">'
        f"{header}<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


GET_CAPABILITIES = "<tds:GetCapabilities><tds:Category>Media</tds:Category></tds:GetCapabilities>"
GET_PROFILES = "<trt:GetProfiles/>"


def get_stream_uri(profile: str) -> str:
    return (
        "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
        "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>"
        f"<trt:ProfileToken>{escape(profile)}</trt:ProfileToken></trt:GetStreamUri>"
    )


def _body(reply: bytes) -> ET.Element:
    if len(reply) > MAX_ONVIF_REPLY_BYTES:
        raise DecodeError(f"ONVIF reply larger than {MAX_ONVIF_REPLY_BYTES} bytes")
    try:
        root: ET.Element = DET.fromstring(reply)
    except (ET.ParseError, ValueError) as exc:
        raise DecodeError(f"ONVIF reply is not XML: {exc}") from None
    body = next((child for child in root if child.tag.endswith("}Body")), None)
    if body is None:
        raise DecodeError("ONVIF reply has no SOAP Body")
    fault = next((el for el in body.iter() if el.tag.endswith("}Fault")), None)
    if fault is not None:
        reason = " ".join(t.strip() for t in fault.itertext() if t.strip())
        raise DecodeError(f"ONVIF fault: {reason[:200]}")
    return body


def _first_text(body: ET.Element, namespace: str, local: str) -> str:
    for element in body.iter(f"{{{namespace}}}{local}"):
        text = (element.text or "").strip()
        if text:
            return text
    raise DecodeError(f"ONVIF reply has no {local}")


def media_xaddr(reply: bytes) -> str:
    """GetCapabilitiesResponse: the media service's address."""
    body = _body(reply)
    for media in body.iter(f"{{{TT_NS}}}Media"):
        return _first_text(media, TT_NS, "XAddr")
    raise DecodeError("the camera has no media service")


def first_profile(reply: bytes, wanted: str = "") -> str:
    """GetProfilesResponse: ``wanted`` if the camera has it, else its first profile token."""
    tokens = [
        p.get("token", "") for p in _body(reply).iter(f"{{{TRT_NS}}}Profiles") if p.get("token")
    ]
    if not tokens:
        raise DecodeError("the camera lists no media profile")
    if wanted:
        if wanted not in tokens:
            raise DecodeError(f"the camera has no profile {wanted[:40]!r}")
        return wanted
    return tokens[0]


def stream_uri(reply: bytes) -> str:
    """GetStreamUriResponse: the RTSP URI."""
    uri = _first_text(_body(reply), TT_NS, "Uri")
    if not uri.lower().startswith(("rtsp://", "rtsps://")):
        raise DecodeError("the camera's stream URI is not rtsp://")
    return uri

