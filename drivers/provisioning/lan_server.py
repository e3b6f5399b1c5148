"""The LAN provisioning API over HTTP (http.server), serving :class:`LanProvisioning`.

Routes (JSON bodies, binary values base64):

* ``GET  /provision/v1/info``        serial number, window state
* ``GET  /provision/v1/networks``    scan results (window open only)
* ``POST /provision/v1/pake``        ``{pake}`` -> ``{session, pake}``
* ``POST /provision/v1/confirm``     ``{session, confirm}`` -> ``{confirm}``
* ``POST /provision/v1/credentials`` ``{session, seq, sealed}`` -> 202, connecting
* ``POST /provision/v1/status``      ``{session, seq, tag}`` -> ``{sealed}``
* ``POST /provision/v1/bind``        ``{session, seq, sealed}`` -> ``{sealed}``: the
  owner's account and key in, the new device id out; 409 when already bound

Bodies are capped; every failure is a short JSON error without detail that
could help a guesser.  Request lines are logged at debug level only and never
carry secrets.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from http import HTTPStatus
from typing import Any

from agent.errors import (
    BadDataError,
    DecodeError,
    EdgeAgentError,
    NotFoundError,
    TooLargeError,
    TransportError,
    VerificationError,
)
from agent.ports import Clock
from agent.provisioning.lan import BindOwner, LanProvisioning
from agent.provisioning.limits import LockedOutError, WindowClosedError
from agent.provisioning.wifi import AccessPoint, ConnectOutcome, ConnectResult, WifiCredentials
from drivers.httpserve import BoundedHTTPServer, BoundedRequestHandler, ServerLimits

log = logging.getLogger(__name__)

PREFIX = "/provision/v1/"
MAX_BODY = 4096


def b64decode(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * MAX_BODY:
        raise DecodeError(f"{name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{name} is not valid base64") from exc


def b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _field(body: Mapping[str, object], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise DecodeError(f"{name} is missing or has the wrong type")
    return value


def _status_for(exc: EdgeAgentError) -> tuple[HTTPStatus, str]:
    if isinstance(exc, LockedOutError):
        return HTTPStatus.TOO_MANY_REQUESTS, "too many failed attempts"
    if isinstance(exc, WindowClosedError):
        return HTTPStatus.GONE, "provisioning window is closed"
    if isinstance(exc, VerificationError):
        return HTTPStatus.FORBIDDEN, "verification failed"
    if isinstance(exc, NotFoundError):
        return HTTPStatus.NOT_FOUND, "no such session"
    if isinstance(exc, TooLargeError):
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large"
    if isinstance(exc, DecodeError):
        return HTTPStatus.BAD_REQUEST, str(exc)[:200]
    if isinstance(exc, BadDataError):
        return HTTPStatus.CONFLICT, str(exc)[:200]
    return HTTPStatus.SERVICE_UNAVAILABLE, "temporarily unavailable"


class LanApiServer:
    """Runs the HTTP server on its own threads until :meth:`stop`."""

    def __init__(
        self,
        core: LanProvisioning,
        scan: Callable[[], list[AccessPoint]],
        submit_connect: Callable[[WifiCredentials], Future[ConnectResult]],
        clock: Clock,
        address: tuple[str, int],
        *,
        lock: threading.Lock | None = None,
        bind_owner: BindOwner | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.core = core
        self._bind_owner = bind_owner
        self._scan = scan
        self._submit_connect = submit_connect
        self._clock = clock
        self.lock = lock or threading.Lock()
        handler = type("LanApiHandler", (_Handler,), {"api": self})
        try:
            # Bounded: timeouts, connection caps and bounded threads (drivers/httpserve.py).
            self._server = BoundedHTTPServer(
                address, handler, limits or ServerLimits(), name="provisioning-lan", clock=clock
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {address[0]}:{address[1]}: {exc}") from exc

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.close()

    # --- route handlers (called from request threads) -------------------------

    def handle_get(self, route: str) -> Mapping[str, object]:
        now = self._clock.now()
        if route == "info":
            with self.lock:
                return self.core.info(now)
        if route == "networks":
            with self.lock:
                self.core.window.require_open(now)
            networks = self._scan()
            return {
                "networks": [
                    {"ssid": ap.ssid, "signal_dbm": ap.signal_dbm, "security": ap.security.value}
                    for ap in networks[:64]
                    if ap.ssid
                ]
            }
        raise NotFoundError("no such route")

    def handle_post(self, route: str, body: Mapping[str, object]) -> Mapping[str, object]:
        now = self._clock.now()
        if route == "pake":
            msg_a = b64decode(body.get("pake"), "pake")
            with self.lock:
                session_id, msg_b = self.core.start(msg_a, now)
            return {"session": session_id, "pake": b64encode(msg_b)}
        session_id = _field(body, "session", str)
        if route == "confirm":
            confirm_a = b64decode(body.get("confirm"), "confirm")
            with self.lock:
                confirm_b = self.core.confirm(session_id, confirm_a, now)
            return {"confirm": b64encode(confirm_b)}
        if route == "credentials":
            seq = _field(body, "seq", int)
            sealed = b64decode(body.get("sealed"), "sealed")
            with self.lock:
                credentials = self.core.submit(session_id, seq, sealed, now)
            future = self._submit_connect(credentials)
            future.add_done_callback(lambda done: self._finished(session_id, done))
            return {"state": "connecting"}
        if route == "status":
            seq = _field(body, "seq", int)
            tag = b64decode(body.get("tag"), "tag")
            with self.lock:
                sealed = self.core.status(session_id, seq, tag, now)
            return {"sealed": b64encode(sealed)}
        if route == "bind" and self._bind_owner is not None:
            seq = _field(body, "seq", int)
            sealed = b64decode(body.get("sealed"), "sealed")
            with self.lock:
                answer = self.core.bind(session_id, seq, sealed, now, self._bind_owner)
            return {"sealed": b64encode(answer)}
        raise NotFoundError("no such route")

    def _finished(self, session_id: str, done: Future[ConnectResult]) -> None:
        try:
            result = done.result()
        except Exception:  # the worker already wrapped and audited; keep the API alive
            log.exception("provisioning connect attempt failed")
            result = ConnectResult(ConnectOutcome.FAILED, detail="internal error")
        with self.lock:
            self.core.connect_finished(session_id, result, self._clock.now())


class _Handler(BoundedRequestHandler):
    api: LanApiServer
    server_version = "edge-agent-provisioning/1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("lan api %s: " + format, self.client_address[0], *args)

    def _reply(self, status: HTTPStatus, body: Mapping[str, object], **headers: str) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(payload)

    def _route(self) -> str:
        path = self.path.split("?", 1)[0]
        if not path.startswith(PREFIX):
            raise NotFoundError("no such route")
        return path[len(PREFIX) :]

    def _dispatch(self, work: Callable[[], Mapping[str, object]], ok: HTTPStatus) -> None:
        try:
            self._reply(ok, work())
        except LockedOutError as exc:
            status, message = _status_for(exc)
            self._reply(status, {"error": message}, Retry_After=str(int(exc.retry_after) + 1))
        except EdgeAgentError as exc:
            status, message = _status_for(exc)
            self._reply(status, {"error": message})
        except OSError:
            # The peer was too slow or went away mid-body: the server logs one line.
            raise
        except Exception:  # a bug must cost one request, not the API
            log.exception("LAN provisioning request failed")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def do_GET(self) -> None:
        self._dispatch(lambda: self.api.handle_get(self._route()), HTTPStatus.OK)

    def do_POST(self) -> None:
        def work() -> Mapping[str, object]:
            route = self._route()
            body = self._read_body()
            return self.api.handle_post(route, body)

        route = self.path.split("?", 1)[0]
        ok = HTTPStatus.ACCEPTED if route == PREFIX + "credentials" else HTTPStatus.OK
        self._dispatch(work, ok)

    def _read_body(self) -> Mapping[str, object]:
        if self.headers.get("Transfer-Encoding"):
            raise DecodeError("chunked bodies are not accepted")
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isdigit():
            raise DecodeError("Content-Length is required")
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True
            raise TooLargeError(f"body larger than {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise DecodeError("body is not JSON") from exc
        if not isinstance(body, dict):
            raise DecodeError("body must be a JSON object")
        return body
