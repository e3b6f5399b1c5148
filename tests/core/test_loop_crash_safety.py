"""Crash safety of the loop: a failing part must not lose events or stop the loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.atomicfile import write_atomic
from agent.database import Database
from agent.errors import DeviceIOError
from agent.purposes import Purpose
from drivers.mqtt import MqttLink
from drivers.runtime import Agent
from drivers.sdnotify import Notifier
from tests.support.agent_harness import make_config, motion, spine_agent
from tests.support.broker import free_port
from tests.support.clock import SteppedWallClock


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A real Agent whose broker address has no listener: everything stays local."""
    built = spine_agent(make_config(tmp_path / "state", free_port()))
    try:
        yield built
    finally:
        built.composition.close()


def test_flush_that_fails_keeps_the_events_for_the_next_flush(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
    assert agent.sink.emit(motion(1))
    real = agent.outbox.put_many

    def disk_full(*args: object, **kwargs: object) -> int:
        raise DeviceIOError("disk full")

    monkeypatch.setattr(agent.outbox, "put_many", disk_full)
    with pytest.raises(DeviceIOError):
        agent.sink.flush(time.time())
    monkeypatch.setattr(agent.outbox, "put_many", real)
    assert agent.sink.flush(time.time()) == 1
    assert len(agent.outbox) == 1


def test_step_survives_a_failing_broker_link(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
    assert agent.link is not None

    def broken(now: float) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/etc/ca.pem")

    monkeypatch.setattr(agent.link, "tick", broken)
    agent.emit(motion(1))
    agent.step()  # must not raise
    assert len(agent.outbox) == 1  # the rest of the pass still ran


def test_failed_commit_does_not_leave_the_database_inside_a_transaction(tmp_path: Path) -> None:
    db = Database.in_state_dir(tmp_path)
    try:
        db.conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.conn.execute(
            "CREATE TABLE child (pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
        db.conn.execute("PRAGMA foreign_keys=ON")
        with pytest.raises(DeviceIOError), db.transaction() as conn:
            conn.execute("INSERT INTO child (pid) VALUES (42)")  # fails only at COMMIT
        assert not db.conn.in_transaction
        with db.transaction() as conn:  # the next transaction still works
            conn.execute("INSERT INTO parent (id) VALUES (1)")
        assert db.query_int("SELECT COUNT(*) FROM parent") == 1
    finally:
        db.close()


class FakeClient:
    """Stands in for paho: disconnect() reports on_disconnect as paho's thread does."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.stopped = False

    def connect_async(self, *args: object, **kwargs: object) -> None:
        pass

    def loop_start(self) -> None:
        pass

    def disconnect(self) -> None:
        self.link._on_disconnect(self, None, None, "normal disconnection", None)

    def loop_stop(self) -> None:
        self.stopped = True


def test_the_old_clients_late_callbacks_do_not_touch_the_new_connection(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = agent.link
    assert link is not None
    made: list[FakeClient] = []

    def new_client() -> FakeClient:
        made.append(FakeClient(link))
        return made[-1]

    monkeypatch.setattr(link, "_new_client", new_client)
    link.tick(100.0)
    first = made[-1]
    link._on_disconnect(first, None, None, "keepalive timeout", None)
    link.tick(200.0)  # tears the first client down and starts the second
    assert first.stopped and link._client is made[-1] is not first
    second = made[-1]
    link.tick(200.01)
    assert link._client is second and not second.stopped
    # A PUBACK the old client reports late must not be applied to this session.
    link._on_publish(first, None, 1, ReasonCode(PacketTypes.PUBACK), None)
    assert not agent.pump._acks


class ListTransport:
    connected = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish_queued(
        self, topic: str, payload: bytes, purpose: str, msg_id: str, expires_in: int,
        *, json: object = None,
    ) -> int:
        self.sent.append(msg_id)
        return len(self.sent)  # a fresh client numbers its mids from 1 again


def test_pubacks_received_before_a_reconnect_still_delete_their_messages(
    agent: Agent,
) -> None:
    agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
    agent.sink.emit(motion(1))
    agent.sink.emit(motion(2))
    agent.sink.flush(time.time())
    pump, first = agent.pump, ListTransport()
    session = pump.on_connected()
    assert pump.tick(first, time.time()) == 2
    pump.on_ack(session, 1, 0)  # PUBACK for the first message, not yet drained
    pump.on_connected()  # the connection drops and a new one comes up
    second = ListTransport()
    pump.tick(second, time.time())
    assert second.sent == first.sent[1:]  # only the unacknowledged one goes again
    assert not agent.outbox.contains(first.sent[0])


def test_concurrent_atomic_writes_to_one_file_never_fail_or_mix(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    payloads = [bytes([65 + k]) * 200_000 for k in range(4)]
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            for _ in range(15):
                write_atomic(target, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


class CountingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.pings = 0

    def watchdog(self) -> bool:
        self.pings += 1
        return True


def test_a_wall_clock_step_back_neither_starves_nor_fools_the_watchdog(tmp_path: Path) -> None:
    wall = SteppedWallClock(1_800_000_000.0)
    notifier = CountingNotifier()
    agent = spine_agent(
        make_config(tmp_path / "state", free_port(), enabled=False),
        clock=wall,
        notifier=notifier,
        environ={"WATCHDOG_USEC": "4000000"},  # ping every 2 s
    )
    try:
        agent.start()
        agent.step()
        assert notifier.pings == 1
        wall.wall -= 3600.0  # NTP steps the clock back an hour
        deadline = time.monotonic() + 30
        while notifier.pings < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            agent.step()
        assert notifier.pings == 2  # still fed a few seconds later, not in an hour
    finally:
        agent.composition.close()


def test_a_client_that_cannot_be_built_backs_off_instead_of_raising(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = agent.link
    assert link is not None

    def missing_ca() -> object:
        raise FileNotFoundError(2, "No such file or directory", "/etc/edge/ca.pem")

    monkeypatch.setattr(link, "_new_client", missing_ca)
    link.tick(100.0)  # must not raise
    assert "ca.pem" in link.last_error and link._client is None
