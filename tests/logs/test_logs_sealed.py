"""The log store at rest: sealed lines and crash records, crypto-erase, rotation, migration.

Real rotating files written by the real handler (``install_logging``); the raw
bytes of every file under the state directory are scanned for the markers.
"""

from __future__ import annotations

import base64
import json
import logging
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from agent.config import AgentConfig
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from agent.sealing import read_header
from drivers.logs.setup import LoggingHandle, install_logging, write_crash_record
from drivers.logs.store import DOMAIN, LogStore
from tests.support.clock import FixedClock

MARKER = "MARKER-LOG-LINE-7781"
CRASH = "MARKER-CRASH-4410"


def residue(root: pathlib.Path, *markers: str) -> list[str]:
    return sorted(
        f"{p.relative_to(root)}: {m}"
        for p in root.rglob("*")
        if p.is_file()
        for m in markers
        if m.encode() in p.read_bytes()
    )


def key_numbers(store: LogStore) -> set[int]:
    """The data-key number every stored line names."""
    paths = [*store.crash_files(), *store.files_oldest_first()]
    return {
        read_header(base64.b64decode(line)).number
        for p in paths
        if p.name != "faulthandler.txt"
        for line in p.read_text().splitlines()
    }


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> DataKeys:
    return DataKeys(StateLayout(tmp_path))


@pytest.fixture
def handle(tmp_path: pathlib.Path, keys: DataKeys) -> Iterator[LoggingHandle]:
    config = AgentConfig(state_dir=tmp_path, logs=LogSettings(max_store_bytes=64 * 1024))
    installed = install_logging(config, Redactor(), clock=FixedClock(50.0), keys=keys)
    try:
        yield installed
    finally:
        installed.close()


log = logging.getLogger("edge.sealed")


def test_no_line_or_crash_record_is_stored_in_the_clear(
    tmp_path: pathlib.Path, handle: LoggingHandle
) -> None:
    log.warning("about %s", MARKER)
    write_crash_record(handle.store, handle.redactor, "exception", CRASH, "tb", now=time.time())
    for i in range(600):  # enough to roll over into backups
        log.warning("filler %d %s", i, MARKER)
    assert len(handle.store.files_oldest_first()) > 1
    assert residue(tmp_path, MARKER, CRASH) == []
    lines = list(handle.store.iter_lines())
    assert any(MARKER in line for line in lines) and any(CRASH in line for line in lines)
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert key_numbers(handle.store) == {1}


def test_after_the_key_is_destroyed_old_lines_are_gone_and_logging_goes_on(
    tmp_path: pathlib.Path, handle: LoggingHandle, keys: DataKeys
) -> None:
    store = handle.store
    log.warning("before %s", MARKER)
    write_crash_record(store, handle.redactor, "exception", CRASH, "tb", now=10.0)
    assert keys.destroy(DOMAIN) == 1
    assert list(store.iter_lines()) == []
    log.warning("after the destruction")
    assert [json.loads(x)["msg"] for x in store.iter_lines()] == ["after the destruction"]
    assert keys.live_numbers(DOMAIN) == [2]  # the store made a new key for the new line
    # A purge (the withdrawal hook, retention) drops what nobody can read any more.
    assert store.purge_older_than(0.0) == 2
    assert store.crash_files() == [p for p in store.crash_files() if p.name == "faulthandler.txt"]
    assert key_numbers(store) == {2}
    assert [json.loads(x)["msg"] for x in store.iter_lines()] == ["after the destruction"]


def test_rotation_reseals_every_file_and_the_handler_keeps_writing(
    tmp_path: pathlib.Path, handle: LoggingHandle, keys: DataKeys
) -> None:
    store = handle.store
    write_crash_record(store, handle.redactor, "exception", CRASH, "tb", now=10.0)
    for i in range(400):
        log.warning("line %d", i)
    before = list(store.iter_lines())
    keys.rotate(DOMAIN)
    log.warning("during the rotation")
    resealed = store.reseal_personal_data()
    assert resealed == len(before)
    assert store.reseal_personal_data() == 0  # idempotent
    keys.retire_older(DOMAIN)
    assert keys.live_numbers(DOMAIN) == [2]
    log.warning("after the rotation")
    assert key_numbers(store) == {2}
    after = list(store.iter_lines())
    assert after[: len(before)] == before
    assert [json.loads(x)["msg"] for x in after[-2:]] == [
        "during the rotation", "after the rotation"
    ]
    # The handler writes into the file the path names, not into a replaced one.
    assert "after the rotation" in store.lines_in(store.live_path)[-1]


def test_a_reseal_by_another_process_does_not_swallow_later_lines(
    tmp_path: pathlib.Path, handle: LoggingHandle, keys: DataKeys
) -> None:
    log.warning("first")
    keys.rotate(DOMAIN)
    # The CLI's store: no handler, its own DataKeys; it replaces agent.jsonl by rename.
    other = LogStore(tmp_path, handle.store.settings, keys=DataKeys(StateLayout(tmp_path)))
    assert other.reseal_personal_data() >= 1
    log.warning("second")
    assert [json.loads(x)["msg"] for x in other.iter_lines()][-2:] == ["first", "second"]


def legacy_line(ts: float, msg: str) -> str:
    return json.dumps({"ts": ts, "level": "INFO", "logger": "old", "msg": msg}) + "\n"


def plant_legacy(store: LogStore) -> None:
    store.directory.mkdir(parents=True, exist_ok=True)
    (store.directory / "agent.jsonl.1").write_text(
        legacy_line(1.0, f"old {MARKER}") + legacy_line(2.0, "kept old")
    )
    store.live_path.write_text(legacy_line(3.0, f"newer {MARKER}") + legacy_line(300.0, "new"))
    (store.directory / "crash-00000000000001000000-1.jsonl").write_text(
        json.dumps({"ts": 1.5, "level": "CRITICAL", "msg": CRASH}) + "\n"
    )


def test_legacy_clear_lines_are_read_then_sealed_by_a_reseal(
    tmp_path: pathlib.Path, keys: DataKeys
) -> None:
    store = LogStore(tmp_path, LogSettings(), keys=keys)
    plant_legacy(store)
    assert [json.loads(x)["ts"] for x in store.iter_lines()] == [1.0, 1.5, 2.0, 3.0, 300.0]
    assert store.reseal_personal_data() == 5
    assert store.reseal_personal_data() == 0
    assert residue(tmp_path, MARKER, CRASH) == []
    assert [json.loads(x)["ts"] for x in store.iter_lines()] == [1.0, 1.5, 2.0, 3.0, 300.0]
    assert key_numbers(store) == {1}


def test_legacy_clear_lines_kept_by_a_purge_are_sealed(
    tmp_path: pathlib.Path, keys: DataKeys
) -> None:
    store = LogStore(tmp_path, LogSettings(), keys=keys)
    plant_legacy(store)
    assert store.purge_older_than(2.5) == 3  # ts 1.0, 1.5 (the crash record) and 2.0
    assert residue(tmp_path, MARKER, CRASH, "kept old") == []
    assert [json.loads(x)["msg"] for x in store.iter_lines()] == [f"newer {MARKER}", "new"]


KILL_CHILD = textwrap.dedent(
    """
    import logging, pathlib, sys
    from agent.config import AgentConfig
    from agent.keystore import DataKeys
    from agent.layout import StateLayout
    from agent.logs.redact import Redactor
    from agent.logs.settings import LogSettings
    from drivers.logs.setup import install_logging
    from drivers.logs.store import DOMAIN
    state = pathlib.Path(sys.argv[1])
    keys = DataKeys(StateLayout(state))
    config = AgentConfig(state_dir=state, logs=LogSettings(max_store_bytes=4 * 1024 * 1024))
    handle = install_logging(config, Redactor(), keys=keys)
    while True:
        keys.rotate(DOMAIN)
        print("RESEALING", flush=True)
        handle.store.reseal_personal_data()
    """
)


@pytest.mark.parametrize("delay_lines", [1, 4])
def test_a_kill_during_a_reseal_loses_no_line(tmp_path: pathlib.Path, delay_lines: int) -> None:
    keys = DataKeys(StateLayout(tmp_path))
    config = AgentConfig(state_dir=tmp_path, logs=LogSettings(max_store_bytes=4 * 1024 * 1024))
    installed = install_logging(config, Redactor(), keys=keys)
    try:
        for i in range(3000):
            log.warning("kept line %d", i)
    finally:
        installed.close()
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        for _ in range(delay_lines):
            assert child.stdout.readline() == "RESEALING\n"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    fresh = DataKeys(StateLayout(tmp_path))
    store = LogStore(tmp_path, config.logs, keys=fresh)
    store.reseal_personal_data()
    fresh.retire_older(DOMAIN)
    kept = [json.loads(x)["msg"] for x in store.iter_lines() if "kept line" in x]
    assert kept == [f"kept line {i}" for i in range(3000)]
    assert key_numbers(store) == {fresh.live_numbers(DOMAIN)[-1]}
