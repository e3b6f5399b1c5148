"""The ONVIF device service on the LAN: :class:`OnvifDevice` behind the bounded HTTP server.

Every decision is :class:`agent.discovery.onvif_device.OnvifDevice`'s; this
module reads the request (a Content-Length body of at most
``onvif_max_body_bytes``, within the server's one request deadline), tells it
which local address the client reached, and writes the reply.  Connections
are capped and timed out by :mod:`drivers.httpserve`; failed logins are one
throttled log line, never the credentials.
"""

from __future__ import annotations

import logging
import os
import pathlib
import socket

import ifaddr

from agent.discovery.onvif_device import HttpReply, HttpRequest, NetworkInterface, OnvifDevice
from agent.errors import DeviceIOError
from agent.ports import Clock
from drivers.httpserve import BoundedHTTPServer, BoundedRequestHandler, ServerLimits

log = logging.getLogger(__name__)

SERVER_NAME = "onvif"
SYS_NET = pathlib.Path("/sys/class/net")
MAX_INTERFACES = 16
# An oversized request body is read and dropped up to this, so the refusal arrives.
MAX_DISCARD_BYTES = 1 << 20


def _sys_value(interface: str, name: str) -> str:
    try:
        return (SYS_NET / interface / name).read_text(errors="replace").strip()[:64]
    except OSError:
        return ""


def network_interfaces() -> list[NetworkInterface]:
    """The IPv4 interfaces (loopback only when nothing else has an address)."""
    found: list[NetworkInterface] = []
    loopback: list[NetworkInterface] = []
    for adapter in ifaddr.get_adapters():
        ipv4 = tuple(
            (str(ip.ip), int(ip.network_prefix)) for ip in adapter.ips if isinstance(ip.ip, str)
        )
        if not ipv4:
            continue
        name = str(adapter.nice_name)[:64]
        mtu = _sys_value(name, "mtu")
        interface = NetworkInterface(
            name=name,
            mac=_sys_value(name, "address") or "00:00:00:00:00:00",
            mtu=int(mtu) if mtu.isdigit() else 0,
            ipv4=ipv4,
        )
        is_loopback = all(address.startswith("127.") for address, _ in ipv4)
        (loopback if is_loopback else found).append(interface)
    return (found or loopback)[:MAX_INTERFACES]


def hostname() -> str:
    return socket.gethostname()[:255]


class OnvifHttpServer:
    """``agent.ports.Service``-like: start/stop the ONVIF endpoints on ``address``."""

    name = "discovery.onvif"

    def __init__(
        self,
        device: OnvifDevice,
        address: tuple[str, int],
        *,
        clock: Clock,
        limits: ServerLimits | None = None,
    ) -> None:
        self.device = device
        self.address = address
        self.clock = clock
        self.limits = limits or ServerLimits()
        self._httpd: BoundedHTTPServer | None = None

    @property
    def port(self) -> int | None:
        """The port it serves on, None while it is not serving."""
        return self._httpd.port if self._httpd is not None else None

    def start(self) -> None:
        device, clock = self.device, self.clock

        class Handler(BoundedRequestHandler):
            def _body(self) -> bytes | HttpReply:
                if self.headers.get("Transfer-Encoding"):
                    return _plain(411, "send the SOAP body with a Content-Length")
                raw = self.headers.get("Content-Length", "")
                if not raw.isdigit() or len(raw) > 9:
                    return _plain(411, "send the SOAP body with a Content-Length")
                length = int(raw)
                if length > device.max_body_bytes:
                    return _plain(413, f"body larger than {device.max_body_bytes} bytes")
                return self.rfile.read(length)

            def _serve(self, method: str) -> None:
                body = self._body() if method == "POST" else b""
                if isinstance(body, HttpReply):
                    reply = body
                    self.close_connection = True
                else:
                    host, port = self.connection.getsockname()[:2]
                    request = HttpRequest(method, self.path, body, str(host), int(port))
                    reply = device.handle(request, clock.now())
                if reply.outcome.startswith("auth:") and reply.outcome != "auth:missing":
                    self.server.note_peer_trouble(
                        self.client_address[0], f"ONVIF request refused ({reply.outcome[5:]})"
                    )
                elif reply.outcome in ("malformed", "too-large"):
                    self.server.note_peer_trouble(self.client_address[0], "malformed SOAP")
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply.body)
                if isinstance(body, HttpReply):
                    self._discard_unread()

            def _discard_unread(self) -> None:
                # A body left unread would make close() send a reset, which can destroy
                # the refusal before the client reads it: say we are done writing, then
                # drop what is still coming, up to a cap and within the request deadline.
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_WR)
                    left = MAX_DISCARD_BYTES
                    while left > 0 and self.rfile.read1(min(left, 65536)):
                        left -= 65536
                except OSError:
                    pass

            def do_POST(self) -> None:
                self._serve("POST")

            def do_GET(self) -> None:
                self._serve("GET")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: object) -> None:
                return None

        try:
            self._httpd = BoundedHTTPServer(
                self.address, Handler, self.limits, name=SERVER_NAME, clock=clock
            )
        except OSError as exc:
            host, port = self.address
            raise DeviceIOError(
                f"cannot serve ONVIF on {host or '*'}:{port}: {exc.strerror or exc}"
            ) from exc
        self._httpd.start()
        log.debug("ONVIF device service on port %d", self._httpd.port)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.close()
            self._httpd = None


def _plain(status: int, message: str) -> HttpReply:
    return HttpReply(status, "text/plain; charset=utf-8", message.encode() + b"\n", "http")



def credentials_file(value: str) -> pathlib.Path | None:
    return pathlib.Path(os.path.expanduser(value)) if value else None
