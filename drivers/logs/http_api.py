"""The LAN API's log bundle endpoint, as a plain function the HTTP server calls.

``GET /api/v1/logs/bundle?since=&until=&tail=&level=&grep=`` with
``Authorization: Bearer <technician token or verification code>``.  Failed
attempts share the serial console's :class:`~agent.logs.pull.AuthLimiter`, so
a LAN attacker cannot guess faster than a person at the console.
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.parse
from collections.abc import Mapping

from agent.errors import BadDataError
from agent.logs import codes
from agent.logs.bundle import BundleQuery
from agent.logs.pull import AuthLimiter, BundleProvider, TechnicianSecrets
from agent.ports import AuditSink

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
        audit: AuditSink | None = None,
    ) -> None:
        self._bundles = bundles
        self._secrets = technician_secrets
        self._limiter = limiter
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
