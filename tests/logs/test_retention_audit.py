from __future__ import annotations

import json
import os
import pathlib
import sqlite3

import pytest

from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.settings import RetentionSettings
from agent.rights.registry import DataRegistry, RetentionKind
from agent.rights.retention import DAY, RetentionReport, RetentionService
from drivers.cli import main
from drivers.logs.files import FileHolder
from drivers.logs.store import LogStore
from drivers.rights.feature import build_retention_service
from tests.logs.holders import SqliteHolder

NOW = 1_800_000_000.0


def test_retention_purges_each_kind_by_its_own_age(tmp_path: pathlib.Path) -> None:
    settings = RetentionSettings(events_days=30, snapshots_days=7, logs_days=14,
                                 match_history_days=2)
    events = SqliteHolder("events", tmp_path / "events.sqlite")
    matches = SqliteHolder("matches", tmp_path / "matches.sqlite")
    for age_days in (1, 3, 10, 40):
        events.add(f"event-{age_days}", b"", NOW - age_days * DAY)
        matches.add(f"match-{age_days}", b"", NOW - age_days * DAY)
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    for age_days in (1, 8):
        path = snapshots / f"snap-{age_days}.jpg"
        path.write_bytes(b"jpeg")
        os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    store = LogStore(tmp_path, AgentConfig().logs, keys=DataKeys(StateLayout(tmp_path)))
    store.directory.mkdir()
    store.live_path.write_text("".join(
        json.dumps({"ts": NOW - d * DAY, "level": "INFO", "msg": f"day {d}"}) + "\n"
        for d in (20, 15, 13, 0)
    ))
    registry = DataRegistry()
    registry.add_retention_target(events, RetentionKind.EVENTS)
    registry.add_retention_target(matches, RetentionKind.MATCH_HISTORY)
    registry.add_retention_target(FileHolder("snapshots", snapshots), RetentionKind.SNAPSHOTS)
    registry.add_retention_target(store, RetentionKind.LOGS)
    audit = AuditLog.in_state_dir(tmp_path)
    reports: list[RetentionReport] = []
    service = build_retention_service(
        AgentConfig(state_dir=tmp_path, retention=settings), registry, audit=audit,
        on_report=reports.append,
    )
    service.start()
    service.tick(NOW)
    report = reports[-1]
    assert report.as_mapping()["total"] == 7
    assert {line.target: line.purged for line in report.lines} == {
        "events": 1, "matches": 3, "snapshots": 1, "logs": 2
    }
    assert events.labels() == ["event-1", "event-3", "event-10"]
    assert matches.labels() == ["match-1"]
    assert [p.name for p in snapshots.iterdir()] == ["snap-1.jpg"]
    assert [json.loads(line)["msg"] for line in store.iter_lines()] == ["day 13", "day 0"]
    assert audit.entries()[-1].kind == "retention.purge"
    # Not due again until the interval has passed; then the older ones age out too.
    service.tick(NOW + 60)
    assert len(reports) == 1
    service.tick(NOW + settings.purge_interval_seconds + 5 * DAY)
    assert len(reports) == 2 and matches.labels() == []
    events.close()
    matches.close()
    audit.close()


def test_failing_target_is_reported_and_others_still_run(tmp_path: pathlib.Path) -> None:
    class Broken:
        name = "broken"

        def purge_older_than(self, cutoff: float) -> int:
            from agent.errors import DeviceIOError

            raise DeviceIOError("gone")

    holder = SqliteHolder("events", tmp_path / "e.sqlite")
    holder.add("old", b"", NOW - 100 * DAY)
    registry = DataRegistry()
    registry.add_retention_target(Broken(), RetentionKind.EVENTS)
    registry.add_retention_target(holder, RetentionKind.EVENTS)
    report = RetentionService(registry, RetentionSettings()).run_now(NOW)
    assert [(line.target, line.purged, line.error) for line in report.lines] == [
        ("broken", 0, "DeviceIOError"), ("events", 1, None)
    ]
    holder.close()


# --- audit ----------------------------------------------------------------


@pytest.fixture
def audit_path(tmp_path: pathlib.Path) -> pathlib.Path:
    audit = AuditLog.in_state_dir(tmp_path)
    for i, kind in enumerate(["consent.grant", "data.export", "data.erase", "logs.pull",
                              "provisioning", "upgrade"]):
        audit.record(kind, {"n": i}, 1000.0 + i)
    assert audit.verify().ok
    audit.close()
    return audit.path


def _tamper(path: pathlib.Path, *statements: str) -> None:
    conn = sqlite3.connect(str(path), isolation_level=None)
    # An attacker with file access drops the append-only triggers first.
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for sql in statements:
        conn.execute(sql)
    conn.close()


def _verify(path: pathlib.Path) -> tuple[bool, int | None]:
    audit = AuditLog(path)
    result = audit.verify()
    audit.close()
    return result.ok, result.first_bad_index


def test_audit_refuses_updates_through_sqlite(audit_path: pathlib.Path) -> None:
    conn = sqlite3.connect(str(audit_path))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE audit SET kind = 'x' WHERE idx = 1")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM audit WHERE idx = 1")
    conn.close()


def test_audit_detects_modified_entry(audit_path: pathlib.Path) -> None:
    _tamper(audit_path, """UPDATE audit SET detail = '{"n":99}' WHERE idx = 3""")
    assert _verify(audit_path) == (False, 3)


def test_audit_detects_deleted_entry(audit_path: pathlib.Path) -> None:
    _tamper(audit_path, "DELETE FROM audit WHERE idx = 2")
    assert _verify(audit_path) == (False, 2)


def test_audit_detects_middle_truncation(audit_path: pathlib.Path) -> None:
    _tamper(audit_path, "DELETE FROM audit WHERE idx IN (1, 2, 3)")
    assert _verify(audit_path) == (False, 1)


def test_audit_detects_reordered_entries(audit_path: pathlib.Path) -> None:
    _tamper(
        audit_path,
        "UPDATE audit SET idx = 100 WHERE idx = 2",
        "UPDATE audit SET idx = 2 WHERE idx = 4",
        "UPDATE audit SET idx = 4 WHERE idx = 100",
    )
    assert _verify(audit_path) == (False, 2)


def test_audit_detects_rehashed_entry_without_relinking(audit_path: pathlib.Path) -> None:
    # Without the device key a recomputed MAC does not verify, even for that one entry.
    from agent.audit import canonical, chain_mac

    conn = sqlite3.connect(str(audit_path))
    idx, at, kind, _, prev = conn.execute(
        "SELECT idx, at, kind, detail, prev FROM audit WHERE idx = 1").fetchone()
    conn.close()
    forged = chain_mac(b"not the device key", bytes(prev), canonical(idx, at, kind, '{"n":7}'))
    _tamper(audit_path, f"""UPDATE audit SET detail = '{{"n":7}}', hash = x'{forged.hex()}'
                            WHERE idx = 1""")
    assert _verify(audit_path) == (False, 1)


def test_audit_verify_cli(audit_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(audit_path.parent)
    assert main(["audit", "verify", "--state-dir", state]) == 0
    assert "6 entries" in capsys.readouterr().out
    _tamper(audit_path, "DELETE FROM audit WHERE idx = 4")
    assert main(["audit", "verify", "--state-dir", state]) == 2
    assert "index 4" in capsys.readouterr().err


def test_audit_rejects_unserialisable_detail(tmp_path: pathlib.Path) -> None:
    from agent.errors import DecodeError

    audit = AuditLog.in_state_dir(tmp_path)
    with pytest.raises(DecodeError):
        audit.record("x", {"v": object()}, 1.0)
    audit.close()


def test_audit_detects_tail_cut_against_a_recorded_head(
    audit_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(audit_path.parent)
    assert main(["audit", "verify", "--state-dir", state]) == 0
    words = capsys.readouterr().out.split()
    index, head = words[words.index("index") + 1], words[words.index("mac") + 1]
    published = ["--index", index, "--head", head]
    assert main(["audit", "verify", "--state-dir", state, *published]) == 0
    _tamper(audit_path, "DELETE FROM audit WHERE idx = 5")
    assert main(["audit", "verify", "--state-dir", state]) == 0  # undetectable alone
    assert main(["audit", "verify", "--state-dir", state, *published]) == 2
    assert "truncated" in capsys.readouterr().err
