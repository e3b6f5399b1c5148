"""``edge-agent logs pull`` and ``logs serve`` over a real pty, plus hostile session input."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import BadDataError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.bundle import Bundle, BundleQuery
from agent.logs.pull import AuthLimiter, PullSession, TechnicianSecrets
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from drivers.cli import main
from drivers.logs.feature import bundle_provider
from drivers.logs.serial_link import FdChannel, SerialLogService, TechnicianClient
from drivers.logs.store import LogStore

CODE = "771-204"


def _seed(state_dir: pathlib.Path) -> LogStore:
    store = LogStore(state_dir, LogSettings(), keys=DataKeys(StateLayout(state_dir)))
    store.directory.mkdir(parents=True)
    store.live_path.write_text("".join(
        json.dumps({"ts": 2000.0 + i, "level": "ERROR", "logger": "t", "msg": f"fault {i}"})
        + "\n" for i in range(40)
    ))
    (state_dir / "provisioning").mkdir()
    (state_dir / "provisioning" / "binding.json").write_text(
        json.dumps({"verification_code": CODE})
    )
    return store


def _device_service(store: LogStore, fd: int) -> SerialLogService:
    return SerialLogService(
        FdChannel(fd),
        lambda: PullSession(TechnicianSecrets(lambda: CODE), AuthLimiter(3, 60),
                            bundle_provider(store, Redactor(), LogSettings()), chunk_bytes=512),
    )


def test_cli_pull_from_device_service(tmp_path: pathlib.Path) -> None:
    store = _seed(tmp_path)
    master, slave = os.openpty()
    service = _device_service(store, master)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            service.tick(time.time())
            time.sleep(0.002)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    out = tmp_path / "pulled.jsonl"
    try:
        code = main(["logs", "pull", "--port", os.ttyname(slave), "--code", CODE,
                     "--tail", "5", "-o", str(out)])
        wrong = main(["logs", "pull", "--port", os.ttyname(slave), "--code", "nope",
                      "--timeout", "5"])
    finally:
        stop.set()
        thread.join(5)
        os.close(slave)
        service.stop()
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # what a technician pulled: theirs alone
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["lines"] == 5 and rows[-1]["msg"] == "fault 39"
    assert wrong == 2


@pytest.mark.slow
def test_cli_serve_answers_a_technician(tmp_path: pathlib.Path) -> None:
    _seed(tmp_path)
    master, slave = os.openpty()
    result: list[int] = []
    server = threading.Thread(
        target=lambda: result.append(main([
            "logs", "serve", "--state-dir", str(tmp_path), "--port", os.ttyname(slave),
            "--duration", "4",
        ])),
    )
    server.start()
    try:
        time.sleep(0.5)  # let the server open the port before the first frame
        data = TechnicianClient(FdChannel(master), timeout=5).pull("code", CODE, {"tail": 3})
    finally:
        server.join(10)
        os.close(slave)
        os.close(master)
    assert result == [0]
    assert json.loads(data.decode().splitlines()[0])["lines"] == 3


def _empty_bundle(query: BundleQuery, now: float) -> Bundle:
    return Bundle(b"{}\n", 0, False, 0, 0)


_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) \
    | st.binary(max_size=40) | st.lists(st.integers(), max_size=3) \
    | st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4)


@settings(max_examples=300)
@given(st.lists(
    st.fixed_dictionaries(
        {"t": st.sampled_from(["hello", "auth", "get", "bye", "x", ""])},
        optional={"method": _values, "mac": _values, "query": _values, "v": _values},
    ),
    max_size=8,
))
def test_session_survives_any_message_sequence(messages: list[dict[str, object]]) -> None:
    session = PullSession(TechnicianSecrets(lambda: CODE), AuthLimiter(3, 60), _empty_bundle,
                          chunk_bytes=256)
    for now, message in enumerate(messages):
        try:
            replies = session.handle(message, float(now))
        except BadDataError:
            continue
        assert all(isinstance(r.get("t"), str) for r in replies)
        # Nothing but a correct MAC over a fresh nonce ever authenticates.
        assert session.authenticated_by is None


def test_pulled_cable_does_not_crash_the_service(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _seed(tmp_path)
    master, slave = os.openpty()
    service = _device_service(store, master)
    os.write(slave, b"\xeaL")  # half a frame, then the far end vanishes
    os.close(slave)
    for _ in range(3):
        service.tick(time.time())
    assert "serial console" in caplog.text
    service.stop()
