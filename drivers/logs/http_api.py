"""The LAN API's log bundle endpoint, as a plain function the HTTP server calls.

``GET /api/v1/logs/bundle?since=&until=&tail=&level=&grep=`` with
``Authorization: Bearer <technician token or verification code>``.  Failed
attempts share the serial console's :class:`~agent.logs.pull.AuthLimiter`, so
a LAN attacker cannot guess faster than a person at the console.  Like
``logs.upload``, a bundle goes out only while ``troubleshooting_logs`` is
consented (403 and an audit record otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from agent.errors import BadDataError, DeviceIOError
from agent.events import Event
from agent.logs import codes
from agent.logs.bundle import BundleQuery
from agent.logs.pull import AuthLimiter, BundleProvider, TechnicianSecrets
from agent.ports import AuditSink, Clock
from agent.purposes import Purpose
from drivers.clock import SystemClock
from drivers.httpserve import BoundedHTTPServer, BoundedRequestHandler, ServerLimits

BUNDLE_PATH = "/api/v1/logs/bundle"
MAX_QUERY_CHARS = 1024


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _text(status: int, message: str, **headers: str) -> HttpResponse:
    return HttpResponse(
        status, {"Content-Type": "text/plain; charset=utf-8", **headers}, message.encode() + b"\n"
    )


class LogsHttpApi:
    def __init__(
        self,
        bundles: BundleProvider,
        technician_secrets: TechnicianSecrets,
        limiter: AuthLimiter,
        *,
        is_granted: Callable[[Purpose], bool],
        audit: AuditSink | None = None,
    ) -> None:
        self._bundles = bundles
        self._secrets = technician_secrets
        self._limiter = limiter
        # Required, no default: an endpoint built without a consent check must not exist.
        self._is_granted = is_granted
        self._audit = audit

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], now: float
    ) -> HttpResponse:
        if len(target) > MAX_QUERY_CHARS:
            return _text(414, "request target too long")
        url = urllib.parse.urlsplit(target)
        if url.path != BUNDLE_PATH:
            return _text(404, "not found")
        if method != "GET":
            return _text(405, "use GET", Allow="GET")
        wait = self._limiter.retry_after(now)
        if wait > 0:
            return _text(429, codes.AUTH_LOCKED_OUT.code, **{"Retry-After": str(int(wait) + 1)})
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        scheme, _, presented = auth.partition(" ")
        method_used = (
            self._secrets.check_bearer(presented.strip())
            if scheme.lower() == "bearer" and presented
            else None
        )
        if method_used is None:
            self._limiter.failed(now)
            return _text(401, codes.AUTH_FAILED.code, **{"WWW-Authenticate": "Bearer"})
        self._limiter.succeeded()
        # Checked after authentication, so only a token holder learns the consent state;
        # the same rule as logs.upload over MQTT: no troubleshooting_logs, no bundle.
        if not self._is_granted(Purpose.TROUBLESHOOTING_LOGS):
            if self._audit is not None:
                self._audit.record(
                    "logs.pull.refused",
                    {"channel": "lan", "method": method_used, "reason": "consent",
                     "purpose": Purpose.TROUBLESHOOTING_LOGS.value},
                    now,
                )
            return _text(
                403,
                f"{codes.CONSENT_MISSING.code}: the owner has not granted (or has withdrawn) "
                f"{Purpose.TROUBLESHOOTING_LOGS.value} consent; no logs leave the device",
            )
        try:
            params = dict(urllib.parse.parse_qsl(url.query, max_num_fields=10))
            query = BundleQuery.from_args(params)
        except ValueError:
            return _text(400, "malformed query string")
        except BadDataError as exc:
            return _text(400, str(exc))
        bundle = self._bundles(query, now)
        if self._audit is not None:
            self._audit.record(
                "logs.pull",
                {"channel": "lan", "method": method_used, "bytes": len(bundle.data),
                 "lines": bundle.lines},
                now,
            )
        return HttpResponse(
            200,
            {
                "Content-Type": "application/x-ndjson",
                "X-Bundle-Truncated": "true" if bundle.truncated else "false",
                "X-Bundle-SHA256": hashlib.sha256(bundle.data).hexdigest(),
            },
            bundle.data,
        )


class LogsLanServer:
    """``agent.ports.Service`` serving :class:`LogsHttpApi` over HTTP on the LAN."""

    name = "logs-lan"

    def __init__(
        self,
        api: LogsHttpApi,
        address: tuple[str, int],
        clock: Clock | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.api = api
        self.address = address
        self.clock = clock or SystemClock()
        self.limits = limits or ServerLimits()
        self._httpd: BoundedHTTPServer | None = None

    @property
    def port(self) -> int:
        return self._httpd.port if self._httpd else 0

    def start(self) -> None:
        api, clock = self.api, self.clock

        # Bounded: timeouts, connection caps and bounded threads (drivers/httpserve.py).
        class Handler(BoundedRequestHandler):
            def _serve(self, method: str) -> None:
                response = api.handle(method, self.path, dict(self.headers), clock.now())
                self.send_response(response.status)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: object) -> None:
                # The request line carries the query; the access log is not where it belongs.
                return None

        try:
            self._httpd = BoundedHTTPServer(
                self.address, Handler, self.limits, name="logs-lan", clock=clock
            )
        except OSError as exc:
            raise DeviceIOError(f"cannot serve logs on {self.address}: {exc.strerror}") from exc
        self._httpd.start()

    def tick(self, now: float) -> Sequence[Event]:
        return ()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.close()
            self._httpd = None
