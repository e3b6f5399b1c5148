"""The data export is one readable archive: every store's data, decoded, with no internal file.

Real stores throughout: the face gallery (numpy vectors on disk), the plate
watch-list (SQLite), the consent ledger and outbox (SQLite), snapshot files, the
log store and the keyed audit log; then `edge-agent data export`, and
`data.export` over a real broker, sealed to the requester.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import pathlib
import stat
import threading
import zipfile
from collections.abc import Iterator
from typing import Any

import cbor2
import numpy as np
import pytest

from agent.audit import AuditLog
from agent.config import AgentConfig, MqttSettings
from agent.errors import TooLargeError
from agent.events import Event
from agent.feature import Mode
from agent.layout import StateLayout
from agent.matching.faces import FaceRecogniser
from agent.matching.gallery import Gallery
from agent.matching.plates import make_entry
from agent.matching.plates_store import PlateStore
from agent.matching.tracks import Tracker
from agent.purposes import Purpose
from drivers.camera import build_camera
from drivers.cli import main
from drivers.compose import compose
from drivers.rights.feature import build_rights_handlers
from drivers.runtime import Agent
from drivers.vision.feature import build_faces, build_plates
from tests.support.agent_harness import device_base, make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.owner import Signer

T0 = 1_790_000_000.0
NAME, LABEL = "Ada Lovelace", "Grandmother"
PLATE, PLATE_LABEL = "ZX99QQ", "Neighbour's van"
JPEG = b"\xff\xd8\xff\xe0" + b"EVENT-IMAGE-7" * 20
SNAPSHOT = b"\xff\xd8\xff\xe0" + b"SNAPSHOT-5521" * 20


def utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plant(state: pathlib.Path, config: AgentConfig) -> dict[str, Any]:
    """Real data in every store, the way the features put it there."""
    layout = StateLayout(state)
    agent = Agent.build(config, builders=(build_camera, build_faces, build_plates), environ={})
    try:
        ledger = agent.ledger
        for purpose in (Purpose.FACE_RECOGNITION, Purpose.PLATE_RECOGNITION,
                        Purpose.CLOUD_EVENTS, Purpose.EVENT_SNAPSHOTS):
            ledger.grant(purpose, T0)
        ledger.withdraw(Purpose.CLOUD_EVENTS, T0 + 5)
        ledger.refresh()
        audit = agent.composition.audit
        gallery = Gallery.open(layout.faces_dir, 16)
        recogniser = FaceRecogniser(
            gallery, ledger.is_granted, threshold=0.5, tracker=Tracker(3, 5), camera="cam0",
            audit=audit,
        )
        rng = np.random.default_rng(7)
        identity = recogniser.enrol(NAME, rng.normal(size=(3, 16)), T0 + 10, label=LABEL)
        recogniser.enrol(NAME, rng.normal(size=(2, 16)), T0 + 20)
        assert ledger.keys is not None
        store = PlateStore.in_state_dir(state, keys=ledger.keys)
        store.put(make_entry(PLATE, label=PLATE_LABEL, now=T0 + 30))
        store.close()
        agent.emit(Event(
            "face.match", T0 + 40, fields={"score": 0.91, "known": True, "label": LABEL},
            identifiers={"person_id": identity.id}, image=JPEG,
        ))
        agent.sink.flush(T0 + 40)
        head = audit.head()
    finally:
        agent.composition.close()
    layout.snapshots_dir.mkdir(parents=True)
    (layout.snapshots_dir / "event-0001.jpg").write_bytes(SNAPSHOT)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        {"ts": T0 + 11, "level": "INFO", "msg": f"gallery: enrolled {identity.id}"},
        {"ts": T0 + 12, "level": "INFO", "msg": "matched [REDACTED:known] at the door"},
        {"ts": T0 + 13, "level": "INFO", "msg": "broker connected"},
    ]
    (layout.logs_dir / "agent.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return {"id": identity.id, "head": head}


@pytest.fixture
def planted(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, AgentConfig, dict[str, Any]]]:
    state = tmp_path / "state"
    config = dataclasses.replace(
        AgentConfig(state_dir=state), mqtt=MqttSettings(enabled=False)
    )
    yield state, config, plant(state, config)


def test_the_cli_export_is_a_complete_readable_archive(
    planted: tuple[pathlib.Path, AgentConfig, dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    state, _, facts = planted
    out = tmp_path / "export.zip"
    out.write_bytes(b"an older export, readable by all")
    out.chmod(0o644)
    previous = os.umask(0o022)
    try:
        assert main(["data", "export", "--state-dir", str(state), "-o", str(out)]) == 0
    finally:
        os.umask(previous)
    # Personal data: readable by the file's owner alone, whatever the umask or the old file.
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    archive = zipfile.ZipFile(out)
    names = archive.namelist()
    assert names[0] == "export.json"
    # Nothing but the document and the files it names; no path from the device.
    assert all(n == "export.json" or n.startswith("files/") for n in names)
    assert not any(n.startswith("/") or ".." in n or n.endswith(".bin") for n in names)
    text = archive.read("export.json").decode()
    assert str(state) not in text and "$base64" not in text
    document = json.loads(text)
    assert document["format"] == "edge-agent-personal-data" and document["version"] == 2
    assert document["complete"] is True and document["created_at"].endswith("Z")
    holders = document["holders"]

    [identity] = holders["face_gallery"]["identities"]
    assert (identity["name"], identity["label"], identity["id"]) == (NAME, LABEL, facts["id"])
    assert identity["samples"] == 5
    assert identity["enrolled_at"] == utc(T0 + 10)
    assert [e["samples"] for e in identity["enrolments"]] == [3, 2]
    assert "keeps no face images" in holders["face_gallery"]["face_crops"]

    [plate] = holders["plates"]["plates"]
    assert (plate["plate"], plate["label"]) == (PLATE, PLATE_LABEL)
    assert plate["created_at"] == utc(T0 + 30)

    history = holders["consent"]["history"]
    assert [(h["purpose"], h["action"]) for h in history][-1] == ("cloud_events", "withdraw")
    assert [h["at"] for h in history][-1] == utc(T0 + 5)

    [queued] = [q for q in holders["outbox"]["queued_events"]
                if q["event"]["type"] == "face.match"]
    event = queued["event"]
    assert event["f"]["label"] == LABEL and event["ts"].endswith("Z")
    assert set(event["ids"]) == {"person_id"}  # as the receiver gets it: a pseudonym
    assert archive.read(event["img"]["file"]) == JPEG

    [snapshot] = holders["snapshots"]["files"]
    assert snapshot["name"] == "snapshots/event-0001.jpg"
    assert archive.read(snapshot["content"]["file"]) == SNAPSHOT

    logs = holders["logs"]
    assert [line["msg"] for line in logs["lines_about_subject"]] == [
        f"gallery: enrolled {facts['id']}", "matched [REDACTED:known] at the door",
    ]
    assert logs["lines_about_subject"][0]["ts"].endswith("Z")

    audit = document["audit"]
    assert audit["chain"] == "hmac-sha256"
    assert audit["head"] == {"index": audit["entries"][-1]["index"],
                             "mac": audit["entries"][-1]["mac"]}
    # The head published before the export is in the trail the export carries.
    assert audit["entries"][facts["head"].index]["mac"] == facts["head"].mac.hex()
    kinds = [e["kind"] for e in audit["entries"]]
    assert "face.enrol" in kinds and "consent.withdraw" in kinds


def test_json_alone_and_the_reply_cap(
    planted: tuple[pathlib.Path, AgentConfig, dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    state, config, _ = planted
    out = tmp_path / "export.json"
    args = ["data", "export", "--format", "json", "--state-dir", str(state), "-o", str(out)]
    assert main(args) == 0
    document = json.loads(out.read_text())
    assert document["files_omitted"] == 2  # the event image and the snapshot, named not sent
    cli = compose(config, Mode.CLI)
    try:
        full = build_rights_handlers(config, cli.registry, clock=cli.clock, audit=cli.audit,
                                     max_reply_bytes=None)["data.export"]({})
        size = int(str(full["bytes"]))

        def capped(limit: int) -> Any:
            return build_rights_handlers(config, cli.registry, clock=cli.clock, audit=cli.audit,
                                         max_reply_bytes=limit)["data.export"]({})

        as_cbor = build_rights_handlers(config, cli.registry, clock=cli.clock, audit=cli.audit)[
            "data.export"]({"format": "cbor"})
        assert cbor2.loads(as_cbor["data"])["holders"]["plates"]["plates"][0]["plate"] == PLATE
        reply = capped(size - 1)
        assert reply["files_omitted"] is True and int(str(reply["bytes"])) < size
        inner = zipfile.ZipFile(io.BytesIO(reply["data"]))
        assert inner.namelist() == ["export.json"]
        with pytest.raises(TooLargeError, match="edge-agent data export"):
            capped(200)
    finally:
        cli.close()


def test_data_export_over_mqtt_is_the_archive_sealed_to_the_requester(
    planted: tuple[pathlib.Path, AgentConfig, dict[str, Any]], broker: Broker
) -> None:
    state = planted[0]
    owner = Signer()
    owner.enrol_in_state(state)
    base = device_base(state)
    config = make_config(state, broker.port)
    agent = Agent.build(config, builders=(build_camera, build_faces, build_plates), environ={})
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    sub = Collector(broker.host, broker.port, f"{base}/status")
    try:
        assert sub.wait_for(lambda c: any(m.payload == b"online" for m in c.messages), 20)
        reply = sub.request(f"{base}/cmd/data.export", {}, signer=owner, sealed=True)
        assert reply["ok"], reply
        # The broker saw only ciphertext.
        assert NAME.encode() not in sub.last_raw_reply
        result = reply["result"]
        archive = zipfile.ZipFile(io.BytesIO(result["data"]))
        document = json.loads(archive.read("export.json"))
        [identity] = document["holders"]["face_gallery"]["identities"]
        assert identity["name"] == NAME
        assert result["audit_head"] == document["audit"]["head"]
        assert archive.read("files/snapshots/event-0001.jpg") == SNAPSHOT
    finally:
        agent.request_stop()
        thread.join(15)
        sub.close()
    audit = AuditLog.in_state_dir(state)
    try:
        assert audit.entries()[-1].kind == "data.export"
        assert audit.verify().ok
    finally:
        audit.close()
