"""The sans-I/O probe session: what is sent, what is accepted, how cameras merge."""

from __future__ import annotations

import pytest

from agent.discovery import wsd
from agent.discovery.cameras import ProbeSession, probe_offsets
from agent.discovery.wsd import DEVICE, NETWORK_VIDEO_TRANSMITTER, ProbeMatches, TargetService
from tests.discovery.conftest import real_probe_match

REAL_PROBE_ID = "urn:uuid:2de9f5ad-abd2-4c0e-9ba8-178098d67f01"


def session_with_ids(*ids: str) -> ProbeSession:
    remaining = iter(ids)
    return ProbeSession(make_message_id=lambda: next(remaining))


def test_one_probe_per_onvif_type() -> None:
    probes = [wsd.decode(p) for p in session_with_ids("uuid:a", "uuid:b").probes()]
    assert [p.types for p in probes] == [(NETWORK_VIDEO_TRANSMITTER,), (DEVICE,)]  # type: ignore[union-attr]
    assert [p.message_id for p in probes] == ["uuid:a", "uuid:b"]


def test_client_parses_real_camera_probe_match() -> None:
    data = real_probe_match()
    # The camera answered a probe whose MessageID we spell with a bare "uuid:" and upper case.
    session = session_with_ids("uuid:2DE9F5AD-ABD2-4C0E-9BA8-178098D67F01", "urn:uuid:other")
    (camera,) = session.feed(data, ("192.168.1.104", 3702))
    assert camera.endpoint == "urn:uuid:2419d68a-2dd2-21b2-a205-78a5dd0f9593"
    assert camera.address == "192.168.1.104"
    assert camera.xaddrs == ("http://192.168.1.104:80/onvif/device_service",)
    assert camera.name == "IPCAM"
    assert camera.model == "631GA"
    assert camera.types == ()
    assert session.cameras() == [camera]


def test_answers_to_someone_elses_probe_are_ignored() -> None:
    session = session_with_ids("urn:uuid:mine-1", "urn:uuid:mine-2")
    assert session.feed(real_probe_match(), ("192.168.1.104", 3702)) == []
    assert session.stats.unrelated == 1
    assert session.cameras() == []


def test_same_camera_answering_both_probes_is_listed_once() -> None:
    session = session_with_ids("urn:uuid:p1", "urn:uuid:p2")
    first = TargetService(
        "urn:uuid:CAFE", (NETWORK_VIDEO_TRANSMITTER,), ("s://a/1",), ("http://x/1",), 1
    )
    second = TargetService("uuid:cafe", (DEVICE,), ("s://a/2",), ("http://x/1", "http://x/2"), 2)
    for relates, target in (("urn:uuid:p1", first), ("uuid:P2", second)):
        message = ProbeMatches(wsd.WsdVersion.V2009_01, "urn:uuid:r", relates, (target,))
        session.feed(wsd.encode(message), ("10.0.0.5", 3702))
    (camera,) = session.cameras()
    assert camera.types == (NETWORK_VIDEO_TRANSMITTER, DEVICE)
    assert camera.xaddrs == ("http://x/1", "http://x/2")
    assert camera.scopes == ("s://a/1", "s://a/2")
    assert camera.metadata_version == 2


def test_garbage_is_counted_not_raised() -> None:
    session = session_with_ids("uuid:a", "uuid:b")
    assert session.feed(b"<not xml", ("10.0.0.1", 1)) == []
    assert session.stats.rejected == 1


def test_probe_offsets_back_off_and_cap() -> None:
    assert probe_offsets(5, 0.1, 0.3) == pytest.approx([0.0, 0.1, 0.3, 0.6, 0.9])
    assert probe_offsets(1, 0.1, 1.0) == [0.0]


def test_endpoint_flood_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.discovery import cameras as cameras_module

    monkeypatch.setattr(cameras_module, "MAX_CAMERAS", 3)
    session = session_with_ids("urn:uuid:p1", "urn:uuid:p2")
    for n in range(10):
        target = TargetService(f"urn:uuid:{n}", (), (), (f"http://10.0.0.{n}/",), 1)
        message = ProbeMatches(wsd.WsdVersion.V2005_04, f"urn:uuid:m{n}", "urn:uuid:p1", (target,))
        session.feed(wsd.encode(message), ("10.0.0.1", 3702))
    assert [c.endpoint for c in session.cameras()] == ["urn:uuid:0", "urn:uuid:1", "urn:uuid:2"]
