from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from agent.config import AgentConfig
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs import codes
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from drivers.logs.setup import LoggingHandle, install_logging
from drivers.logs.store import LogStore
from tests.support.clock import FixedClock


@pytest.fixture
def installed(tmp_path: pathlib.Path) -> Iterator[LoggingHandle]:
    config = AgentConfig(state_dir=tmp_path, logs=LogSettings(max_store_bytes=64 * 1024))
    handle = install_logging(
        config, Redactor(lambda: ["Bartholomew"]), clock=FixedClock(1000.0),
        keys=DataKeys(StateLayout(tmp_path)),
    )
    try:
        yield handle
    finally:
        handle.close()


def _lines(store: LogStore) -> list[dict[str, object]]:
    return [json.loads(line) for line in store.iter_lines()]


def test_registry_codes_and_ids_are_unique_and_well_formed() -> None:
    ids = [c.message_id for c in codes.REGISTRY.values()]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert codes.lookup("EA-MQTT-001").summary == "broker connection lost"


def test_lines_are_json_with_stable_codes(installed: LoggingHandle) -> None:
    log = logging.getLogger("edge.test")
    log.error("broker gone for %s", "Bartholomew", extra=codes.MQTT_CONNECTION_LOST.extra())
    lines = _lines(installed.store)
    mine = [x for x in lines if x["logger"] == "edge.test"]
    assert mine[-1]["code"] == "EA-MQTT-001"
    assert mine[-1]["message_id"] == codes.MQTT_CONNECTION_LOST.message_id
    assert "Bartholomew" not in json.dumps(lines)


def test_store_stays_under_its_size_cap(installed: LoggingHandle) -> None:
    log = logging.getLogger("edge.flood")
    for i in range(4000):
        log.warning("filler line %d %s", i, "x" * 80)
    total = sum(p.stat().st_size for p in installed.store.files_oldest_first())
    assert total <= 64 * 1024 + 1024  # one line of slack over the cap
    assert len(installed.store.files_oldest_first()) == LogSettings().backup_files + 1


def _run_child(state_dir: pathlib.Path, body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import pathlib, threading, faulthandler, os
        from agent.config import AgentConfig
        from agent.keystore import DataKeys
        from agent.layout import StateLayout
        from agent.logs.redact import Redactor
        from drivers.logs.setup import install_logging
        state = pathlib.Path({str(state_dir)!r})
        handle = install_logging(AgentConfig(state_dir=state),
                                 Redactor(lambda: ["Gwendolyn"]), keys=DataKeys(StateLayout(state)))
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def _crash_records(state_dir: pathlib.Path) -> list[dict[str, object]]:
    store = LogStore(state_dir, LogSettings(), keys=DataKeys(StateLayout(state_dir)))
    return [
        json.loads(line)
        for p in sorted((state_dir / "logs").glob("crash-*.jsonl"))
        for line in store.lines_in(p)
    ]


def test_unhandled_exception_writes_a_redacted_crash_record(tmp_path: pathlib.Path) -> None:
    result = _run_child(tmp_path, 'raise RuntimeError("boom for Gwendolyn at 10.1.2.3")\n')
    assert result.returncode != 0
    (record,) = _crash_records(tmp_path)
    assert record["code"] == "EA-CRASH-001" and record["kind"] == "exception"
    assert "RuntimeError" in str(record["exc"])
    assert "Gwendolyn" not in json.dumps(record) and "10.1.2.3" not in json.dumps(record)


def test_thread_exception_writes_a_crash_record(tmp_path: pathlib.Path) -> None:
    body = """
    def work():
        raise KeyError("Gwendolyn")
    t = threading.Thread(target=work, name="worker-1"); t.start(); t.join()
    """
    assert _run_child(tmp_path, body).returncode == 0
    (record,) = _crash_records(tmp_path)
    assert record["kind"] == "thread" and "worker-1" in str(record["msg"])
    assert "Gwendolyn" not in json.dumps(record)


def test_hard_crash_is_harvested_on_next_start(tmp_path: pathlib.Path) -> None:
    crashed = _run_child(tmp_path, "faulthandler._sigsegv()\n")
    assert crashed.returncode != 0
    assert (tmp_path / "logs" / "faulthandler.txt").read_text().strip()
    assert _run_child(tmp_path, "handle.close()\n").returncode == 0
    (record,) = _crash_records(tmp_path)
    assert record["kind"] == "fault" and "Fatal Python error" in str(record["exc"])
    assert (tmp_path / "logs" / "faulthandler.txt").read_text() == ""


def test_level_setting_filters(tmp_path: pathlib.Path) -> None:
    from agent.logs.settings import LogLevel

    config = AgentConfig(state_dir=tmp_path, logs=LogSettings(level=LogLevel.WARNING))
    handle = install_logging(config, keys=DataKeys(StateLayout(tmp_path)))
    try:
        logging.getLogger("edge.lvl").info("quiet")
        logging.getLogger("edge.lvl").warning("loud")
        msgs = [x["msg"] for x in _lines(handle.store)]
    finally:
        handle.close()
    assert "loud" in msgs and "quiet" not in msgs
    assert dataclasses.replace(config).logs.level is LogLevel.WARNING


def test_crash_records_are_capped(tmp_path: pathlib.Path) -> None:
    from drivers.logs.setup import MAX_CRASH_RECORDS, write_crash_record

    store = LogStore(tmp_path, LogSettings(), keys=DataKeys(StateLayout(tmp_path)))
    for i in range(MAX_CRASH_RECORDS + 5):
        write_crash_record(store, Redactor(), "exception", f"crash {i}", "tb", now=100.0 + i)
    records = sorted(store.directory.glob("crash-*.jsonl"))
    assert len(records) == MAX_CRASH_RECORDS
    assert json.loads(store.lines_in(records[-1])[0])["msg"] == f"crash {MAX_CRASH_RECORDS + 4}"
