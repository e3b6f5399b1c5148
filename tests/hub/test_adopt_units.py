"""Adoption's rules on their own: names from scopes, caps, presence, persistence, scheduling.

The property test throws arbitrary scope text (slashes, ``+``, ``#``, NUL,
any Unicode, thousands of characters) and arbitrary endpoints at the
registry: every name must be a valid, unique MQTT topic segment, and the same
after a restart even when the cameras rename themselves and answer in
another order.
"""

from __future__ import annotations

import urllib.parse
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.camera.adopt import (
    MAX_NAME,
    MAX_PER_ADDRESS,
    AdoptionRegistry,
    derive_name,
    sanitise,
    valid_name,
)
from agent.camera.hub import CameraSlot, FairScheduler
from agent.discovery.cameras import Camera
from agent.discovery.responder import ONVIF_SCOPE, endpoint_for_serial
from agent.discovery.wsd import NETWORK_VIDEO_TRANSMITTER

OWN = endpoint_for_serial("EA-HUB-0001")


def camera(
    endpoint: str,
    address: str = "192.168.1.10",
    *,
    name: str | None = None,
    hardware: str | None = None,
    xaddrs: tuple[str, ...] | None = None,
) -> Camera:
    scopes = [f"{ONVIF_SCOPE}/type/video_encoder"]
    if name is not None:
        scopes.append(f"{ONVIF_SCOPE}/name/{urllib.parse.quote(name, safe='')}")
    if hardware is not None:
        scopes.append(f"{ONVIF_SCOPE}/hardware/{urllib.parse.quote(hardware, safe='')}")
    if xaddrs is None:
        xaddrs = (f"http://{address}:8080/onvif/device_service",)
    return Camera(endpoint, address, xaddrs, (NETWORK_VIDEO_TRANSMITTER,), tuple(scopes), 1)


def registry(**changes: object) -> AdoptionRegistry:
    fields: dict[str, object] = {
        "own_endpoint": OWN,
        "reserved_names": ("front",),
        "configured_hosts": ("192.168.1.200",),
        "max_cameras": 64,
        "missing_probes": 2,
    }
    fields.update(changes)
    return AdoptionRegistry(**fields)  # type: ignore[arg-type]


def names_by_endpoint(reg: AdoptionRegistry) -> dict[str, str]:
    return {endpoint: c.name for endpoint, c in reg.cameras.items()}


scope_text = st.text(max_size=3000) | st.sampled_from(["", "Front", "front", "a/b+#\x00c", "Ω"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(scope_text, st.uuids(), st.booleans()), max_size=40),
    st.randoms(use_true_random=False),
)
def test_names_are_unique_topic_segments_and_survive_a_restart_and_renames(
    entries: list[tuple[str, uuid.UUID, bool]], rng: object
) -> None:
    first = registry()
    cameras = [
        camera(
            f"urn:uuid:{uid}",
            f"10.0.{k // 200}.{k % 200 + 1}",
            name=text if as_name else None,
            hardware=None if as_name else text,
        )
        for k, (text, uid, as_name) in enumerate(entries)
    ]
    first.probed(cameras, 1.0)
    names = [c.name for c in first.cameras.values()]
    assert len(names) == len({str(uid) for _, uid, _ in entries})  # one per endpoint
    assert len(set(names)) == len(names)
    assert "front" not in names  # a [[camera.sources]] name is never handed out
    for name in names:
        assert valid_name(name) and len(name) <= MAX_NAME
        assert not set(name) & set("/+#\x00 ") and name.isascii()

    # Restart: the persisted record gives back every name, whatever the cameras now say.
    second = registry()
    second.restore(first.record())
    assert names_by_endpoint(second) == names_by_endpoint(first)
    renamed = [camera(c.endpoint, c.address, name="renamed") for c in cameras]
    rng.shuffle(renamed)  # type: ignore[attr-defined]
    second.probed(renamed, 2.0)
    assert names_by_endpoint(second) == names_by_endpoint(first)
    assert all(c.present for c in second.cameras.values())


def test_name_derivation_is_deterministic_and_falls_back() -> None:
    assert sanitise("Lobby Cam #2/Ost+") == "lobby-cam-2-ost"
    assert sanitise("Caméra Entrée") == "camera-entree"
    assert sanitise("\x00/+#") == ""
    assert len(sanitise("x" * 10_000)) == 40
    endpoint = "urn:uuid:5b3ad3a6-6d38-4f80-a3ee-c34f8bd3a3a0"
    assert derive_name("Lobby", endpoint, set()) == "lobby"
    twin = derive_name("Lobby", endpoint, {"lobby"})
    assert twin.startswith("lobby-") and twin == derive_name("Lobby", endpoint, {"lobby"})
    # The same endpoint spelled uuid: or urn:uuid: gets the same suffix.
    assert derive_name("Lobby", "uuid:5B3AD3A6-6D38-4F80-A3EE-C34F8BD3A3A0", {"lobby"}) == twin
    assert derive_name("", endpoint, set()) == "camera"
    reg = registry()
    reg.probed([camera("urn:uuid:1", "192.168.1.20")], 1.0)  # no name, no hardware scope
    assert reg.names() == {"camera"}


def test_the_hub_itself_a_configured_camera_and_foreign_service_addresses_are_not_adopted() -> None:
    reg = registry()
    reg.probed(
        [
            camera(OWN, "192.168.1.2", name="me"),
            camera("uuid:" + OWN.removeprefix("urn:uuid:").upper(), "192.168.1.2", name="me"),
            camera("urn:uuid:c1", "192.168.1.200", name="front-again"),
            # The answer came from .30 but names another host's service: the hub's
            # ONVIF client (and the owner's password) must not be aimed elsewhere.
            camera("urn:uuid:c2", "192.168.1.30", xaddrs=("http://203.0.113.9/onvif/x",)),
            camera("urn:uuid:c3", "192.168.1.31", xaddrs=("ftp://192.168.1.31/x",)),
            camera("urn:uuid:c4", "192.168.1.32", name="ok", xaddrs=(
                "http://[fe80::1]/onvif/device_service",
                "https://192.168.1.32:8443/onvif/device_service",
            )),
        ],
        1.0,
    )  # fmt: skip
    assert reg.names() == {"ok"}
    assert reg.cameras["urn:uuid:c4"].xaddr == "https://192.168.1.32:8443/onvif/device_service"
    assert (reg.stats.ignored_configured, reg.stats.refused_xaddr) == (1, 2)


def test_caps_per_host_and_in_total_and_only_idle_uncredentialed_cameras_make_room() -> None:
    reg = registry(max_cameras=6)
    one_host = [camera(f"urn:uuid:h{k}", "192.168.1.40", name=f"h{k}") for k in range(10)]
    reg.probed(one_host, 1.0)
    assert len(reg.cameras) == MAX_PER_ADDRESS and reg.stats.refused_address == 10 - 4
    others = [camera(f"urn:uuid:o{k}", f"192.168.1.{50 + k}", name=f"o{k}") for k in range(5)]
    reg.probed(others, 2.0)
    assert len(reg.cameras) == 6 and reg.stats.refused_full == 3
    # The first host goes quiet; the owner gave credentials to h0 only.
    owner = {"h0"}
    reg.probed(others, 3.0, owner)
    assert {c.name for c in reg.cameras.values() if not c.present} == {"h0", "h1", "h2", "h3"}
    newcomers = [camera(f"urn:uuid:n{k}", f"192.168.1.{70 + k}", name=f"n{k}") for k in range(4)]
    reg.probed([*others, *newcomers], 4.0, owner)
    # h1..h3 (gone, never given credentials) made room for o2..o4; h0 keeps its place
    # and name; no room is left for the newcomers.
    assert reg.names() == {"h0", "o0", "o1", "o2", "o3", "o4"}
    assert reg.stats.evicted == 3 and reg.stats.refused_full == 3 + 3 + 4


def test_a_camera_vanishes_after_missed_searches_or_a_bye_and_comes_back_under_its_name() -> None:
    reg = registry(missing_probes=2)
    lobby = camera("urn:uuid:l1", "192.168.1.60", name="Lobby")
    reg.probed([lobby], 1.0)
    assert reg.wanted({"lobby"}).keys() == {"lobby"} and reg.wanted(set()) == {}
    reg.probed([], 2.0)
    assert reg.cameras["urn:uuid:l1"].present  # one miss is UDP loss, not a departure
    reg.probed([], 3.0)
    assert not reg.cameras["urn:uuid:l1"].present and reg.wanted({"lobby"}) == {}
    # Someone answers for it with a service on a third host: not present, not moved.
    reg.changed = False
    spoof = camera("urn:uuid:l1", "192.168.1.66", xaddrs=("http://203.0.113.7/onvif/x",))
    reg.heard(spoof, 3.5)
    gone = reg.cameras["urn:uuid:l1"]
    assert not gone.present and gone.address == "192.168.1.60" and not reg.changed
    reg.probed([camera("urn:uuid:l1", "192.168.1.61", name="Renamed")], 4.0)
    again = reg.cameras["urn:uuid:l1"]
    assert (again.name, again.present, again.address) == ("lobby", True, "192.168.1.61")
    assert again.xaddr == "http://192.168.1.61:8080/onvif/device_service" and reg.changed
    reg.bye("uuid:L1")
    assert not reg.cameras["urn:uuid:l1"].present and reg.stats.vanished == 2


def test_a_tampered_record_is_not_trusted() -> None:
    reg = registry(max_cameras=3)
    good = {
        "endpoint": "urn:uuid:a",
        "name": "lobby",
        "address": "192.168.1.5",
        "xaddr": "http://192.168.1.5/onvif/device_service",
        "model": "",
        "seen_at": 1,
    }
    reg.restore(
        {
            "v": 1,
            "cameras": [
                good,
                {**good, "endpoint": "urn:uuid:b"},  # a second "lobby"
                {**good, "endpoint": "urn:uuid:c", "name": "front"},  # a configured name
                {**good, "endpoint": "urn:uuid:d", "name": "a/b"},
                {**good, "endpoint": "urn:uuid:e", "name": "x" * 65},
                "not a camera",
                {**good, "endpoint": "urn:uuid:f", "name": "later"},  # past max_cameras
            ],
        }
    )
    assert names_by_endpoint(reg) == {"urn:uuid:a": "lobby"}
    assert not any(c.present for c in reg.cameras.values())  # captured once it answers


def test_the_scheduler_takes_cameras_in_and_out_at_run_time() -> None:
    a, b, c = (CameraSlot[int](n) for n in "abc")
    scheduler = FairScheduler([a, b])
    a.offer(1)
    b.offer(2)
    assert scheduler.take(1) == [("a", 1)]
    scheduler.add(c)
    c.offer(3)
    a.offer(4)
    assert scheduler.take(10) == [("b", 2), ("c", 3), ("a", 4)]
    b.offer(5)
    c.offer(6)
    assert scheduler.remove("b") is b and scheduler.remove("b") is None
    assert scheduler.take(10) == [("c", 6)]
    scheduler.remove("c")
    scheduler.remove("a")
    assert scheduler.take(10) == []
    scheduler.add(CameraSlot[int]("a"))
    try:
        scheduler.add(CameraSlot[int]("a"))
    except ValueError as exc:
        assert "unique" in str(exc)
    else:
        raise AssertionError("a second camera named 'a' was taken in")
