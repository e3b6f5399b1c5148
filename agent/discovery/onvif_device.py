"""The ONVIF device service behind the WS-Discovery answer, sans I/O.

:meth:`OnvifDevice.handle` takes one HTTP request (method, path, body, the
local address the client reached) and returns the HTTP reply: a SOAP answer or
a SOAP fault.  Device Management (GetSystemDateAndTime, GetDeviceInformation,
GetCapabilities, GetServices, GetServiceCapabilities, GetScopes, GetHostname,
GetNetworkInterfaces) plus Media and Media2 (:mod:`agent.discovery.onvif_media`).

Every operation but GetSystemDateAndTime needs a valid UsernameToken
(:mod:`agent.discovery.onvif_auth`); until the owner has set a user, they all
answer ``ter:NotAuthorized``.  Unknown operations answer
``ter:ActionNotSupported``, malformed requests ``ter:WellFormed``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence

from agent.discovery.onvif_auth import Authenticator, AuthResult, Verdict
from agent.discovery.onvif_media import Answer, Media, Origin
from agent.discovery.onvif_soap import (
    SOAP12_NS,
    TDS_NS,
    TR2_NS,
    TRT_NS,
    Fault,
    SoapRequest,
    VersionMismatchError,
    content_type,
    element,
    envelope,
    fault_body,
    leaf,
    parse_request,
)
from agent.errors import DecodeError, TooLargeError

DEVICE_PATH = "/onvif/device_service"
MEDIA_PATH = "/onvif/media_service"
MEDIA2_PATH = "/onvif/media2_service"
PUBLIC_OPERATIONS = frozenset({(TDS_NS, "GetSystemDateAndTime")})
SERVICE_VERSIONS = {TDS_NS: (2, 6), TRT_NS: (2, 6), TR2_NS: (16, 12)}

NOT_AUTHORIZED = ("ter:NotAuthorized",)
UNKNOWN_ACTION = Fault(False, ("ter:ActionNotSupported",), "Optional Action Not Implemented")


@dataclasses.dataclass(frozen=True)
class DeviceIdentity:
    manufacturer: str
    model: str
    firmware_version: str
    serial_number: str
    hardware_id: str
    scopes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class NetworkInterface:
    name: str
    mac: str
    mtu: int
    ipv4: tuple[tuple[str, int], ...]  # (address, prefix length)


@dataclasses.dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    body: bytes
    local_host: str  # the address the client reached: XAddrs and stream URIs use it
    local_port: int


@dataclasses.dataclass(frozen=True)
class HttpReply:
    status: int
    content_type: str
    body: bytes
    # For the server's throttled log line: "ok", "fault", "auth:<verdict>", "malformed".
    outcome: str = "ok"


@dataclasses.dataclass(frozen=True)
class Paths:
    device: str = DEVICE_PATH
    media: str = MEDIA_PATH
    media2: str = MEDIA2_PATH

    def all(self) -> frozenset[str]:
        return frozenset({self.device, self.media, self.media2})


def _text_reply(status: int, message: str) -> HttpReply:
    return HttpReply(status, "text/plain; charset=utf-8", message.encode() + b"\n", "http")


def _date_time(tag: str, moment: datetime.datetime) -> str:
    return element(
        tag,
        [
            element(
                "tt:Time",
                leaf("tt:Hour", moment.hour)
                + leaf("tt:Minute", moment.minute)
                + leaf("tt:Second", moment.second),
            ),
            element(
                "tt:Date",
                leaf("tt:Year", moment.year)
                + leaf("tt:Month", moment.month)
                + leaf("tt:Day", moment.day),
            ),
        ],
    )


class OnvifDevice:
    def __init__(
        self,
        identity: DeviceIdentity,
        media: Media,
        authenticator: Authenticator,
        *,
        hostname: Callable[[], str],
        interfaces: Callable[[], Sequence[NetworkInterface]],
        max_body_bytes: int,
        paths: Paths | None = None,
    ) -> None:
        self.identity = identity
        self.media = media
        self.auth = authenticator
        self._hostname = hostname
        self._interfaces = interfaces
        self.max_body_bytes = max_body_bytes
        self.paths = paths or Paths()
        self._operations: dict[tuple[str, str], Answer] = {
            (TDS_NS, "GetSystemDateAndTime"): lambda r, h: "",  # answered with `now`
            (TDS_NS, "GetDeviceInformation"): lambda r, h: self._device_information(),
            (TDS_NS, "GetCapabilities"): self._capabilities,
            (TDS_NS, "GetServices"): self._services,
            (TDS_NS, "GetServiceCapabilities"): lambda r, h: self._device_capabilities(),
            (TDS_NS, "GetScopes"): lambda r, h: self._scopes(),
            (TDS_NS, "GetHostname"): lambda r, h: self._hostname_information(),
            (TDS_NS, "GetNetworkInterfaces"): lambda r, h: self._network_interfaces(),
            **media.operations(),
        }

    # --- HTTP -------------------------------------------------------------------

    def handle(self, request: HttpRequest, now: float) -> HttpReply:
        if request.path.partition("?")[0] not in self.paths.all():
            return _text_reply(404, "not found")
        if request.method != "POST":
            return _text_reply(405, "ONVIF services take SOAP requests by POST")
        try:
            soap = parse_request(request.body, self.max_body_bytes)
        except VersionMismatchError:
            return self._fault(
                SOAP12_NS, Fault(True, (), "expected a SOAP 1.2 Envelope", "VersionMismatch")
            )
        except TooLargeError as exc:
            return self._fault(SOAP12_NS, Fault(True, ("ter:WellFormed",), str(exc)), "too-large")
        except DecodeError as exc:
            return self._fault(SOAP12_NS, Fault(True, ("ter:WellFormed",), str(exc)), "malformed")
        if soap.not_understood:
            names = ", ".join(f"{{{q.namespace}}}{q.local}" for q in soap.not_understood)
            return self._fault(
                soap.soap_ns,
                Fault(True, (), f"header not understood: {names[:200]}", "MustUnderstand"),
            )
        operation = (soap.operation.namespace, soap.operation.local)
        if operation not in PUBLIC_OPERATIONS:
            verdict = self.auth.check(soap.token, now)
            if not verdict.ok:
                return self._auth_fault(soap.soap_ns, verdict)
        answer = self._operations.get(operation)
        if answer is None:
            return self._fault(soap.soap_ns, UNKNOWN_ACTION)
        if operation == (TDS_NS, "GetSystemDateAndTime"):
            body: str | Fault = self._system_date_and_time(now)
        else:
            body = answer(soap, Origin(request.local_host, request.local_port))
        if isinstance(body, Fault):
            return self._fault(soap.soap_ns, body)
        return HttpReply(200, content_type(soap.soap_ns), envelope(soap.soap_ns, body))

    def _fault(self, soap_ns: str, fault: Fault, outcome: str = "fault") -> HttpReply:
        return HttpReply(
            fault.http_status, content_type(soap_ns), fault_body(fault, soap_ns), outcome
        )

    def _auth_fault(self, soap_ns: str, result: AuthResult) -> HttpReply:
        reason = "Sender not Authorized"
        if result.verdict in (Verdict.NO_USER, Verdict.LOCKED_OUT):
            reason = f"{reason}: {result.verdict.value}"
        if result.verdict is Verdict.LOCKED_OUT:
            reason += f"; retry in {result.retry_after:.0f} s"
        if result.verdict is Verdict.BUSY:
            fault = Fault(False, ("ter:Action",), result.verdict.value)
        else:
            fault = Fault(True, NOT_AUTHORIZED, reason)
        return self._fault(soap_ns, fault, f"auth:{result.verdict.name.lower()}")

    # --- Device Management --------------------------------------------------------

    def _system_date_and_time(self, now: float) -> str:
        moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
        return element(
            "tds:GetSystemDateAndTimeResponse",
            element(
                "tds:SystemDateAndTime",
                [
                    leaf("tt:DateTimeType", "NTP"),
                    leaf("tt:DaylightSavings", False),
                    element("tt:TimeZone", leaf("tt:TZ", "UTC0")),
                    _date_time("tt:UTCDateTime", moment),
                    _date_time("tt:LocalDateTime", moment),
                ],
            ),
        )

    def _device_information(self) -> str:
        ident = self.identity
        return element(
            "tds:GetDeviceInformationResponse",
            [
                leaf("tds:Manufacturer", ident.manufacturer),
                leaf("tds:Model", ident.model),
                leaf("tds:FirmwareVersion", ident.firmware_version),
                leaf("tds:SerialNumber", ident.serial_number),
                leaf("tds:HardwareId", ident.hardware_id),
            ],
        )

    @staticmethod
    def _xaddr(origin: Origin, path: str) -> str:
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        return f"http://{host}:{origin.port}{path}"

    def _capabilities(self, request: SoapRequest, origin: Origin) -> str | Fault:
        wanted = set(request.children_text("Category")) or {"All"}
        parts = []
        if wanted & {"All", "Device"}:
            parts.append(
                element(
                    "tt:Device",
                    [
                        leaf("tt:XAddr", self._xaddr(origin, self.paths.device)),
                        element(
                            "tt:Network",
                            [
                                leaf("tt:IPFilter", False),
                                leaf("tt:ZeroConfiguration", False),
                                leaf("tt:IPVersion6", False),
                                leaf("tt:DynDNS", False),
                            ],
                        ),
                        element(
                            "tt:System",
                            [
                                leaf("tt:DiscoveryResolve", False),
                                leaf("tt:DiscoveryBye", True),
                                leaf("tt:RemoteDiscovery", False),
                                leaf("tt:SystemBackup", False),
                                leaf("tt:SystemLogging", False),
                                leaf("tt:FirmwareUpgrade", False),
                                element(
                                    "tt:SupportedVersions",
                                    leaf("tt:Major", 2) + leaf("tt:Minor", 6),
                                ),
                            ],
                        ),
                        element(
                            "tt:Security",
                            [
                                leaf("tt:TLS1.1", False),
                                leaf("tt:TLS1.2", False),
                                leaf("tt:OnboardKeyGeneration", False),
                                leaf("tt:AccessPolicyConfig", False),
                                leaf("tt:X.509Token", False),
                                leaf("tt:SAMLToken", False),
                                leaf("tt:KerberosToken", False),
                                leaf("tt:RELToken", False),
                            ],
                        ),
                    ],
                )
            )
        if wanted & {"All", "Media"}:
            parts.append(
                element(
                    "tt:Media",
                    [
                        leaf("tt:XAddr", self._xaddr(origin, self.paths.media)),
                        element(
                            "tt:StreamingCapabilities",
                            [
                                leaf("tt:RTPMulticast", False),
                                leaf("tt:RTP_TCP", True),
                                leaf("tt:RTP_RTSP_TCP", True),
                            ],
                        ),
                    ],
                )
            )
        if not parts:
            return Fault(False, ("ter:ActionNotSupported", "ter:NoSuchService"), "no such service")
        return element("tds:GetCapabilitiesResponse", element("tds:Capabilities", parts))

    def _device_capabilities(self, wrap: bool = True) -> str:
        capabilities = element(
            "tds:Capabilities",
            [
                element(
                    "tds:Network",
                    None,
                    {
                        "IPFilter": "false",
                        "ZeroConfiguration": "false",
                        "IPVersion6": "false",
                        "DynDNS": "false",
                        "HostnameFromDHCP": "false",
                        "NTP": 0,
                    },
                ),
                element(
                    "tds:Security",
                    None,
                    {
                        "TLS1.0": "false",
                        "TLS1.1": "false",
                        "TLS1.2": "false",
                        "UsernameToken": "true",
                        "HttpDigest": "false",
                        "MaxUsers": 1,
                    },
                ),
                element(
                    "tds:System",
                    None,
                    {
                        "DiscoveryResolve": "false",
                        "DiscoveryBye": "true",
                        "RemoteDiscovery": "false",
                        "SystemBackup": "false",
                        "SystemLogging": "false",
                        "FirmwareUpgrade": "false",
                    },
                ),
            ],
        )
        if not wrap:
            return capabilities
        return element("tds:GetServiceCapabilitiesResponse", capabilities)

    def _services(self, request: SoapRequest, origin: Origin) -> str:
        include = (request.child_text("IncludeCapability") or "").lower() in ("true", "1")
        entries: tuple[tuple[str, str, Callable[[], str]], ...] = (
            (TDS_NS, self.paths.device, lambda: self._device_capabilities(wrap=False)),
            (TRT_NS, self.paths.media, lambda: self.media.media_capabilities(wrap=False)),
            (TR2_NS, self.paths.media2, lambda: self.media.media2_capabilities(wrap=False)),
        )
        services = []
        for namespace, path, capabilities in entries:
            major, minor = SERVICE_VERSIONS[namespace]
            parts = [
                leaf("tds:Namespace", namespace),
                leaf("tds:XAddr", self._xaddr(origin, path)),
            ]
            if include:
                parts.append(element("tds:Capabilities", capabilities()))
            parts.append(element("tds:Version", leaf("tt:Major", major) + leaf("tt:Minor", minor)))
            services.append(element("tds:Service", parts))
        return element("tds:GetServicesResponse", services)

    def _scopes(self) -> str:
        scopes = [
            element("tds:Scopes", leaf("tt:ScopeDef", "Fixed") + leaf("tt:ScopeItem", scope))
            for scope in self.identity.scopes
        ]
        return element("tds:GetScopesResponse", scopes)

    def _hostname_information(self) -> str:
        parts = [leaf("tt:FromDHCP", False)]
        name = self._hostname()
        if name:
            parts.append(leaf("tt:Name", name))
        return element("tds:GetHostnameResponse", element("tds:HostnameInformation", parts))

    def _network_interfaces(self) -> str:
        entries = []
        for index, interface in enumerate(self._interfaces()):
            info = [leaf("tt:Name", interface.name), leaf("tt:HwAddress", interface.mac)]
            if interface.mtu > 0:
                info.append(leaf("tt:MTU", interface.mtu))
            manual = [
                element("tt:Manual", leaf("tt:Address", address) + leaf("tt:PrefixLength", prefix))
                for address, prefix in interface.ipv4
            ]
            ipv4 = element(
                "tt:IPv4",
                leaf("tt:Enabled", bool(interface.ipv4))
                + element("tt:Config", [*manual, leaf("tt:DHCP", False)]),
            )
            entries.append(
                element(
                    "tds:NetworkInterfaces",
                    [leaf("tt:Enabled", True), element("tt:Info", info), ipv4],
                    {"token": f"eth{index}" if not interface.name else interface.name},
                )
            )
        return element("tds:GetNetworkInterfacesResponse", entries)
