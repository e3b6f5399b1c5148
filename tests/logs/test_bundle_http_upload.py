from __future__ import annotations

import http.client
import http.server
import json
import pathlib
import stat
import threading
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.errors import ConsentRequiredError, DecodeError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.bundle import TRUNCATION_MARKER, BundleQuery, build_bundle
from agent.logs.pull import AuthLimiter, TechnicianSecrets
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from agent.purposes import Purpose
from drivers.cli import main
from drivers.logs.feature import bundle_provider, logs_upload_handler
from drivers.logs.http_api import BUNDLE_PATH, LogsHttpApi
from drivers.logs.store import LogStore
from tests.support.clock import FixedClock

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _lines(count: int, start: float = 1000.0) -> list[str]:
    return [
        json.dumps({"ts": start + i, "level": LEVELS[i % 4], "logger": "t",
                    "msg": f"event {i} user=Ophelia"})
        for i in range(count)
    ]


def _body(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = [json.loads(x) for x in data.decode().splitlines()]
    return rows[0], rows[1:]


def test_filters_combine() -> None:
    query = BundleQuery(since=1010, until=1050, level="ERROR", grep="EVENT 3", tail=2)
    header, rows = _body(build_bundle(_lines(100), query, Redactor(), max_bytes=1 << 20,
                                      now=0).data)
    assert [r["msg"] for r in rows] == ["event 35 user=[REDACTED:user]",
                                        "event 39 user=[REDACTED:user]"]
    assert header["lines"] == 2 and header["truncated"] is False


def test_size_cap_keeps_newest_and_marks_truncation() -> None:
    bundle = build_bundle(_lines(2000), BundleQuery(), Redactor(), max_bytes=8192, now=0)
    header, rows = _body(bundle.data)
    assert len(bundle.data) <= 8192
    assert header["truncated"] is True and bundle.dropped_lines == 2000 - bundle.lines
    assert rows[0]["marker"] == TRUNCATION_MARKER
    assert rows[-1]["msg"].startswith("event 1999")


def test_grep_cannot_probe_redacted_values() -> None:
    bundle = build_bundle(_lines(10), BundleQuery(grep="ophelia"), Redactor(), max_bytes=1 << 20,
                          now=0)
    header, rows = _body(bundle.data)
    assert bundle.lines == 0 and rows == []
    assert header["query"] == {"level": "DEBUG", "grep": "(given, not shown)"}


def test_corrupt_lines_are_counted_not_fatal() -> None:
    bundle = build_bundle(["{not json", "[1]", *_lines(3)], BundleQuery(), Redactor(),
                          max_bytes=1 << 20, now=0)
    assert bundle.unparseable_lines == 2 and bundle.lines == 3


@pytest.mark.parametrize("args", [{"tail": -1}, {"level": "LOUD"}, {"grep": "x" * 500},
                                  {"since": "yesterday"}, {"since": [1]}, {"tail": "nan"},
                                  {"tail": float("inf")}, {"until": "-inf"}, {"tail": 1e300},
                                  {"level": 3}, {"tail": True}])
def test_hostile_query_arguments_are_rejected(args: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        BundleQuery.from_args(args)


@pytest.fixture
def store(tmp_path: pathlib.Path) -> LogStore:
    logs = LogStore(tmp_path, LogSettings(), keys=DataKeys(StateLayout(tmp_path)))
    logs.directory.mkdir()
    logs.live_path.write_text("\n".join(_lines(50)) + "\n")
    return logs


def test_upload_refused_without_troubleshooting_consent(store: LogStore) -> None:
    granted: set[Purpose] = set()
    handler = logs_upload_handler(
        bundle_provider(store, Redactor(), LogSettings()),
        granted.__contains__,
        clock=FixedClock(1.0),
    )
    with pytest.raises(ConsentRequiredError) as refused:
        handler({"tail": 5})
    assert refused.value.purpose == "troubleshooting_logs"
    granted.add(Purpose.TROUBLESHOOTING_LOGS)
    reply = handler({"tail": 5, "level": "INFO"})
    assert reply["lines"] == 5 and b"Ophelia" not in bytes(reply["bundle"])  # type: ignore[call-overload]


class _Server:
    def __init__(self, api: LogsHttpApi) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                response = api.handle("GET", self.path, dict(self.headers), outer.now)
                self.send_response(response.status)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.now = 1000.0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def get(self, target: str, token: str | None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body


@pytest.fixture
def server(store: LogStore, tmp_path: pathlib.Path) -> Iterator[_Server]:
    audit = AuditLog.in_state_dir(tmp_path)
    api = LogsHttpApi(
        bundle_provider(store, Redactor(), LogSettings()),
        TechnicianSecrets(lambda: "code-1", lambda: "token-1"),
        AuthLimiter(2, 30.0),
        is_granted=lambda purpose: purpose is Purpose.TROUBLESHOOTING_LOGS,
        audit=audit,
    )
    srv = _Server(api)
    yield srv
    srv.httpd.shutdown()
    audit.close()


def test_lan_bundle_with_token(server: _Server) -> None:
    status, body = server.get(f"{BUNDLE_PATH}?tail=3&level=DEBUG", "token-1")
    assert status == 200
    header, rows = _body(body)
    assert header["lines"] == 3 and len(rows) == 3


def test_lan_rejects_bad_token_then_locks_out(server: _Server) -> None:
    assert server.get(BUNDLE_PATH, None)[0] == 401
    assert server.get(BUNDLE_PATH, "wrong")[0] == 401
    assert server.get(BUNDLE_PATH, "token-1")[0] == 429
    server.now += 31
    assert server.get(BUNDLE_PATH, "token-1")[0] == 200


def test_lan_bad_query_and_path(server: _Server) -> None:
    assert server.get(f"{BUNDLE_PATH}?tail=abc", "code-1")[0] == 400
    assert server.get("/api/v1/other", "code-1")[0] == 404


def test_cli_bundle_writes_file(
    store: LogStore, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle.jsonl"
    code = main(["logs", "bundle", "--state-dir", str(tmp_path), "--since", "1040",
                 "--level", "WARNING", "-o", str(out)])
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # troubleshooting logs: the owner's alone
    _header, rows = _body(out.read_bytes())
    assert [r["msg"].split()[1] for r in rows] == ["42", "43", "46", "47"]
    assert AuditLog.in_state_dir(tmp_path).entries()[-1].kind == "logs.pull"
    assert main(["logs", "bundle", "--state-dir", str(tmp_path), "--since", "soon"]) == 2


def test_cli_data_export_and_erase(tmp_path: pathlib.Path) -> None:
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "a.jpg").write_bytes(b"SNAPSHOT-MARKER-12")
    out = tmp_path / "export.zip"
    assert main(["data", "export", "--state-dir", str(tmp_path), "-o", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        assert "snapshots" in json.loads(archive.read("export.json"))["holders"]
        # The snapshot is a file of the archive, not base64 inside the JSON.
        assert archive.read("files/snapshots/a.jpg") == b"SNAPSHOT-MARKER-12"
        assert b"SNAPSHOT-MARKER-12" not in archive.read("export.json")
    assert main(["data", "erase", "--state-dir", str(tmp_path)]) == 2  # needs --yes
    assert main(["data", "erase", "--yes", "--state-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "snapshots" / "a.jpg").exists()
    assert AgentConfig(state_dir=tmp_path).state_dir == tmp_path


def test_cli_uses_the_runtime_hooks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drivers.compose
    from agent.feature import Feature, FeatureContext, Holding
    from tests.logs.holders import SqliteHolder

    holder = SqliteHolder("gallery", tmp_path / "gallery.sqlite")
    holder.add("HOOKED-LABEL-55", b"", 1.0)

    def build_extra(ctx: FeatureContext) -> Feature:
        """A feature declaring a store and a secret, as every real feature does."""
        return Feature("extra", holdings=(Holding(holder),), secrets=lambda: ["Quentin"])

    builders = (*drivers.compose.DEFAULT_BUILDERS, build_extra)
    monkeypatch.setattr(drivers.compose, "DEFAULT_BUILDERS", builders)
    logs = LogStore(tmp_path, LogSettings(), keys=DataKeys(StateLayout(tmp_path)))
    logs.directory.mkdir()
    logs.live_path.write_text(json.dumps({"ts": 1.0, "level": "INFO", "msg": "hi Quentin"}))
    export, bundle = tmp_path / "export.json", tmp_path / "bundle.jsonl"
    args = ["data", "export", "--format", "json", "--state-dir", str(tmp_path), "-o", str(export)]
    assert main(args) == 0
    assert "HOOKED-LABEL-55" in export.read_text()
    assert main(["logs", "bundle", "--state-dir", str(tmp_path), "-o", str(bundle)]) == 0
    assert "Quentin" not in bundle.read_text() and "hi [REDACTED:known]" in bundle.read_text()
    assert main(["data", "erase", "--yes", "--state-dir", str(tmp_path)]) == 0
    assert holder.labels() == []
    holder.close()


_arg_values = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    | st.binary(max_size=10) | st.lists(st.integers(), max_size=3)
)


@settings(max_examples=400)
@given(st.dictionaries(st.sampled_from(["since", "until", "tail", "level", "grep", "x"]),
                       _arg_values, max_size=6))
def test_query_from_any_arguments_is_valid_or_decode_error(args: dict[str, object]) -> None:
    try:
        query = BundleQuery.from_args(args)
    except DecodeError:
        return
    build_bundle(_lines(5), query, Redactor(), max_bytes=1 << 16, now=0)


@pytest.mark.parametrize("key", ["since", "until", "tail"])
def test_bundle_query_huge_integer_is_rejected(key: str) -> None:
    # float(10**400) raises OverflowError; a JSON body or CBOR bignum can carry it.
    with pytest.raises(DecodeError):
        BundleQuery.from_args({key: 10**400})
    with pytest.raises(DecodeError):
        BundleQuery.from_args({key: -(10**400)})
