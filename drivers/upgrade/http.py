"""HTTP(S) for upgrades (http.client): streaming image download with Range resume, small GETs.

* Redirects (301/302/303/307/308) are followed up to ``max_redirects`` hops; a
  loop, too many hops, a non-http(s) target or https -> http (unless allowed)
  is a :class:`RedirectError`.  Credentials (``headers``) go to the first
  origin only, never across a redirect to another host.  The image's digest
  still decides, wherever the bytes came from.
* A 416 to a Range request falls back to a full GET (the caller skips what it has).
* 429/503 become :class:`ServerBusyError` carrying the server's ``Retry-After``.
* TLS: ``ca_file`` replaces the system trust store (a private PKI only),
  ``extra_ca_file`` is added to it (a CDN on public CAs plus a private mirror).

``http.client`` and ``ssl`` are imported at the first request, not at import:
the upgrade service is built at boot but fetches only every few hours.
"""

from __future__ import annotations

import dataclasses
import email.utils
import pathlib
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.errors import (
    ConnectionLostError,
    DecodeError,
    DeviceTimeoutError,
    NotFoundError,
    TooLargeError,
    VerificationError,
)
from agent.upgrade.errors import RedirectError, ServerBusyError
from agent.upgrade.settings import UpgradeSettings

if TYPE_CHECKING:
    import http.client
    import ssl

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
USER_AGENT = "edge-agent-upgrade/1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BUSY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_SECONDS = 7 * 86400.0


@dataclasses.dataclass(frozen=True)
class HttpOptions:
    timeout: float = 30.0
    ca_file: pathlib.Path | None = None  # replaces the system trust store
    extra_ca_file: pathlib.Path | None = None  # added to it
    max_redirects: int = 5
    allow_https_to_http: bool = False
    # Sent to the URI's own origin only (e.g. a hawkBit target token); never after a
    # redirect to another scheme, host or port.
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def http_options(
    settings: UpgradeSettings, headers: Mapping[str, str] | None = None
) -> HttpOptions:
    """The client options ``[upgrade]`` configures (``headers``: credentials for the origin)."""
    return HttpOptions(
        timeout=settings.io_timeout_seconds,
        ca_file=settings.ca_file,
        extra_ca_file=settings.extra_ca_file,
        max_redirects=settings.max_redirects,
        allow_https_to_http=settings.allow_https_to_http_redirects,
        headers=dict(headers or {}),
    )


def tls_context(ca_file: pathlib.Path | None, extra_ca_file: pathlib.Path | None) -> ssl.SSLContext:
    import ssl

    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if extra_ca_file is not None:
            context.load_verify_locations(cafile=str(extra_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise DecodeError(f"cannot load the upgrade CA bundle: {exc}") from exc
    return context


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_SECONDS)


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _split(uri: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DecodeError(f"not an http(s) URI: {uri[:80]!r}")
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError as exc:
        raise DecodeError(f"bad port in {uri[:80]!r}") from exc
    return parts


class HttpClient:
    """One configured client; the TLS context is built once, at the first https request."""

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self._context: ssl.SSLContext | None = None

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        import http.client

        host = parts.hostname or ""
        if parts.scheme == "https":
            if self._context is None:
                self._context = tls_context(self.options.ca_file, self.options.extra_ca_file)
            return http.client.HTTPSConnection(
                host, parts.port, timeout=self.options.timeout, context=self._context
            )
        return http.client.HTTPConnection(host, parts.port, timeout=self.options.timeout)

    def _send(
        self,
        uri: str,
        method: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        import http.client
        import ssl

        parts = _split(uri)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self._connect(parts)
        try:
            connection.request(
                method, path, body=body, headers={"User-Agent": USER_AGENT, **headers}
            )
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
        return connection, response

    def open(
        self,
        uri: str,
        headers: Mapping[str, str] | None = None,
        *,
        method: str = "GET",
        body: bytes | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        """Send a request, following redirects for GET; the final URI comes back too.

        The response status is not checked here (see :func:`check_status`).
        """
        first = _split(uri)
        extra = dict(headers or {})
        current = uri
        seen = {uri}
        for _ in range(self.options.max_redirects + 1):
            parts = _split(current)
            sent = dict(extra)
            if _origin(parts) == _origin(first):
                sent.update(self.options.headers)
            connection, response = self._send(current, method, sent, body)
            if method != "GET" or response.status not in REDIRECT_STATUSES:
                return connection, response, current
            location = response.getheader("Location")
            connection.close()
            if not location:
                raise ConnectionLostError(
                    f"{current[:80]}: HTTP {response.status} without Location"
                )
            target = urllib.parse.urljoin(current, location.strip())
            if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
                raise RedirectError(
                    f"{current[:80]}: redirect to a non-http(s) URI {target[:80]!r}"
                )
            if (
                parts.scheme == "https"
                and target.startswith("http://")
                and not self.options.allow_https_to_http
            ):
                raise RedirectError(
                    f"refused redirect from https to http ({target[:80]}); "
                    "upgrade.allow_https_to_http_redirects allows it"
                )
            if target in seen:
                raise RedirectError(f"redirect loop at {target[:80]}")
            seen.add(target)
            current = target
        raise RedirectError(f"more than {self.options.max_redirects} redirects from {uri[:80]}")


def check_status(
    uri: str,
    connection: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    ok: frozenset[int] = frozenset({200}),
) -> None:
    """Close and raise unless ``response.status`` is in ``ok``."""
    status = response.status
    if status in ok:
        return
    connection.close()
    if status in (404, 410):
        raise NotFoundError(f"{uri[:80]}: HTTP {status}")
    if status in BUSY_STATUSES:
        delay = parse_retry_after(response.getheader("Retry-After"), time.time())
        raise ServerBusyError(f"{uri[:80]}: HTTP {status} {response.reason}", delay)
    raise ConnectionLostError(f"{uri[:80]}: HTTP {status} {response.reason}")


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


class HttpImageSource:
    """:class:`agent.upgrade.ports.ImageSource` over http.client."""

    fetches_uri = True

    def __init__(
        self,
        timeout_seconds: float = 30.0,
        ca_file: pathlib.Path | None = None,
        *,
        options: HttpOptions | None = None,
    ) -> None:
        self.client = HttpClient(options or HttpOptions(timeout_seconds, ca_file))

    def open(self, uri: str, offset: int) -> HttpImageStream:
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        connection, response, final = self.client.open(uri, headers)
        if response.status == 416 and offset > 0:
            # Some CDNs refuse ranges (presigned URLs, changed objects): take it all.
            connection.close()
            connection, response, final = self.client.open(uri)
        check_status(final, connection, response, frozenset({200, 206}))
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


def read_bounded(
    uri: str,
    connection: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    max_bytes: int,
) -> bytes:
    """The whole body of ``response``, refusing more than ``max_bytes``; closes."""
    import http.client

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


def fetch_bounded(
    uri: str,
    max_bytes: int,
    timeout_seconds: float = 30.0,
    ca_file: pathlib.Path | None = None,
    *,
    options: HttpOptions | None = None,
) -> bytes:
    """GET a small document (a manifest), refusing more than ``max_bytes``."""
    client = HttpClient(options or HttpOptions(timeout_seconds, ca_file))
    connection, response, final = client.open(uri)
    check_status(final, connection, response)
    return read_bounded(final, connection, response, max_bytes)
