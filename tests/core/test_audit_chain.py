"""The keyed audit chain: what `audit verify` says for an intact, edited, recomputed or cut log.

Each attack works on the real SQLite file the way someone with file access would
(dropping the append-only triggers first).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import sqlite3

import pytest

from agent.audit import (
    GENESIS,
    AuditLog,
    Verdict,
    canonical,
    chain_mac,
    legacy_hash,
)
from agent.errors import VerificationError
from agent.layout import StateLayout
from drivers.cli import main

KINDS = ["consent.grant", "data.export", "face.enrol", "data.erase", "logs.pull", "upgrade"]


@pytest.fixture
def state(tmp_path: pathlib.Path) -> pathlib.Path:
    audit = AuditLog.in_state_dir(tmp_path)
    for i, kind in enumerate(KINDS):
        audit.record(kind, {"n": i}, 1000.0 + i)
    audit.close()
    return tmp_path


def published(state: pathlib.Path) -> tuple[int, str]:
    """What receivers kept from the last audit.head."""
    audit = AuditLog.in_state_dir(state)
    try:
        head = audit.head()
    finally:
        audit.close()
    return head.index, head.mac.hex()


def attack(state: pathlib.Path, *statements: str) -> None:
    conn = sqlite3.connect(str(StateLayout(state).audit), isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for sql in statements:
        conn.execute(sql)
    conn.close()


def rechain(state: pathlib.Path, key: bytes, drop: int | None = None) -> None:
    """Remove entry ``drop`` (if any), renumber and recompute every MAC under ``key``."""
    path = StateLayout(state).audit
    conn = sqlite3.connect(str(path), isolation_level=None)
    rows = conn.execute("SELECT idx, at, kind, detail FROM audit ORDER BY idx").fetchall()
    conn.close()
    kept = [r for r in rows if r[0] != drop]
    statements = ["DELETE FROM audit"]
    prev = GENESIS
    for index, (_, at, kind, detail) in enumerate(kept):
        mac = chain_mac(key, prev, canonical(index, at, kind, detail))
        statements.append(
            f"INSERT INTO audit VALUES ({index}, {at}, '{kind}', '{detail}', "
            f"x'{prev.hex()}', x'{mac.hex()}')"
        )
        prev = mac
    attack(state, *statements)


def verdict(state: pathlib.Path, head: tuple[int, str] | None = None) -> tuple[str, int | None]:
    audit = AuditLog.in_state_dir(state)
    try:
        expected = None if head is None else bytes.fromhex(head[1])
        result = audit.verify(expected, None if head is None else head[0])
    finally:
        audit.close()
    assert result.ok is (result.verdict is Verdict.INTACT)
    return result.verdict.value, result.first_bad_index


def cli_verdict(
    state: pathlib.Path, head: tuple[int, str] | None = None
) -> tuple[int, dict[str, object]]:
    args = ["audit", "verify", "--json", "--state-dir", str(state)]
    if head is not None:
        args += ["--index", str(head[0]), "--head", head[1]]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, json.loads(out.getvalue())


def test_the_key_is_private_in_the_state_directory_and_the_chain_verifies(
    state: pathlib.Path,
) -> None:
    key = StateLayout(state).audit_key
    assert key.stat().st_mode & 0o077 == 0 and len(key.read_bytes()) == 32
    assert verdict(state) == ("intact", None)
    code, report = cli_verdict(state, published(state))
    assert code == 0 and report["verdict"] == "intact" and report["entries"] == 6


def test_an_edited_entry_is_reported_as_edited(state: pathlib.Path) -> None:
    head = published(state)
    attack(state, """UPDATE audit SET detail = '{"n":99}' WHERE idx = 3""")
    assert verdict(state) == ("edited", 3)
    assert verdict(state, head) == ("edited", 3)
    code, report = cli_verdict(state)
    assert code == 2 and report["verdict"] == "edited" and report["first_bad_index"] == 3


def test_a_deleted_entry_is_reported_as_edited(state: pathlib.Path) -> None:
    attack(state, "DELETE FROM audit WHERE idx = 2")
    assert verdict(state) == ("edited", 2)


def test_a_chain_recomputed_without_the_key_is_reported_as_rechained(
    state: pathlib.Path,
) -> None:
    """The old unkeyed chain's weakness: drop an entry, recompute, and it verified."""
    head = published(state)
    rechain(state, b"the attacker's own key", drop=2)
    assert verdict(state) == ("rechained", 0)
    assert verdict(state, head)[0] == "rechained"
    code, report = cli_verdict(state)
    assert code == 2 and report["verdict"] == "rechained"


def test_a_chain_recomputed_with_a_stolen_key_shows_against_the_published_head(
    state: pathlib.Path,
) -> None:
    head = published(state)
    key = StateLayout(state).audit_key.read_bytes()
    rechain(state, key, drop=2)
    assert verdict(state) == ("intact", None)  # the key alone cannot tell
    # Five entries are left; the published head named index 5.
    assert verdict(state, head)[0] == "truncated"
    # Add one so the log is as long as before: the entry at the head's index differs.
    audit = AuditLog.in_state_dir(state)
    audit.record("filler", {}, 2000.0)
    audit.close()
    assert verdict(state, head) == ("rechained", 5)


def test_a_cut_tail_is_reported_as_truncated_only_against_a_published_head(
    state: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = published(state)
    attack(state, "DELETE FROM audit WHERE idx >= 4")
    assert verdict(state) == ("intact", None)
    assert verdict(state, head) == ("truncated", 4)
    assert main(["audit", "verify", "--state-dir", str(state),
                 "--index", str(head[0]), "--head", head[1]]) == 2
    assert "truncated" in capsys.readouterr().err


def test_head_and_index_go_together(
    state: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--state-dir", str(state), "--index", "3"]) == 2
    assert "--head and --index" in capsys.readouterr().err


def _legacy_log(path: pathlib.Path, entries: int) -> bytes:
    """An audit log of the old format: unkeyed SHA-256 chain, no meta table."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("CREATE TABLE audit (idx INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT "
                 "NOT NULL, detail TEXT NOT NULL, prev BLOB NOT NULL, hash BLOB NOT NULL)")
    prev = GENESIS
    for i in range(entries):
        detail = json.dumps({"n": i}, separators=(",", ":"))
        digest = legacy_hash(prev, i, 100.0 + i, "old.kind", detail)
        conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                     (i, 100.0 + i, "old.kind", detail, prev, digest))
        prev = digest
    conn.close()
    return prev


def test_an_intact_old_format_log_is_migrated_under_the_key(tmp_path: pathlib.Path) -> None:
    old_head = _legacy_log(StateLayout(tmp_path).audit, 4)
    audit = AuditLog.in_state_dir(tmp_path)
    try:
        entries = audit.entries()
        assert [e.kind for e in entries] == ["old.kind"] * 4 + ["audit.migrated"]
        assert entries[-1].detail == {
            "from": "sha256", "to": "hmac-sha256", "entries": 4, "old_head": old_head.hex()
        }
        assert audit.verify().verdict is Verdict.INTACT
        audit.record("new.kind", {}, 200.0)
    finally:
        audit.close()
    # Opening again neither migrates twice nor breaks the chain.
    assert verdict(tmp_path) == ("intact", None)
    assert os.stat(StateLayout(tmp_path).audit_key).st_mode & 0o077 == 0


def test_a_broken_old_format_log_is_refused_with_a_clear_message(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = StateLayout(tmp_path).audit
    _legacy_log(path, 4)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("DELETE FROM audit WHERE idx = 1")
    conn.close()
    with pytest.raises(VerificationError, match=r"old unkeyed format.*broken at index 1"):
        AuditLog.in_state_dir(tmp_path)
    assert main(["audit", "verify", "--state-dir", str(tmp_path)]) == 2
    assert "move it aside" in capsys.readouterr().err
    # Nothing was rewritten: the evidence is as it was.
    conn = sqlite3.connect(str(path))
    assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 3
    conn.close()


def test_a_missing_key_under_existing_entries_is_refused(state: pathlib.Path) -> None:
    StateLayout(state).audit_key.unlink()
    with pytest.raises(VerificationError, match=r"audit key .* missing"):
        AuditLog.in_state_dir(state)
    assert not StateLayout(state).audit_key.exists()  # no fresh key laundering the chain
