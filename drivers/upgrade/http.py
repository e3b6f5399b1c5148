"""Streaming HTTP(S) image download with Range resume (http.client), and manifest fetch.

``http.client`` and ``ssl`` are imported at the first request, not at import:
the upgrade service is built at boot but fetches only every few hours.
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse
from typing import TYPE_CHECKING

from agent.errors import (
    ConnectionLostError,
    DecodeError,
    DeviceTimeoutError,
    NotFoundError,
    TooLargeError,
    VerificationError,
)

if TYPE_CHECKING:
    import http.client

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
USER_AGENT = "edge-agent-upgrade/1"


class HttpImageStream:
    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        start: int,
        length: int | None,
    ) -> None:
        self._connection = connection
        self._response = response
        self.start = start
        self.length = length

    def read(self, size: int) -> bytes:
        import http.client

        try:
            return self._response.read1(size)
        except TimeoutError as exc:
            raise DeviceTimeoutError("image server stalled") from exc
        except (http.client.HTTPException, OSError) as exc:
            raise ConnectionLostError(f"image download cut: {exc}") from exc

    def close(self) -> None:
        self._response.close()
        self._connection.close()


def _connect(
    uri: str, timeout: float, ca_file: pathlib.Path | None
) -> tuple[http.client.HTTPConnection, str]:
    import http.client
    import ssl

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DecodeError(f"not an http(s) URI: {uri[:80]!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        port = parts.port
    except ValueError as exc:
        raise DecodeError(f"bad port in {uri[:80]!r}") from exc
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            parts.hostname,
            port,
            timeout=timeout,
            context=ssl.create_default_context(cafile=str(ca_file) if ca_file else None),
        ), path
    return http.client.HTTPConnection(parts.hostname, port, timeout=timeout), path


def _request(
    uri: str, timeout: float, headers: dict[str, str], ca_file: pathlib.Path | None = None
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    import http.client
    import ssl

    connection, path = _connect(uri, timeout, ca_file)
    try:
        connection.request("GET", path, headers={"User-Agent": USER_AGENT, **headers})
        response = connection.getresponse()
    except TimeoutError as exc:
        connection.close()
        raise DeviceTimeoutError(f"no answer from {uri[:80]}") from exc
    except ssl.SSLCertVerificationError as exc:
        connection.close()
        raise VerificationError(
            f"{uri[:80]}: TLS certificate rejected: {exc.verify_message}"
        ) from exc
    except (http.client.HTTPException, OSError) as exc:
        connection.close()
        raise ConnectionLostError(f"cannot fetch {uri[:80]}: {exc}") from exc
    if response.status in (404, 410):
        connection.close()
        raise NotFoundError(f"{uri[:80]}: HTTP {response.status}")
    if response.status not in (200, 206):
        connection.close()
        raise ConnectionLostError(f"{uri[:80]}: HTTP {response.status} {response.reason}")
    return connection, response


class HttpImageSource:
    """:class:`agent.upgrade.ports.ImageSource` over http.client."""

    def __init__(self, timeout_seconds: float = 30.0, ca_file: pathlib.Path | None = None) -> None:
        self.timeout = timeout_seconds
        self.ca_file = ca_file

    def open(self, uri: str, offset: int) -> HttpImageStream:
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        connection, response = _request(uri, self.timeout, headers, self.ca_file)
        length_header = response.getheader("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        start = 0
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.getheader("Content-Range") or "")
            if not match:
                connection.close()
                raise ConnectionLostError("206 reply without a usable Content-Range")
            start = int(match.group(1))
        return HttpImageStream(connection, response, start, length)


def fetch_bounded(
    uri: str, max_bytes: int, timeout_seconds: float = 30.0, ca_file: pathlib.Path | None = None
) -> bytes:
    """GET a small document (a manifest), refusing more than ``max_bytes``."""
    import http.client

    connection, response = _request(uri, timeout_seconds, {}, ca_file)
    try:
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise TooLargeError(f"{uri[:80]}: {declared} bytes exceeds {max_bytes}")
        data = response.read(max_bytes + 1)
    except TimeoutError as exc:
        raise DeviceTimeoutError(f"{uri[:80]} stalled") from exc
    except (http.client.HTTPException, OSError) as exc:
        raise ConnectionLostError(f"cannot fetch {uri[:80]}: {exc}") from exc
    finally:
        connection.close()
    if len(data) > max_bytes:
        raise TooLargeError(f"{uri[:80]}: more than {max_bytes} bytes")
    return data
