"""The console under systemd: ``<N>`` priorities, the journal protocol with MESSAGE_ID,
and sd_notify STATUS= that follows the broker, the queue and the upgrade state."""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agent.events import Event
from agent.logs import codes
from agent.logs.redact import Redactor
from agent.purposes import Purpose
from drivers.logs.setup import (
    JournalHandler,
    PriorityPrefixFormatter,
    install_console_logging,
    redact_console,
    stderr_is_journal,
)
from drivers.sdnotify import Notifier
from tests.support.agent_harness import make_config, motion, spine_agent
from tests.support.broker import Broker, free_port
from tests.support.process import spawn_agent

PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def parse_journal_datagram(data: bytes) -> dict[str, str]:
    """journald's native protocol (systemd.journal-fields / sd_journal_sendv framing)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        newline = data.index(b"\n", i)
        line = data[i:newline]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            i = newline + 1
        else:
            (size,) = struct.unpack("<Q", data[newline + 1 : newline + 9])
            start = newline + 9
            fields[line.decode()] = data[start : start + size].decode()
            assert data[start + size : start + size + 1] == b"\n"
            i = start + size + 1
        assert fields, "empty field"
    return fields


def _journal_stream(path: pathlib.Path) -> str:
    status = os.stat(path)
    return f"{status.st_dev}:{status.st_ino}"


def test_journal_stream_is_recognised_only_for_the_fd_it_names(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "stderr"
    with open(target, "w") as handle:
        stream = _journal_stream(target)
        assert stderr_is_journal({"JOURNAL_STREAM": stream}, fd=handle.fileno())
        # Inherited by a child whose stderr went elsewhere: not the journal.
        other = tmp_path / "other"
        with open(other, "w") as elsewhere:
            assert not stderr_is_journal({"JOURNAL_STREAM": stream}, fd=elsewhere.fileno())
        assert not stderr_is_journal({}, fd=handle.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, fd=handle.fileno())


@pytest.fixture
def journal(tmp_path: pathlib.Path) -> Iterator[tuple[socket.socket, pathlib.Path]]:
    # journald itself cannot run in the test machine: a datagram socket reading its protocol.
    path = tmp_path / "journal.socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def test_journal_protocol_carries_priority_message_id_and_redacts(
    journal: tuple[socket.socket, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    sock, path = journal
    stderr_file = tmp_path / "stderr"
    saved = os.dup(2)
    with open(stderr_file, "w") as handle:
        os.dup2(handle.fileno(), 2)
    try:
        env = {"JOURNAL_STREAM": _journal_stream(stderr_file)}
        handler = install_console_logging(logging.INFO, env, journal_socket=path)
        assert isinstance(handler, JournalHandler)
        undo = redact_console(Redactor(lambda: ["EA-HUB-SECRET-77"]))
        log = logging.getLogger("test.journal")
        try:
            log.info("agent started as device EA-HUB-SECRET-77")
            log.error("broker gone", extra=codes.MQTT_CONNECTION_LOST.extra())
            log.error("EA-DB-004 storage: disk I/O error")
            log.debug("not at INFO")
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                log.exception("a pass failed")
        finally:
            undo()
            logging.getLogger().removeHandler(handler)
            handler.close()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    entries = [parse_journal_datagram(sock.recv(65536)) for _ in range(4)]
    started, lost, storage, failed = entries
    assert started["PRIORITY"] == "6" and "MESSAGE_ID" not in started
    assert "EA-HUB-SECRET-77" not in started["MESSAGE"] and "REDACTED" in started["MESSAGE"]
    assert started["SYSLOG_IDENTIFIER"] == "edge-agent"
    assert lost["PRIORITY"] == "3"
    assert lost["MESSAGE_ID"] == codes.MQTT_CONNECTION_LOST.message_id
    assert lost["ERROR_CODE"] == "EA-MQTT-001"
    assert storage["MESSAGE_ID"] == codes.DB_WRITE_FAILED.message_id  # code named in the text
    assert failed["PRIORITY"] == "3" and "Traceback" in failed["MESSAGE"]
    assert "\n" in failed["MESSAGE"]  # multi-line: the length-prefixed framing
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(65536)  # the DEBUG line was not sent
    assert stderr_file.read_text() == ""  # nothing doubled on stderr


def test_without_the_journal_socket_lines_carry_priority_prefixes(tmp_path: pathlib.Path) -> None:
    formatter = PriorityPrefixFormatter()
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "two\nlines", None, None)
    assert formatter.format(record) == "<4>WARNING x: two\n<4>lines"


def test_every_console_line_of_run_has_a_priority_under_the_journal(
    broker: Broker, tmp_path: pathlib.Path
) -> None:
    """The real ``edge-agent run`` with stderr as "the journal" (no journal socket here)."""
    if pathlib.Path("/run/systemd/journal/socket").exists():
        pytest.skip("this machine has a journal socket: lines would go there instead")
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\n[runtime]\ntick_seconds = 0.05\n"
        "[logs]\nevent_lines = true\n"
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify"
    notify.bind(str(notify_path))
    notify.settimeout(20)
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "wb") as stderr:
        env = dict(os.environ, JOURNAL_STREAM=_journal_stream(stderr_path),
                   NOTIFY_SOCKET=str(notify_path))
        env.pop("WATCHDOG_USEC", None)
        proc = spawn_agent(config, state, env=env, stderr=stderr)
        statuses: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                "broker connected" in s for s in statuses
            ):
                message = notify.recv(4096).decode()
                statuses += [line[7:] for line in message.split("\n")
                             if line.startswith("STATUS=")]
            assert any(s.startswith("broker connected; ") and "queued; upgrade " in s
                       for s in statuses), statuses
            # The broker goes away: STATUS says so.
            broker.stop()
            while time.monotonic() < deadline and "broker unreachable" not in statuses[-1]:
                message = notify.recv(4096).decode()
                statuses += [line[7:] for line in message.split("\n")
                             if line.startswith("STATUS=")]
            assert statuses[-1].startswith("broker unreachable; "), statuses
            broker.start()
            while time.monotonic() < deadline and "broker connected" not in statuses[-1]:
                message = notify.recv(4096).decode()
                statuses += [line[7:] for line in message.split("\n")
                             if line.startswith("STATUS=")]
            assert statuses[-1].startswith("broker connected; "), statuses
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            notify.close()
    lines = stderr_path.read_text().splitlines()
    assert any("edge_agent.events: device.status recorded" in line for line in lines), lines
    for line in lines:
        assert line[:1] == "<" and line[2:3] == ">" and line[1] in "01234567", line
    assert any(line.startswith("<6>INFO drivers.runtime: agent ") for line in lines), lines
    assert any(line.startswith("<6>edge-agent ") for line in lines)  # the start-up banner too


def test_an_error_exit_line_has_error_priority(tmp_path: pathlib.Path) -> None:
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "wb") as stderr:
        env = dict(os.environ, JOURNAL_STREAM=_journal_stream(stderr_path))
        env.pop("EDGE_AGENT_CONFIG", None)
        result = subprocess.run(
            [sys.executable, "-m", "drivers", "run", "--config", str(tmp_path / "absent.toml")],
            stderr=stderr, env=env, cwd=pathlib.Path(__file__).resolve().parents[2], timeout=60,
        )
    assert result.returncode == 2
    text = stderr_path.read_text()
    assert text.startswith("<3>edge-agent: error: ") and text.count("\n") == 1


def test_status_follows_the_upgrade_state_and_the_queue(tmp_path: pathlib.Path) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    receiver.bind(str(path))
    receiver.settimeout(5)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # No broker on this port: everything stays queued.
    agent = spine_agent(make_config(tmp_path / "state", free_port()),
                        notifier=Notifier(sender, str(path)))
    try:
        agent.start()
        assert receiver.recv(4096).startswith(b"READY=1")
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        agent.emit(motion(1))
        agent.emit(Event("upgrade.state", occurred_at=time.time(),
                         fields={"state": "downloading"}))
        agent.step()
        status = receiver.recv(4096).decode()
        assert status == "STATUS=broker unreachable; 2 queued; upgrade downloading", status
        agent.step()  # unchanged (and within a second): nothing more is sent
        receiver.settimeout(0.3)
        with pytest.raises(TimeoutError):
            receiver.recv(4096)
    finally:
        agent.shutdown()
        receiver.close()
