"""ONVIF Media (ver10) and Media2 (ver20) answers for the camera's one stream, sans I/O.

The device has at most one media profile: the camera's configured RTSP source
(or the stream URI given in ``[discovery] onvif_stream_uri``).  Without one,
GetProfiles lists none and GetStreamUri answers ``ter:NoProfile``; without a
configured snapshot URL, GetSnapshotUri answers ``ter:ActionNotSupported``.
A URI handed out never carries the source's user:password, and a loopback
host (an RTSP server on the device itself) becomes the address the client
reached us at.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from typing import NamedTuple

from agent.discovery.onvif_soap import (
    TR2_NS,
    TRT_NS,
    Fault,
    SoapRequest,
    element,
    leaf,
)

# ONVIF ReferenceTokens (names of configurations), not secrets.
PROFILE_TOKEN = "profile_main"  # noqa: S105
VIDEO_SOURCE_TOKEN = "video_source_main"  # noqa: S105
SOURCE_CONFIG_TOKEN = "video_source_config_main"  # noqa: S105
ENCODER_CONFIG_TOKEN = "video_encoder_config_main"  # noqa: S105
_URI = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:[^@/?#]*@)?"
    r"(?P<host>\[[^\]/?#]*\]|[^/?#:]*)(?P<port>:\d{0,5})?(?P<rest>[/?#].*)?$"
)

NO_PROFILE = Fault(True, ("ter:InvalidArgVal", "ter:NoProfile"), "no such media profile")
NO_SNAPSHOT = Fault(False, ("ter:ActionNotSupported",), "this device serves no snapshot URI")


@dataclasses.dataclass(frozen=True)
class MediaSource:
    stream_uri: str  # "" = no stream to offer
    snapshot_uri: str  # "" = no snapshots
    width: int
    height: int
    fps: float


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def public_uri(uri: str, local_host: str) -> str:
    """``uri`` without user:password; a loopback host becomes ``local_host``."""
    match = _URI.match(uri)
    if match is None:
        return ""
    host = match["host"]
    if _is_loopback(host) and local_host:
        host = f"[{local_host}]" if ":" in local_host else local_host
    return f"{match['scheme']}://{host}{match['port'] or ''}{match['rest'] or ''}"


class Origin(NamedTuple):
    """The local address and port a client reached: the base of every URI handed out."""

    host: str
    port: int


Answer = Callable[[SoapRequest, Origin], "str | Fault"]


class Media:
    """Operations of both media services (one profile at most)."""

    def __init__(self, source: MediaSource) -> None:
        self.source = source

    @property
    def has_profile(self) -> bool:
        return bool(self.source.stream_uri)

    def operations(self) -> dict[tuple[str, str], Answer]:
        return {
            (TRT_NS, "GetProfiles"): lambda r, h: self._profiles(),
            (TRT_NS, "GetProfile"): self._profile,
            (TRT_NS, "GetVideoSources"): lambda r, h: self._video_sources(),
            (TRT_NS, "GetStreamUri"): self._stream_uri,
            (TRT_NS, "GetSnapshotUri"): self._snapshot_uri,
            (TRT_NS, "GetServiceCapabilities"): lambda r, h: self.media_capabilities(),
            (TR2_NS, "GetProfiles"): self._profiles2,
            (TR2_NS, "GetStreamUri"): self._stream_uri2,
            (TR2_NS, "GetSnapshotUri"): self._snapshot_uri2,
            (TR2_NS, "GetServiceCapabilities"): lambda r, h: self.media2_capabilities(),
        }

    # --- building blocks ------------------------------------------------------

    def _bounds(self) -> str:
        size = {"x": 0, "y": 0, "width": self.source.width, "height": self.source.height}
        return element("tt:Bounds", None, size)

    def _resolution(self) -> str:
        return element(
            "tt:Resolution",
            leaf("tt:Width", self.source.width) + leaf("tt:Height", self.source.height),
        )

    def _fps(self) -> int:
        return max(1, round(self.source.fps))

    def _source_configuration(self, tag: str) -> str:
        return element(
            tag,
            [
                leaf("tt:Name", "Camera"),
                leaf("tt:UseCount", 1),
                leaf("tt:SourceToken", VIDEO_SOURCE_TOKEN),
                self._bounds(),
            ],
            {"token": SOURCE_CONFIG_TOKEN},
        )

    def _encoder_configuration(self) -> str:
        return element(
            "tt:VideoEncoderConfiguration",
            [
                leaf("tt:Name", "Main stream"),
                leaf("tt:UseCount", 1),
                leaf("tt:Encoding", "H264"),
                self._resolution(),
                leaf("tt:Quality", 5),
                element(
                    "tt:RateControl",
                    leaf("tt:FrameRateLimit", self._fps())
                    + leaf("tt:EncodingInterval", 1)
                    + leaf("tt:BitrateLimit", 2048),
                ),
                element(
                    "tt:H264",
                    leaf("tt:GovLength", self._fps() * 2) + leaf("tt:H264Profile", "Main"),
                ),
                element(
                    "tt:Multicast",
                    [
                        element(
                            "tt:Address",
                            leaf("tt:Type", "IPv4") + leaf("tt:IPv4Address", "0.0.0.0"),  # noqa: S104
                        ),
                        leaf("tt:Port", 0),
                        leaf("tt:TTL", 0),
                        leaf("tt:AutoStart", False),
                    ],
                ),
                leaf("tt:SessionTimeout", "PT60S"),
            ],
            {"token": ENCODER_CONFIG_TOKEN},
        )

    def _profile_xml(self, tag: str) -> str:
        return element(
            tag,
            [
                leaf("tt:Name", "Main"),
                self._source_configuration("tt:VideoSourceConfiguration"),
                self._encoder_configuration(),
            ],
            {"token": PROFILE_TOKEN, "fixed": "true"},
        )

    def _media_uri(self, tag: str, uri: str) -> str:
        return element(
            tag,
            [
                leaf("tt:Uri", uri),
                leaf("tt:InvalidAfterConnect", False),
                leaf("tt:InvalidAfterReboot", False),
                leaf("tt:Timeout", "PT0S"),
            ],
        )

    def _check_token(self, token: str | None) -> Fault | None:
        if not self.has_profile or token != PROFILE_TOKEN:
            return NO_PROFILE
        return None

    # --- Media (ver10) ----------------------------------------------------------

    def _profiles(self) -> str:
        profiles = self._profile_xml("trt:Profiles") if self.has_profile else ""
        return element("trt:GetProfilesResponse", profiles)

    def _profile(self, request: SoapRequest, origin: Origin) -> str | Fault:
        problem = self._check_token(request.child_text("ProfileToken"))
        if problem is not None:
            return problem
        return element("trt:GetProfileResponse", self._profile_xml("trt:Profile"))

    def _video_sources(self) -> str:
        source = element(
            "trt:VideoSources",
            leaf("tt:Framerate", float(self.source.fps)) + self._resolution(),
            {"token": VIDEO_SOURCE_TOKEN},
        )
        return element("trt:GetVideoSourcesResponse", source)

    def _stream_uri(self, request: SoapRequest, origin: Origin) -> str | Fault:
        problem = self._check_token(request.child_text("ProfileToken"))
        if problem is not None:
            return problem
        uri = public_uri(self.source.stream_uri, origin.host)
        return element("trt:GetStreamUriResponse", self._media_uri("trt:MediaUri", uri))

    def _snapshot_uri(self, request: SoapRequest, origin: Origin) -> str | Fault:
        problem = self._check_token(request.child_text("ProfileToken"))
        if problem is not None:
            return problem
        if not self.source.snapshot_uri:
            return NO_SNAPSHOT
        uri = public_uri(self.source.snapshot_uri, origin.host)
        return element("trt:GetSnapshotUriResponse", self._media_uri("trt:MediaUri", uri))

    def media_capabilities(self, tag: str = "trt:Capabilities", wrap: bool = True) -> str:
        capabilities = element(
            tag,
            [
                element("trt:ProfileCapabilities", None, {"MaximumNumberOfProfiles": 1}),
                element(
                    "trt:StreamingCapabilities",
                    None,
                    {"RTPMulticast": "false", "RTP_TCP": "true", "RTP_RTSP_TCP": "true"},
                ),
            ],
            {"SnapshotUri": str(bool(self.source.snapshot_uri)).lower()},
        )
        return element("trt:GetServiceCapabilitiesResponse", capabilities) if wrap else capabilities

    # --- Media2 (ver20) ---------------------------------------------------------

    def _profiles2(self, request: SoapRequest, origin: Origin) -> str | Fault:
        token = request.child_text("Token")
        if token is not None and self._check_token(token) is not None:
            return NO_PROFILE
        if not self.has_profile:
            return element("tr2:GetProfilesResponse", "")
        wanted = set(request.children_text("Type"))
        # Media2: without Type only the profile's name and token come back.
        configurations = ""
        if wanted & {"All", "VideoSource", "VideoEncoder"}:
            parts = []
            if wanted & {"All", "VideoSource"}:
                parts.append(self._source_configuration("tr2:VideoSource"))
            if wanted & {"All", "VideoEncoder"}:
                parts.append(self._encoder2())
            configurations = element("tr2:Configurations", parts)
        profile = element(
            "tr2:Profiles",
            leaf("tr2:Name", "Main") + configurations,
            {"token": PROFILE_TOKEN, "fixed": "true"},
        )
        return element("tr2:GetProfilesResponse", profile)

    def _encoder2(self) -> str:
        return element(
            "tr2:VideoEncoder",
            [
                leaf("tt:Name", "Main stream"),
                leaf("tt:UseCount", 1),
                leaf("tt:Encoding", "H264"),
                self._resolution(),
                element(
                    "tt:RateControl",
                    leaf("tt:FrameRateLimit", float(self._fps())) + leaf("tt:BitrateLimit", 2048),
                    {"ConstantBitRate": "false"},
                ),
                leaf("tt:Quality", 5),
            ],
            {"token": ENCODER_CONFIG_TOKEN, "GovLength": self._fps() * 2, "Profile": "Main"},
        )

    def _stream_uri2(self, request: SoapRequest, origin: Origin) -> str | Fault:
        problem = self._check_token(request.child_text("ProfileToken"))
        if problem is not None:
            return problem
        uri = public_uri(self.source.stream_uri, origin.host)
        return element("tr2:GetStreamUriResponse", leaf("tr2:Uri", uri))

    def _snapshot_uri2(self, request: SoapRequest, origin: Origin) -> str | Fault:
        problem = self._check_token(request.child_text("ProfileToken"))
        if problem is not None:
            return problem
        if not self.source.snapshot_uri:
            return NO_SNAPSHOT
        uri = public_uri(self.source.snapshot_uri, origin.host)
        return element("tr2:GetSnapshotUriResponse", leaf("tr2:Uri", uri))

    def media2_capabilities(self, tag: str = "tr2:Capabilities", wrap: bool = True) -> str:
        capabilities = element(
            tag,
            [
                element("tr2:ProfileCapabilities", None, {"MaximumNumberOfProfiles": 1}),
                element("tr2:StreamingCapabilities", None, {"RTSPStreaming": "true"}),
            ],
            {"SnapshotUri": str(bool(self.source.snapshot_uri)).lower()},
        )
        return element("tr2:GetServiceCapabilitiesResponse", capabilities) if wrap else capabilities
