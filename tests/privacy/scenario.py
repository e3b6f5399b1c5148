"""Plant every kind of personal data through the agent's real channels, then withdraw or erase.

Two runs of ``edge-agent run`` on the same state directory:

1. with the broker up: the installer binds the owner (key and account) over the
   LAN API, the camera's person is matched (``face.match`` with a snapshot), its
   pattern makes a ``motion`` event, the owner's app reports the watched plate
   (``plate.observe`` -> ``plate.match``); all are delivered, so what they leave
   behind is what delivered-and-deleted rows leave;
2. with the broker down: the same video again, so ``face.match`` (with its
   snapshot) and ``motion`` stay queued in the outbox.

Before that the owner granted every purpose, enrolled the person (name, label)
and the plate (text, label) with the CLI; the LAN API logged a request line with
a marker in it; for the account test Wi-Fi was provisioned (a failed SSID, then
the home one, with a passphrase).  ``Planted`` then holds what the agent's own
export and log bundle show -- the positive control that the data is really there.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from agent.keystore import DataKeys
from agent.layout import StateLayout
from tests.privacy.device import Device, Markers
from tests.support.broker import Broker
from tests.support.mqtt import Collector, decode_payload
from tests.support.owner import Signer

WAIT_SECONDS = 15.0


def wait_until(what: str, probe: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """``probe()`` until it returns something true; fails naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def vector_windows(vector_rows: Iterable[np.ndarray], per_row: int = 2) -> list[bytes]:
    """Distinctive 64-byte windows of each stored float32 template row (mostly zeros otherwise)."""
    windows: list[bytes] = []
    for row in vector_rows:
        raw = np.asarray(row, np.float32).tobytes()
        floats = np.asarray(row, np.float32)
        scores = [
            (len({float(x) for x in floats[i : i + 16] if x != 0}), i)
            for i in range(0, len(floats) - 16, 16)
        ]
        for _, start in sorted(scores, reverse=True)[:per_row]:
            windows.append(raw[start * 4 : start * 4 + 64])
    return windows


def enrolment_vectors(paths: Iterable[pathlib.Path]) -> list[np.ndarray]:
    """The template rows ``edge-agent enrol face`` stores for these photos, computed here."""
    # lazy: heavy (numpy, cv2) -- the same public functions the CLI calls
    from agent.matching.search import l2_normalise
    from agent.matching.settings import FaceEmbedderKind, MatchingSettings
    from drivers.vision.faces import HaarDetector, build_embedder, main_face_box, read_image

    settings = MatchingSettings(face_embedder=FaceEmbedderKind.LBP)  # as tests/privacy/device.py
    embedder, detector = build_embedder(settings), HaarDetector()
    rows = []
    for path in paths:
        image = read_image(path)
        rows.append(l2_normalise(embedder.embed(image, main_face_box(detector, image))[None])[0])
    return rows


@dataclasses.dataclass
class Planted:
    markers: Markers
    base: str
    owner: Signer
    delivered: list[dict[str, Any]]  # events the broker delivered in the first run
    export: dict[str, Any]  # `edge-agent data export` during the second run
    files: dict[str, bytes]  # the files the export names (snapshots)
    bundle: bytes  # `edge-agent logs bundle` during the second run
    vectors: list[bytes]  # windows of the enrolled template rows

    def queued(self) -> list[dict[str, Any]]:
        return queued_events(self.export)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in [*self.delivered, *self.queued()] if e.get("type") == kind]

    def pseudonyms(self, kind: str, identifier: str) -> dict[str, str]:
        return {
            f"{kind} {identifier} pseudonym {i}": p
            for i, p in enumerate(sorted({e["ids"][identifier] for e in self.events(kind)}))
        }

    def message_ids(self, kind: str) -> dict[str, str]:
        """The id of every event of ``kind``: where it is, the event's record is (its row)."""
        return {f"{kind} event {i} (its msg_id)": e["id"] for i, e in enumerate(self.events(kind))}


def data_keys(dev: Device, *domains: str) -> dict[str, bytes]:
    """Every live data key of ``domains``: as its file holds it (wrapped) and unwrapped.

    The device key sits in a 0600 file on the same disk, so a wrapped data key
    left anywhere on it (a free block, the journal) would open every ciphertext
    the erasure left behind: after crypto-erase neither form may be found.
    Read before the withdrawal, with the agent's own key store.
    """
    layout = StateLayout(dev.state)
    keys = DataKeys(layout)
    found: dict[str, bytes] = {}
    for domain in domains:
        for path in layout.data_key_files(domain):
            number = int(path.name[len(domain) + 1 : -len(".key")])
            found[f"{domain} data key {number} (wrapped, as in its file)"] = path.read_bytes()
            found[f"{domain} data key {number} (unwrapped)"] = keys.key(domain, number).secret
    assert found, f"no live data key of {', '.join(domains)}: nothing was sealed"
    return found


def queued_events(export: dict[str, Any]) -> list[dict[str, Any]]:
    """The outbox's queued events as an export shows them (decoded)."""
    section = export["holders"].get("outbox", {})
    return [q["event"] for q in section.get("queued_events", [])]


def _kinds(events: Iterable[dict[str, Any]]) -> set[str]:
    return {e["type"] + ("+img" if "img" in e else "") for e in events}


def plant(dev: Device, broker: Broker, markers: Markers, *, wifi: bool = False) -> Planted:
    # Before the agent runs: the owner's consent and enrolments, as on the device.
    dev.grant_all()
    dev.enrol_face(markers)
    dev.enrol_plate(markers)

    # Run 1, broker up: the installer binds the owner; everything is delivered.  Every
    # device topic, from before the start: the first events go out under the old device id.
    mqtt = Collector(broker.host, broker.port, "edge/#")
    try:
        dev.start()
        dev.log_request(markers)  # first: the provisioning API closes once Wi-Fi is provisioned
        owner = Signer()
        base = f"edge/{dev.bind_owner(markers, owner.public_key)}"
        wait_until("the agent on its new topics", lambda: f"{base}/status" in mqtt.topics())
        if wifi:
            dev.provision_wifi(markers)
        reply = mqtt.request(f"{base}/cmd/plate.observe",
                             {"text": markers.plate, "camera": "gate"}, signer=owner)
        assert reply.get("ok"), reply

        def delivered() -> list[dict[str, Any]] | None:
            events = [decode_payload(m.payload) for m in list(mqtt.messages)
                      if "/events/" in m.topic]
            return events if {"face.match+img", "motion", "plate.match"} <= _kinds(events) else None

        events = wait_until("a face.match with a snapshot, a motion and a plate.match "
                            "delivered over MQTT", delivered)
    finally:
        mqtt.close()
    dev.stop()

    # Run 2, broker down: the camera's events stay queued.
    broker.stop()
    dev.start()

    def queued() -> tuple[dict[str, Any], dict[str, bytes]] | None:
        export, files = dev.export()
        wanted = {"face.match+img", "motion"}
        return (export, files) if wanted <= _kinds(queued_events(export)) else None

    export, files = wait_until("a face.match with a snapshot and a motion queued", queued)
    bundle = dev.log_bundle()
    paths = sorted(dev.root.glob("enrol-*.png"))
    planted = Planted(markers, base, owner, events, export, files, bundle,
                      vector_windows(enrolment_vectors(paths)))
    assert_really_there(dev, planted, wifi=wifi)
    return planted


def assert_really_there(dev: Device, planted: Planted, *, wifi: bool) -> None:
    """Positive control: the agent itself shows every planted item (the test can fail for real)."""
    m, holders = planted.markers, planted.export["holders"]
    people = holders["face_gallery"]["identities"]
    assert [(p["name"], p.get("label")) for p in people] == [(m.name, m.face_label)], people
    match = dev.cli("match", str(sorted(dev.root.glob("enrol-*.png"))[0]))
    assert m.name in match.stdout.decode() and b"score 1.000" in match.stdout, match.stdout
    plates = holders["plates"]["plates"]
    assert [(p["plate"], p.get("label")) for p in plates] == [(m.plate, m.plate_label)], plates
    snapshots = [name for name in planted.files if name.endswith(".jpg")]
    assert snapshots, planted.files.keys()
    assert m.log_path.encode() in planted.bundle
    labels = {e["f"].get("label") for e in planted.events("face.match")}
    assert m.face_label in labels, labels
    assert m.plate_label in {e["f"].get("label") for e in planted.events("plate.match")}
    owners = [k.get("label") for k in holders["principals"]["keys"] if k["role"] == "owner"]
    assert owners == [m.account], holders["principals"]
    if wifi:
        assert holders["wifi_credentials"]["ssid"] == m.ssid_home, holders["wifi_credentials"]
        assert dev.nm_profiles(), "provisioning saved no NetworkManager profile"
