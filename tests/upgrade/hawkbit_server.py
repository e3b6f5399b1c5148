"""A stand-in Eclipse hawkBit server speaking the DDI API's published JSON (tests only).

No hawkBit can run here, so this implements the controller resources a device
uses, with hawkBit's shapes: the base poll (``config.polling.sleep``,
``_links.deploymentBase`` / ``_links.cancelAction``), ``deploymentBase/{id}``
(``deployment.download|update|maintenanceWindow|chunks[].artifacts[]`` with
``hashes`` and ``download-http`` links), ``cancelAction/{id}`` (``stopId``),
both ``feedback`` resources (validated against the ``DdiActionFeedback``
schema: unknown members or values are a 400, as hawkBit's Jackson binding
answers), and artifact downloads with Range.  Every request must carry
``Authorization: TargetToken <token>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator

EXECUTIONS = {"closed", "proceeding", "canceled", "scheduled", "rejected", "resumed"}
EXECUTIONS |= {"download", "downloaded"}
FINISHED = {"success", "failure", "none"}


@dataclasses.dataclass
class Action:
    id: str
    envelope: bytes
    image: bytes
    download: str = "forced"
    update: str = "forced"
    maintenance_window: str | None = None
    envelope_name: str = "fw.suit"
    image_name: str = "fw.img"
    status: str = "open"  # open | closed | canceled
    result: str = ""  # the closing feedback's result.finished
    cancel_requested: bool = False
    module_id: int = 1


@dataclasses.dataclass
class DdiServer:
    host: str
    port: int
    tenant: str
    controller_id: str
    token: str
    sleep: str = "00:05:00"
    actions: list[Action] = dataclasses.field(default_factory=list)
    # (kind, action id, body): kind is "deployment" or "cancel"
    feedback: list[tuple[str, str, dict[str, object]]] = dataclasses.field(default_factory=list)
    requests: list[tuple[str, str, str | None]] = dataclasses.field(default_factory=list)
    artifact_bytes: int = 0
    trickle_delay: float = 0.0  # seconds per 4 KiB of an artifact

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def controller_path(self) -> str:
        return f"/{self.tenant}/controller/v1/{self.controller_id}"

    def current(self) -> Action | None:
        return next((a for a in self.actions if a.status == "open"), None)

    def feedback_of(self, action_id: str, kind: str = "deployment") -> list[dict[str, object]]:
        return [b for k, i, b in self.feedback if i == action_id and k == kind]

    def executions(self, action_id: str) -> list[str]:
        return [_status(b)["execution"] for b in self.feedback_of(action_id)]  # type: ignore[misc]

    def base_polls(self) -> int:
        return sum(1 for m, p, _ in self.requests if m == "GET" and p == self.controller_path)

    def artifact_requests(self) -> list[str]:
        return [p for m, p, _ in self.requests if "/softwaremodules/" in p]


def _status(body: dict[str, object]) -> dict[str, object]:
    status = body["status"]
    assert isinstance(status, dict)
    return status


def _valid_feedback(body: object) -> bool:
    """DdiActionFeedback: {time?, status: {execution, result: {finished, progress?}, details?}}."""
    if not isinstance(body, dict) or set(body) - {"time", "status"} or "status" not in body:
        return False
    status = body["status"]
    if not isinstance(status, dict) or set(status) - {"execution", "result", "details", "code"}:
        return False
    result = status.get("result")
    if status.get("execution") not in EXECUTIONS or not isinstance(result, dict):
        return False
    if set(result) - {"finished", "progress"} or result.get("finished") not in FINISHED:
        return False
    progress = result.get("progress")
    if progress is not None and (not isinstance(progress, dict) or set(progress) != {"cnt", "of"}):
        return False
    details = status.get("details", [])
    return isinstance(details, list) and all(isinstance(d, str) for d in details)


def _deployment_document(server: DdiServer, action: Action) -> dict[str, object]:
    base = f"{server.url}{server.controller_path}/softwaremodules/{action.module_id}/artifacts"

    def artifact(name: str, data: bytes) -> dict[str, object]:
        return {
            "filename": name,
            "hashes": {
                "sha1": hashlib.sha1(data).hexdigest(),
                "md5": hashlib.md5(data).hexdigest(),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
            "size": len(data),
            "_links": {
                "download-http": {"href": f"{base}/{name}"},
                "md5sum-http": {"href": f"{base}/{name}.MD5SUM"},
            },
        }

    deployment: dict[str, object] = {
        "download": action.download,
        "update": action.update,
        "chunks": [
            {
                "part": "os",
                "version": "1.0",
                "name": "edge-agent",
                "artifacts": [
                    artifact(action.envelope_name, action.envelope),
                    artifact(action.image_name, action.image),
                ],
            }
        ],
    }
    if action.maintenance_window is not None:
        deployment["maintenanceWindow"] = action.maintenance_window
    return {
        "id": action.id,
        "deployment": deployment,
        "actionHistory": {"status": "RUNNING", "messages": []},
    }


def _handler(server: DdiServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _authorised(self, method: str) -> bool:
            auth = self.headers.get("Authorization")
            server.requests.append((method, self.path.split("?")[0], auth))
            if auth == f"TargetToken {server.token}":
                return True
            self._json(401, {"errorCode": "hawkbit.server.error.security.unauthorized"})
            return False

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/hal+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _action(self, action_id: str) -> Action | None:
            return next((a for a in server.actions if a.id == action_id), None)

        def do_GET(self) -> None:
            if not self._authorised("GET"):
                return
            path = self.path.split("?")[0]
            prefix = server.controller_path
            if path == prefix:
                self._json(200, self._base())
                return
            match = re.fullmatch(re.escape(prefix) + r"/(deploymentBase|cancelAction)/(\w+)", path)
            action = self._action(match.group(2)) if match else None
            if match and action is not None:
                if match.group(1) == "deploymentBase":
                    self._json(200, _deployment_document(server, action))
                else:
                    self._json(200, {"id": action.id, "cancelAction": {"stopId": action.id}})
                return
            match = re.fullmatch(
                re.escape(prefix) + r"/softwaremodules/(\d+)/artifacts/([\w.]+)", path
            )
            if match:
                self._artifact(int(match.group(1)), match.group(2))
                return
            self._json(404, None)

        def _base(self) -> dict[str, object]:
            links: dict[str, object] = {}
            action = server.current()
            href = f"{server.url}{server.controller_path}"
            if action is not None and action.cancel_requested:
                links["cancelAction"] = {"href": f"{href}/cancelAction/{action.id}"}
            elif action is not None:
                links["deploymentBase"] = {
                    "href": f"{href}/deploymentBase/{action.id}?c=-2122565939"
                }
            return {"config": {"polling": {"sleep": server.sleep}}, "_links": links}

        def _artifact(self, module_id: int, name: str) -> None:
            action = next((a for a in server.actions if a.module_id == module_id), None)
            files = (
                {}
                if action is None
                else {
                    action.envelope_name: action.envelope,
                    action.image_name: action.image,
                }
            )
            body = files.get(name)
            if body is None:
                self._json(404, None)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match:
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                for offset in range(start, len(body), 4096):
                    piece = body[offset : offset + 4096]
                    self.wfile.write(piece)
                    server.artifact_bytes += len(piece)
                    if server.trickle_delay:
                        self.wfile.flush()
                        time.sleep(server.trickle_delay)
            self.close_connection = True

        def do_POST(self) -> None:
            if not self._authorised("POST"):
                return
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            match = re.fullmatch(
                re.escape(server.controller_path)
                + r"/(deploymentBase|cancelAction)/(\w+)/feedback",
                path,
            )
            action = self._action(match.group(2)) if match else None
            if match is None or action is None:
                self._json(404, None)
                return
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not _valid_feedback(body):
                self._json(400, {"errorCode": "hawkbit.server.error.rest.body.notReadable"})
                return
            assert isinstance(body, dict)
            kind = "deployment" if match.group(1) == "deploymentBase" else "cancel"
            server.feedback.append((kind, action.id, body))
            status = _status(body)
            result = status["result"]
            assert isinstance(result, dict)
            if status["execution"] == "closed":
                action.status = "closed" if kind == "deployment" else "canceled"
                action.result = str(result["finished"])
            self._json(200, None)

    return Handler


@contextlib.contextmanager
def serve_ddi(
    tenant: str = "DEFAULT", controller_id: str = "cam-0001", token: str = "t0k3n-sekrit"
) -> Iterator[DdiServer]:
    state = DdiServer("127.0.0.1", 0, tenant, controller_id, token)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
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
