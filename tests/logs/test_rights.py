"""Export contains every planted item; erase leaves no planted byte anywhere in the state dir."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.errors import DecodeError, DeviceIOError, VerificationError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.redact import Redactor
from agent.ports import CommandHandler, CommandResult, Outcome
from agent.rights.registry import DataRegistry, ErasureScope
from agent.rights.signing import verify_reply
from drivers.logs.files import FileHolder
from drivers.logs.setup import install_logging
from drivers.logs.store import LogStore
from drivers.rights.feature import build_rights_handlers, load_or_create_device_key
from tests.logs.holders import SqliteHolder, files_containing
from tests.support.clock import FixedClock

KEY = b"k" * 32
MARKERS = {
    "gallery": b"PLANTED-FACE-LABEL-7731",
    "watchlist": b"PLANTED-PLATE-ZX99QQ",
    "snapshot": b"PLANTED-SNAPSHOT-BYTES-5521",
    "wifi": b"PLANTED-WIFI-PSK-0042",
    "binding": b"PLANTED-BINDING-TOKEN-9876",
    "log": b"PLANTED-LOG-LINE-3141",
}


def plain(handlers: dict[str, CommandHandler]) -> dict[str, Any]:
    """The handlers' reply bodies (an erasure's Outcome also lists topics to clear)."""

    def unwrap(handler: CommandHandler) -> Any:
        def call(args: dict[str, object]) -> CommandResult:
            reply = handler(args)
            return reply.result if isinstance(reply, Outcome) else reply

        return call

    return {name: unwrap(handler) for name, handler in handlers.items()}


def stores_of_logs_camera_and_binding(state_dir: pathlib.Path, logs: LogStore) -> DataRegistry:
    """The holdings the logs, camera and provisioning features declare for these files."""
    layout = StateLayout(state_dir)
    registry = DataRegistry()
    registry.add_holder(logs)
    registry.add_holder(FileHolder("snapshots", layout.snapshots_dir))
    registry.add_holder(FileHolder("binding", *layout.account_files), ErasureScope.BINDING)
    return registry


class Fixture:
    def __init__(self, state_dir: pathlib.Path) -> None:
        self.state_dir = state_dir
        self.config = AgentConfig(state_dir=state_dir)
        self.logging = install_logging(
            self.config, Redactor(), keys=DataKeys(StateLayout(self.config.state_dir))
        )
        self.audit = AuditLog.in_state_dir(state_dir)
        self.gallery = SqliteHolder("gallery", state_dir / "gallery.sqlite")
        self.watchlist = SqliteHolder("watchlist", state_dir / "watchlist.sqlite")
        self.registry = stores_of_logs_camera_and_binding(state_dir, self.logging.store)
        self.registry.add_holder(self.gallery)
        self.registry.add_holder(self.watchlist)
        wifi_file = state_dir / "wifi" / "credentials.json"
        self.registry.add_holder(FileHolder("wifi", wifi_file), ErasureScope.WIFI)
        self.handlers = plain(build_rights_handlers(
            self.config, self.registry, audit=self.audit, device_key=KEY, clock=FixedClock(5000.0),
            retained_topics=lambda: ["edge/EA-1/status", "edge/EA-1/gallery"],
        ))
        # Plant one marker in each store, plus decoys so erased pages are not trivially empty.
        for i in range(50):
            self.gallery.add(f"decoy-{i}", b"\x01" * 64, 10.0)
        self.gallery.add(MARKERS["gallery"].decode(), b"\x00embedding", 100.0)
        self.watchlist.add(MARKERS["watchlist"].decode(), b"", 100.0)
        (state_dir / "snapshots").mkdir()
        (state_dir / "snapshots" / "ev1.jpg").write_bytes(b"\xff\xd8" + MARKERS["snapshot"])
        wifi_file.parent.mkdir()
        wifi_file.write_bytes(b'{"psk": "' + MARKERS["wifi"] + b'"}')
        (state_dir / "provisioning").mkdir()
        (state_dir / "provisioning" / "account.json").write_bytes(
            b'{"account": "' + MARKERS["binding"] + b'"}'
        )
        # A log line whose sensitive literal was unknown when written: erasure must get it too.
        logging.getLogger("edge.enrol").warning("enrolled %s", MARKERS["log"].decode())

    def close(self) -> None:
        self.logging.close()
        self.gallery.close()
        self.watchlist.close()
        self.audit.close()


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Iterator[Fixture]:
    fixture = Fixture(tmp_path)
    try:
        yield fixture
    finally:
        fixture.close()


def _archive(reply: Any) -> tuple[dict[str, Any], zipfile.ZipFile]:
    archive = zipfile.ZipFile(io.BytesIO(reply["data"]))
    return json.loads(archive.read("export.json")), archive


def test_export_archive_contains_every_planted_item(world: Fixture) -> None:
    reply = world.handlers["data.export"]({"correlation_id": "req-1"})
    verify_reply(reply, KEY)
    assert reply["correlation_id"] == "req-1" and reply["complete"]
    assert reply["format"] == "zip" and isinstance(reply["data"], bytes)
    document, archive = _archive(reply)
    assert set(document["holders"]) == {
        "logs", "snapshots", "binding", "gallery", "watchlist", "wifi"
    }
    text = archive.read("export.json")
    for name in ("gallery", "watchlist", "wifi", "binding"):
        assert MARKERS[name] in text, name
    # The snapshot is a file of its own, named in the JSON by its archive path.
    assert archive.read("files/snapshots/ev1.jpg") == b"\xff\xd8" + MARKERS["snapshot"]
    assert b'"file": "files/snapshots/ev1.jpg"' in text
    assert str(world.state_dir).encode() not in text  # no absolute path


def test_json_export_names_the_files_it_leaves_out(world: Fixture) -> None:
    reply = world.handlers["data.export"]({"format": "json"})
    document = json.loads(str(reply["data"]))
    labels = [i["label"] for i in document["holders"]["gallery"]["items"]]
    assert MARKERS["gallery"].decode() in labels
    [snapshot] = document["holders"]["snapshots"]["files"]
    assert snapshot["name"] == "snapshots/ev1.jpg" and snapshot["content"]["omitted"] is True
    assert "$base64" not in str(reply["data"]) and reply["files_omitted"] is True


def test_erase_leaves_no_planted_byte_in_the_state_dir(world: Fixture) -> None:
    for name, marker in MARKERS.items():
        if name == "log":  # sealed at rest: only the store's reader sees it
            assert any(marker.decode() in line for line in world.logging.store.iter_lines())
        else:
            assert files_containing(world.state_dir, marker), marker
    reply: Any = world.handlers["data.erase"](
        {"account_cancellation": True, "correlation_id": "cancel-9"}
    )
    verify_reply(reply, KEY)
    assert reply["complete"] and reply["correlation_id"] == "cancel-9"
    assert reply["clear_retained_topics"] == ["edge/EA-1/gallery", "edge/EA-1/status"]
    assert set(reply["erased"]) >= {"gallery", "watchlist", "wifi", "binding", "snapshots", "logs"}
    for name, marker in MARKERS.items():
        assert files_containing(world.state_dir, marker) == [], name
    assert world.gallery.labels() == []
    assert [e.kind for e in AuditLog.in_state_dir(world.state_dir).entries()][-1] == (
        "account.cancel"
    )


def test_plain_erase_keeps_wifi_and_binding_unless_asked(world: Fixture) -> None:
    reply: Any = world.handlers["data.erase"]({})
    assert "wifi" not in reply["erased"] and "binding" not in reply["erased"]
    assert files_containing(world.state_dir, MARKERS["wifi"])
    assert files_containing(world.state_dir, MARKERS["gallery"]) == []
    reply = world.handlers["data.erase"]({"wifi": True})
    assert "wifi" in reply["erased"]
    assert files_containing(world.state_dir, MARKERS["wifi"]) == []


def test_tampered_reply_does_not_verify(world: Fixture) -> None:
    reply = dict(world.handlers["data.erase"]({}))
    reply["complete"] = False
    with pytest.raises(VerificationError):
        verify_reply(reply, KEY)


def test_bad_arguments_are_rejected(world: Fixture) -> None:
    with pytest.raises(DecodeError):
        world.handlers["data.erase"]({"wifi": "yes"})
    with pytest.raises(DecodeError):
        world.handlers["data.export"]({"format": "xml"})
    with pytest.raises(DecodeError):
        world.handlers["data.export"]({"correlation_id": "x" * 1000})


class BrokenHolder:
    name = "broken"

    def export_personal_data(self) -> dict[str, object]:
        raise DeviceIOError("disk gone")

    def erase_personal_data(self) -> int:
        raise DeviceIOError("disk gone")


def test_a_failing_holder_is_reported_not_hidden(tmp_path: pathlib.Path) -> None:
    registry = DataRegistry()
    registry.add_holder(BrokenHolder())
    registry.add_holder(FileHolder("snapshots", tmp_path / "snapshots"))
    config = AgentConfig(state_dir=tmp_path)
    handlers = plain(build_rights_handlers(config, registry, device_key=KEY, clock=FixedClock(1.0)))
    assert handlers["data.erase"]({})["failed"] == ["broken"]
    assert handlers["data.export"]({})["complete"] is False


def test_device_key_is_private_and_stable(tmp_path: pathlib.Path) -> None:
    first = load_or_create_device_key(tmp_path)
    assert len(first) == 32
    assert (tmp_path / "rights.key").stat().st_mode & 0o077 == 0
    assert load_or_create_device_key(tmp_path) == first


def test_gallery_and_watch_list_are_erased_even_with_matching_switched_off(
    tmp_path: pathlib.Path,
) -> None:
    """Enrolments made while matching was on must not outlive an erase after it is off."""
    import dataclasses

    from agent.feature import Mode
    from agent.matching.plates import make_entry
    from agent.matching.plates_store import PlateStore
    from agent.purposes import Purpose
    from drivers.compose import compose

    config = AgentConfig(state_dir=tmp_path)
    config = dataclasses.replace(
        config, matching=dataclasses.replace(config.matching, enabled=False)
    )
    store = PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    store.put(make_entry("ZX99QQ", now=1.0))
    store.close()
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "manifest.json").write_bytes(MARKERS["gallery"])
    cli = compose(config, Mode.CLI, clock=FixedClock(1.0))
    try:
        handlers = plain(cli.commands)
        exported = json.dumps(handlers["data.export"]({"format": "json"})["data"])
        assert "ZX99QQ" in exported
        handlers["data.erase"]({})
    finally:
        cli.close()
    assert files_containing(tmp_path, b"ZX99QQ") == []
    assert files_containing(tmp_path, MARKERS["gallery"]) == []

    # A withdrawal from the CLI purges the leftovers too.
    store = PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    store.put(make_entry("ZX99QQ", now=1.0))
    store.close()
    cli = compose(config, Mode.CLI, clock=FixedClock(2.0))
    try:
        cli.ledger.withdraw(Purpose.PLATE_RECOGNITION, 2.0)
    finally:
        cli.close()
    assert files_containing(tmp_path, b"ZX99QQ") == []
