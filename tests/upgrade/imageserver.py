"""A real HTTP image server on loopback with fault injection (tests only)."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import re
import ssl
import threading
import time
from collections.abc import Iterator


@dataclasses.dataclass
class Fault:
    cut_after: int | None = None  # close the connection after this many body bytes
    cuts: int = 1  # how many responses are cut (later ones complete)
    trickle_delay: float = 0.0  # seconds between 1 KiB pieces
    claim_length: int | None = None  # Content-Length to announce instead of the real one
    claims: int = 1  # how many responses announce ``claim_length``
    ignore_range: bool = False
    endless: bool = False  # no Content-Length, bytes forever
    extra: bytes = b""  # appended after the image
    omit_length: bool = False  # no Content-Length: the body ends when the connection closes
    refuse_range: bool = False  # 416 to every Range request (some CDNs, presigned URLs)
    busy: int = 0  # answer this many requests with ``busy_status`` first
    busy_status: int = 503
    retry_after: str | None = None  # the Retry-After header of those answers


@dataclasses.dataclass
class ImageServer:
    host: str
    port: int
    files: dict[str, bytes]
    faults: dict[str, Fault]
    requests: list[tuple[str, str | None]]
    scheme: str = "http"
    # path -> (status, Location) answered instead of a file
    redirects: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    # path -> body bytes written so far (what a re-download would cost)
    sent: dict[str, int] = dataclasses.field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"


def _handler(server: ImageServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            server.requests.append((self.path, range_header))
            if self.path in server.redirects:
                status, location = server.redirects[self.path]
                self._empty(status, {"Location": location})
                return
            body = server.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            fault = server.faults.get(self.path, Fault())
            if fault.busy > 0:
                fault.busy -= 1
                retry = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._empty(fault.busy_status, retry)
                return
            if fault.refuse_range and range_header:
                self._empty(416, {"Content-Range": f"bytes */{len(body)}"})
                return
            body = body + fault.extra
            start = 0
            match = re.match(r"bytes=(\d+)-$", range_header or "")
            if match and not fault.ignore_range:
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            if not (fault.endless or fault.omit_length):
                length = len(payload)
                if fault.claim_length is not None and fault.claims > 0:
                    fault.claims -= 1
                    length = fault.claim_length
                self.send_header("Content-Length", str(length))
            self.send_header("Connection", "close")
            self.end_headers()
            self._send(payload, fault)

        def _empty(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _count(self, data: bytes) -> None:
            self.wfile.write(data)
            server.sent[self.path] = server.sent.get(self.path, 0) + len(data)

        def _send(self, payload: bytes, fault: Fault) -> None:
            with contextlib.suppress(OSError):
                if fault.endless:
                    while True:
                        self.wfile.write(b"\xee" * 65536)
                limit = len(payload)
                if fault.cut_after is not None and fault.cuts > 0:
                    fault.cuts -= 1
                    limit = min(limit, fault.cut_after)
                if fault.trickle_delay:
                    for i in range(0, limit, 1024):
                        self._count(payload[i : min(i + 1024, limit)])
                        self.wfile.flush()
                        time.sleep(fault.trickle_delay)
                else:
                    self._count(payload[:limit])
                self.wfile.flush()
            self.close_connection = True

    return Handler


@contextlib.contextmanager
def serve_images(tls: ssl.SSLContext | None = None) -> Iterator[ImageServer]:
    state = ImageServer("127.0.0.1", 0, {}, {}, [], "https" if tls else "http")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
