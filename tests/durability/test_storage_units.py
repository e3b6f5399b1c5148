"""The pieces behind issue 12, in process: sequence stamps, the high-water file, the door."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import cbor
from agent.config import ConfigError, parse
from agent.consent import ConsentLedger
from agent.database import Database, StorageIOError
from agent.layout import StateLayout
from agent.minimise import OutgoingMessage
from agent.outbox import Outbox
from agent.purposes import Purpose
from agent.sequence import SLOTS, HighWater, stamp
from agent.storage_settings import StorageSettings

T0 = 1_800_000_000.0


def message(purpose: Purpose = Purpose.DEVICE_OPERATION) -> OutgoingMessage:
    body = {"v": 1, "type": "device.status", "f": {"state": "x"}, "id": str(uuid.uuid4())}
    return OutgoingMessage(str(body["id"]), "device.status", purpose, cbor.dumps(body), T0, None)


def outbox(state: Path) -> Outbox:
    layout = StateLayout(state)
    return Outbox(
        Database(layout.database), max_messages=1000, default_expiry_seconds=60, layout=layout
    )


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda k: k != "seq"),
        st.one_of(st.integers(), st.text(), st.binary(), st.floats(allow_nan=False)),
        max_size=12,
    ),
    st.integers(min_value=0, max_value=2**63),
)
def test_stamp_is_the_canonical_encoding_with_seq(body: dict[str, object], seq: int) -> None:
    assert stamp(cbor.dumps(body), seq) == cbor.dumps({**body, "seq": seq})


def test_high_water_survives_a_torn_write_of_either_slot(tmp_path: Path) -> None:
    path = tmp_path / "hw"
    mark = HighWater(path)
    for seq in (5, 9, 12):
        mark.record(seq)
    mark.record(3)  # never backwards
    mark.close()
    assert HighWater(path).value == 12
    raw = bytearray(path.read_bytes())
    assert len(raw) == SLOTS * 32
    # The newest slot torn: the reader falls back to the value before it.
    newest = 3 % SLOTS
    raw[newest * 32 + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert HighWater(path).value == 9


def test_sequence_numbers_only_for_admitted_events_and_gaps_are_found(tmp_path: Path) -> None:
    state = tmp_path / "state"
    box = outbox(state)
    # A purpose without consent is refused at the door and takes no number.
    result = box.put_many(
        [("t", message()), ("t", message(Purpose.CLOUD_EVENTS)), ("t", message())], T0
    )
    assert (result.queued, result.refused) == (2, 1)
    queued = box.batch_after(0, 10, T0)
    assert [cbor2.loads(m.payload)["seq"] for m in queued] == [1, 2] == [m.seq for m in queued]
    assert box.high_water is not None and box.high_water.value == 2
    assert box.find_gap() is None
    box.db.close()
    # The database forgets the last commit (as a cut WAL would); the file remembers.
    conn = sqlite3.connect(StateLayout(state).database)
    conn.execute("DELETE FROM outbox WHERE seq = 2")
    conn.execute("UPDATE sqlite_sequence SET seq = 1 WHERE name = 'outbox'")
    conn.commit()
    conn.close()
    box = outbox(state)
    gap = box.find_gap()
    assert gap is not None and (gap.first, gap.last, gap.count) == (2, 2, 1)
    box.count_lost(gap)
    box.put_many([("t", message())], T0)
    assert box.last_seq == 3  # the lost number is never given again
    assert box.stats()["lost"] == 1


def test_drops_for_room_skip_what_the_walk_has_on_the_wire(tmp_path: Path) -> None:
    """Counted as dropped means not delivered: a row the connection already read stays.

    CI once saw the running agent drop 69 motion events for room while its walk
    had them on the wire; the broker delivered them and dropped_full said 69.
    """
    state = tmp_path / "state"
    ConsentLedger.open(state).grant(Purpose.CLOUD_EVENTS, T0, source="test")
    box = outbox(state)
    box.put_many([("t", message(Purpose.CLOUD_EVENTS)) for _ in range(10)], T0)
    handed = box.batch_after(0, 4, T0)  # the walk read seq 1..4
    assert [m.seq for m in handed] == [1, 2, 3, 4]
    assert box.drop_low_value(10**9) == 6  # 5..10 go, the oldest four are on the wire
    assert box.present_seqs(1, 10) == {1, 2, 3, 4}
    assert box.stats()["dropped_full"] == 6
    # The message cap counts what waits: the oldest waiting make way, not the wire's.
    box.max_messages = 2
    box.put_many([("t", message(Purpose.CLOUD_EVENTS)) for _ in range(3)], T0)
    assert box.present_seqs(1, 13) == {1, 2, 3, 4, 12, 13}
    assert box.stats()["dropped_overflow"] == 1
    assert box.hand_over(12, 12) == {12}  # the pump's write-through path hands over too
    assert box.drop_low_value(10**9) == 1 and box.present_seqs(1, 13) == {1, 2, 3, 4, 12}
    box.rewind_handed()  # a new connection: nothing on the wire any more
    assert box.drop_low_value(1) == 1 and box.present_seqs(1, 13) == {2, 3, 4, 12}
    assert box.ack_many(m.msg_id for m in handed) == 3  # the rest delivered after all
    box.db.close()


def test_a_damaged_file_is_a_clear_error_where_nobody_may_salvage_it(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    ledger = ConsentLedger.open(tmp_path)
    ledger.grant(Purpose.CLOUD_EVENTS, T0)
    ledger.db.close()  # checkpointed: the damage below is not hidden behind the WAL
    with open(layout.database, "r+b") as handle:
        handle.write(os.urandom(4096))
    with pytest.raises(StorageIOError, match=r"EA-DB-001 .* is damaged"):
        Database(layout.database)


def test_sqlite_errors_leave_as_storage_errors_and_flag_a_check(tmp_path: Path) -> None:
    db = Database(StateLayout(tmp_path).database)
    with pytest.raises(StorageIOError, match="database read failed"):
        db.query("SELECT * FROM no_such_table")
    assert db.suspect is not None  # SQLITE_ERROR: worth an integrity check
    assert db.check() is None and db.suspect is None  # the file is sound
    with pytest.raises(StorageIOError, match="database write failed"), db.transaction() as conn:
        conn.execute("INSERT INTO nowhere VALUES (1)")
    assert not db.conn.in_transaction


def test_storage_settings_refuse_a_cap_nothing_fits_under() -> None:
    with pytest.raises(ConfigError) as info:
        parse("[storage]\nmax_state_bytes = 1048576\nreserve_bytes = 1048576\n")
    assert info.value.path == "storage.max_state_bytes"
    assert StorageSettings().margin_bytes == StorageSettings().reserve_bytes


def test_wal_stays_near_its_bound_under_a_stream_of_commits(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    db = Database(layout.database, wal_max_bytes=128 * 1024)
    box = Outbox(db, max_messages=100_000, default_expiry_seconds=60, layout=layout)
    largest = 0
    start = time.monotonic()
    for _ in range(300):
        box.put_many([("t", message()) for _ in range(10)], T0)
        largest = max(largest, layout.database_wal.stat().st_size)
    assert largest <= 128 * 1024 + 64 * 1024, largest
    assert time.monotonic() - start < 60
