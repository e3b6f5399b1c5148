"""A real nginx (Debian's nginx-light, installed by ``make test``) serving a temp directory.

Each test passes the ``location`` blocks it needs (redirects, a 416 for ranges,
a 503 with Retry-After while a flag file exists); every request lands in an
access log parsed by :meth:`Nginx.requests`.  An optional TLS server block uses
the test PKI's certificate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

from tests.support.broker import free_port

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
LOG_FORMAT = "$request_uri|$http_range|$status|$body_bytes_sent"


def nginx_binary() -> str:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("nginx is not installed; `make test` installs nginx-light with apt-get")


@dataclasses.dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    status: int
    sent: int


@dataclasses.dataclass
class Nginx:
    root: pathlib.Path
    port: int
    tls_port: int | None
    access_log: pathlib.Path

    def url(self, path: str, *, tls: bool = False) -> str:
        if tls:
            return f"https://127.0.0.1:{self.tls_port}{path}"
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, prefix: str = "") -> list[Request]:
        found = []
        for line in self.access_log.read_text().splitlines():
            path, range_, status, sent = line.split("|")
            if path.startswith(prefix):
                found.append(
                    Request(path, None if range_ == "-" else range_, int(status), int(sent))
                )
        return found


def _config(
    workdir: pathlib.Path,
    root: pathlib.Path,
    port: int,
    locations: str,
    tls: tuple[int, pathlib.Path, pathlib.Path, str] | None,
) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    tls_block = ""
    if tls is not None:
        tls_port, cert, key, tls_locations = tls
        tls_block = f"""
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
{tls_locations}
    }}"""
    return f"""user root;
worker_processes 1;
daemon off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
{temp}
    log_format edge '{LOG_FORMAT}';
    access_log {workdir / "access.log"} edge;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
{locations}
    }}{tls_block}
}}
"""


def _wait_listening(port: int, proc: subprocess.Popen[bytes], error_log: pathlib.Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = error_log.read_text() if error_log.exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}: {log[-1500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("nginx did not start listening within 10 s")


@contextlib.contextmanager
def run_nginx(
    workdir: pathlib.Path,
    locations: str = "",
    *,
    tls: tuple[pathlib.Path, pathlib.Path] | None = None,
    tls_locations: str = "",
) -> Iterator[Nginx]:
    """nginx on free loopback ports with ``locations`` in its server block; stopped after."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "www"
    root.mkdir(exist_ok=True)
    port = free_port()
    tls_port = free_port() if tls else None
    tls_spec = (tls_port, tls[0], tls[1], tls_locations) if tls and tls_port else None
    conf = workdir / "nginx.conf"
    conf.write_text(_config(workdir, root, port, locations, tls_spec))
    (workdir / "access.log").touch()
    proc = subprocess.Popen(
        [nginx_binary(), "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc, workdir / "error.log")
        if tls_port is not None:
            _wait_listening(tls_port, proc, workdir / "error.log")
        yield Nginx(root, port, tls_port, workdir / "access.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
