"""Withdrawal and erasure hold on the raw disk (issue 11, item 2).

The agent's state directory is a real ext4 file system on a loop device.  The
real agent runs on it, every kind of personal data is planted through the
device's own channels (tests/privacy/scenario.py), the agent itself confirms it
holds it (its export, its log bundle, ``edge-agent match``), then one purpose is
withdrawn -- or the account erased -- and, the agent stopped and the file
system unmounted, the whole image is searched: live files, free blocks, the
journal.  No marker of the withdrawn purpose may be found in any form, and no
JPEG header (let alone a decodable JPEG) where snapshots were planted.

Each test uses one channel the owner has: a signed ``consent.set`` or
``data.erase`` over MQTT (after the broker came back, so the queue drained
first), or ``edge-agent consent withdraw`` on the device while the agent runs
offline with the events still queued.

An event is looked for by its ``msg_id`` as well: found next to its topic (the
device and the event type), its purpose and its times, it is the record that
such an event happened then -- for ``face.match``, that an enrolled person was
at the door -- whether or not its payload is still readable.  A pseudonym in an
event (``person_id``, ``plate``) is a marker too; the retired device pseudonym
is not, since the tombstone names it on purpose.

The purpose's data keys are markers too, read before the withdrawal in both
forms (as their files hold them, wrapped by the device key, and unwrapped).
Everything the agent stores is sealed, so no plaintext marker would be found
even if the withdrawal did nothing; what makes the left-over ciphertext
unreadable is that no copy of its key survives anywhere on the disk -- and the
device key, in a file on the same disk, would open a wrapped one.

A statistics message (``usage_statistics``) holds counts of event types only,
nothing a marker could be planted in; it is looked for by its ``msg_id``.  The
device runs with the shortest period (60 s), so that test waits up to a minute
for one to be queued.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.rights.registry import ALL_KEY_DOMAINS
from tests.privacy.device import Device, Markers
from tests.privacy.disk import LoopDisk, Scan, scan
from tests.privacy.scenario import Planted, data_keys, plant, queued_events, wait_until
from tests.support.broker import Broker
from tests.support.mqtt import Collector

pytestmark = pytest.mark.slow
# A period of 60 s closes within 60 s of any moment; then the tick and the queueing.
STATISTICS_WAIT_SECONDS = 90.0


def _connected(broker: Broker, planted: Planted) -> Collector:
    """The broker back up, and the agent (re)connected to it (its status is seen)."""
    broker.start()
    mqtt = Collector(broker.host, broker.port, f"{planted.base}/#")
    wait_until("the agent to reconnect", lambda: f"{planted.base}/status" in mqtt.topics())
    return mqtt


def withdraw_over_mqtt(broker: Broker, planted: Planted, purpose: str) -> dict[str, Any]:
    mqtt = _connected(broker, planted)
    try:
        reply = mqtt.request(f"{planted.base}/cmd/consent.set",
                             {"purpose": purpose, "granted": False}, signer=planted.owner)
    finally:
        mqtt.close()
    assert reply["ok"] and reply["result"]["granted"] is False, reply
    return reply["result"]  # type: ignore[no-any-return]


def withdraw_on_device(dev: Device, purpose: str) -> None:
    done = dev.cli("consent", "withdraw", purpose)
    assert f"{purpose}: withdrawn".encode() in done.stdout, done.stdout


def assert_clean(result: Scan, what: str, *, jpegs: bool) -> None:
    residue = result.residue()
    pictures = result.planted_jpegs() if jpegs else []
    assert not residue and not pictures, (
        f"after {what} the raw image still holds:\n{result.report(residue, pictures)}"
    )


def test_withdrawing_face_recognition_leaves_no_trace_on_the_disk(
    device: Device, disk: LoopDisk, broker: Broker
) -> None:
    planted = plant(device, broker, Markers())
    m = planted.markers
    keys = data_keys(device, "face_recognition")
    withdraw_over_mqtt(broker, planted, "face_recognition")
    export, _ = device.export()
    assert export["holders"]["face_gallery"]["identities"] == []
    assert "face.match" not in {e["type"] for e in queued_events(export)}
    device.stop()
    texts = {"name": m.name, "face label": m.face_label,
             **planted.pseudonyms("face.match", "person_id"),
             **planted.message_ids("face.match")}
    binaries = {f"template bytes {i}": w for i, w in enumerate(planted.vectors)}
    assert_clean(scan(disk, texts, {**binaries, **keys}), "withdrawing face_recognition",
                 jpegs=True)


def test_withdrawing_plate_recognition_leaves_no_trace_on_the_disk(
    device: Device, disk: LoopDisk, broker: Broker
) -> None:
    planted = plant(device, broker, Markers())
    m = planted.markers
    keys = data_keys(device, "plate_recognition")
    withdraw_over_mqtt(broker, planted, "plate_recognition")
    export, _ = device.export()
    assert export["holders"]["plates"]["plates"] == []
    device.stop()
    texts = {"plate": m.plate, "plate label": m.plate_label,
             **planted.pseudonyms("plate.match", "plate"),
             **planted.message_ids("plate.match")}
    assert_clean(scan(disk, texts, keys), "withdrawing plate_recognition", jpegs=False)


def test_withdrawing_event_snapshots_leaves_no_picture_on_the_disk(
    device: Device, disk: LoopDisk, broker: Broker
) -> None:
    plant(device, broker, Markers())
    keys = data_keys(device, "event_snapshots")
    withdraw_on_device(device, "event_snapshots")
    export, files = device.export()
    queued = queued_events(export)
    assert any(e["type"] == "face.match" for e in queued)  # the events stay, without images
    assert not any("img" in e for e in queued) and not files, files.keys()
    device.stop()
    assert_clean(scan(disk, {}, keys), "withdrawing event_snapshots", jpegs=True)


def test_withdrawing_troubleshooting_logs_leaves_no_log_line_on_the_disk(
    device: Device, disk: LoopDisk, broker: Broker
) -> None:
    planted = plant(device, broker, Markers())
    keys = data_keys(device, "troubleshooting_logs")
    withdraw_on_device(device, "troubleshooting_logs")
    assert planted.markers.log_path.encode() not in device.log_bundle()
    device.stop()
    texts = {"logged request path": planted.markers.log_path}
    assert_clean(scan(disk, texts, keys), "withdrawing troubleshooting_logs", jpegs=False)


def test_withdrawing_cloud_events_leaves_no_event_on_the_disk(
    device: Device, disk: LoopDisk, broker: Broker
) -> None:
    planted = plant(device, broker, Markers())
    keys = data_keys(device, "cloud_events")
    withdraw_on_device(device, "cloud_events")
    export, _ = device.export()
    queued = [e["type"] for e in queued_events(export)]
    assert "motion" not in queued, queued
    device.stop()
    # Not the retired device pseudonym: the tombstone names it so receivers can act on it.
    texts = planted.message_ids("motion")
    assert_clean(scan(disk, texts, keys), "withdrawing cloud_events", jpegs=False)


def test_withdrawing_usage_statistics_leaves_no_statistics_message_on_the_disk(
    device: Device, disk: LoopDisk, broker: Broker
) -> None:
    plant(device, broker, Markers())

    def statistics_queued() -> list[dict[str, Any]] | None:
        export, _ = device.export()
        found = [e for e in queued_events(export) if e["type"] == "stats"]
        return found or None

    queued = wait_until("a statistics message queued (60 s period)", statistics_queued,
                        timeout=STATISTICS_WAIT_SECONDS)
    keys = data_keys(device, "usage_statistics")
    withdraw_on_device(device, "usage_statistics")
    export, _ = device.export()
    assert "stats" not in {e["type"] for e in queued_events(export)}
    device.stop()
    texts = {f"stats event {i} (its msg_id)": e["id"] for i, e in enumerate(queued)}
    assert_clean(scan(disk, texts, keys), "withdrawing usage_statistics", jpegs=False)


def test_account_erase_leaves_no_personal_data_on_the_disk(
    device: Device, disk: LoopDisk, broker: Broker
) -> None:
    planted = plant(device, broker, Markers(), wifi=True)
    m = planted.markers
    keys = data_keys(device, *ALL_KEY_DOMAINS)
    assert {"face_recognition", "wifi", "binding"} <= {k.split()[0] for k in keys}, keys.keys()
    mqtt = _connected(broker, planted)
    try:
        reply = mqtt.request(f"{planted.base}/cmd/data.erase", {"account_cancellation": True},
                             signer=planted.owner)
    finally:
        mqtt.close()
    assert reply["ok"] and reply["result"]["complete"], reply
    device.stop()
    # Item 9: the NetworkManager profile the agent created is gone as well.
    assert device.nm_profiles() == {}
    texts = {
        "name": m.name, "face label": m.face_label, "plate": m.plate,
        "plate label": m.plate_label, "home SSID": m.ssid_home, "failed SSID": m.ssid_failed,
        "passphrase": m.passphrase, "logged request path": m.log_path, "account": m.account,
        **planted.pseudonyms("face.match", "person_id"),
        **planted.pseudonyms("plate.match", "plate"),
        **{k: v for kind in ("face.match", "plate.match", "motion")
           for k, v in planted.message_ids(kind).items()},
    }
    binaries = {f"template bytes {i}": w for i, w in enumerate(planted.vectors)}
    assert_clean(scan(disk, texts, {**binaries, **keys}), "the account erase", jpegs=True)
