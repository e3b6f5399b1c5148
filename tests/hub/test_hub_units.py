"""The hub's parts on their own: fair scheduling, the sealed credentials, the ONVIF client.

The ONVIF client talks to the agent's own ONVIF service over HTTP (its real
peer); the credentials are sealed under real data keys.
"""

from __future__ import annotations

import pathlib
import threading

import pytest

from agent.camera.hub import CameraSlot, FairScheduler, first_profile, stream_uri
from agent.config import CameraSettings, HubCamera, parse
from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import ConfigError, DecodeError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.rights.registry import ALL_KEY_DOMAINS, ErasureScope, key_domains
from drivers.camera.credentials import CameraCredentialsHolder, CameraCredentialStore
from drivers.camera.hub import onvif_stream_uri, with_credentials


def test_round_robin_serves_every_camera_before_any_twice() -> None:
    slots = [CameraSlot[int](name) for name in ("a", "b", "c")]
    scheduler = FairScheduler(slots)
    slots[0].offer(1)
    slots[2].offer(3)
    assert scheduler.take(1) == [("a", 1)]
    slots[0].offer(11)
    # After "a" comes "b" (empty), then "c", and only then "a" again.
    assert scheduler.take(10) == [("c", 3), ("a", 11)]
    assert scheduler.take(10) == []


def test_a_busy_camera_cannot_starve_the_others_and_its_backlog_is_dropped() -> None:
    busy, quiet = CameraSlot[int]("busy"), CameraSlot[int]("quiet")
    scheduler = FairScheduler([busy, quiet])
    served: dict[str, int] = {"busy": 0, "quiet": 0}
    for rounds in range(100):
        for k in range(10):  # ten frames a round from one camera...
            busy.offer(k)
        quiet.offer(rounds)  # ...one from the other
        for name, _ in scheduler.take(2):
            served[name] += 1
    assert served == {"busy": 100, "quiet": 100}
    assert busy.dropped == 900 and quiet.dropped == 0
    assert scheduler.stats()["busy"] == {"captured": 1000, "dropped": 900, "scheduled": 100}


def test_slots_are_safe_across_threads() -> None:
    slot = CameraSlot[int]("cam")
    taken: list[int] = []
    done = threading.Event()

    def produce() -> None:
        for k in range(20000):
            slot.offer(k)
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    while not done.is_set():
        frame = slot.take()
        if frame is not None:
            taken.append(frame)
    thread.join()
    last = slot.take()
    taken += [] if last is None else [last]
    assert taken == sorted(taken) and len(set(taken)) == len(taken)
    assert slot.captured == 20000 == slot.scheduled + slot.dropped


def test_duplicate_camera_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        FairScheduler([CameraSlot[int]("a"), CameraSlot[int]("a")])


def test_sources_config_is_strict() -> None:
    config = parse(
        "[[camera.sources]]\nname = 'front'\nurl = 'rtsp://10.0.0.5/stream1'\n"
        "[[camera.sources]]\nname = 'back'\nonvif = 'http://10.0.0.6/onvif/device_service'\n"
        "transport = 'udp'\n"
    )
    assert config.camera.sources == (
        HubCamera(name="front", url="rtsp://10.0.0.5/stream1"),
        HubCamera(name="back", onvif="http://10.0.0.6/onvif/device_service", transport="udp"),
    )
    bad = [
        ("name = 'a'\nurl = 'rtsp://u:p@10.0.0.5/s'", "user or password"),
        ("name = 'a'", "exactly one of url or onvif"),
        ("name = 'a'\nurl = 'rtsp://h/s'\nonvif = 'http://h/'", "exactly one of url or onvif"),
        ("name = 'a/b'\nurl = 'rtsp://h/s'", "must not contain"),
        ("name = 'a'\nurl = 'rtsp://h/s'\ntransport = 'sctp'", "tcp"),
    ]
    for body, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse(f"[[camera.sources]]\n{body}\n")
    with pytest.raises(ConfigError, match="unique"):
        CameraSettings(sources=(HubCamera("a", url="rtsp://h/1"), HubCamera("a", url="rtsp://h/2")))


def test_credentials_go_into_the_url_escaped() -> None:
    url = with_credentials("rtsp://10.0.0.5:554/s?x=1", OnvifCredentials("ad min", "p@ss:w/rd"))
    assert url == "rtsp://ad%20min:p%40ss%3Aw%2Frd@10.0.0.5:554/s?x=1"
    assert with_credentials("rtsp://10.0.0.5/s", None) == "rtsp://10.0.0.5/s"


def test_credentials_sealed_exported_without_passwords_and_erased_with_the_binding(
    tmp_path: pathlib.Path,
) -> None:
    assert "cameras" in ALL_KEY_DOMAINS and "cameras" in key_domains(ErasureScope.BINDING)
    layout = StateLayout(tmp_path)
    store = CameraCredentialStore(layout, DataKeys(layout))
    assert store.load() == {}
    store.save("front", OnvifCredentials("viewer", "front-secret-1"))
    store.save("back", OnvifCredentials("admin", "back-secret-2"))
    store.save("front", None)
    store.save("front", OnvifCredentials("viewer", "front-secret-3"))
    blob = layout.camera_credentials.read_bytes()
    assert layout.camera_credentials.stat().st_mode & 0o777 == 0o600
    for text in (b"front-secret", b"back-secret", b"viewer", b"admin"):
        assert text not in blob
    reopened = CameraCredentialStore(layout, DataKeys(layout))
    assert reopened.get("front") == OnvifCredentials("viewer", "front-secret-3")
    holder = CameraCredentialsHolder(reopened)
    exported = holder.export_personal_data()
    assert set(exported) == {"front", "back"} and "secret" not in repr(exported)
    assert holder.reseal_personal_data() == 2
    assert reopened.get("back") == OnvifCredentials("admin", "back-secret-2")
    assert holder.erase_personal_data() == 1
    assert not layout.camera_credentials.exists()
    # A copy of the sealed file made before the erasure opens no more.
    layout.camera_credentials.write_bytes(blob)
    assert CameraCredentialStore(layout, DataKeys(layout)).load() == {}


def test_onvif_answers_are_checked() -> None:
    with pytest.raises(DecodeError, match="no media profile"):
        first_profile(b"<e:Envelope xmlns:e='http://www.w3.org/2003/05/soap-envelope'>"
                      b"<e:Body><x/></e:Body></e:Envelope>")
    with pytest.raises(DecodeError, match="not XML"):
        stream_uri(b"<oops")
    with pytest.raises(DecodeError, match="http"):
        onvif_stream_uri("file:///etc/passwd", None)


def test_onvif_client_gets_the_stream_uri_from_the_agents_own_onvif_service(
    tmp_path: pathlib.Path,
) -> None:
    import time

    from drivers.discovery.onvif_store import OnvifCredentialStore
    from drivers.discovery.service import build_service
    from tests.discovery.conftest import loopback_config, running

    stream = "rtsp://192.0.2.7:8554/cam1"
    config = loopback_config(tmp_path, discoverable=False, onvif_stream_uri=stream)
    layout = StateLayout(tmp_path)
    store = OnvifCredentialStore(layout, DataKeys(layout))
    store.save(OnvifCredentials("nvr", "a long password"), time.time())
    service = build_service(config, store=store, lan_discovery=False)
    with running(service):
        assert service.onvif is not None and service.onvif.port is not None
        device = f"http://127.0.0.1:{service.onvif.port}/onvif/device_service"
        good = OnvifCredentials("nvr", "a long password")
        assert onvif_stream_uri(device, good) == stream
        with pytest.raises(DecodeError, match="no profile 'nope'"):
            onvif_stream_uri(device, good, profile="nope")
        with pytest.raises(DecodeError, match="NotAuthorized"):
            onvif_stream_uri(device, OnvifCredentials("nvr", "a wrong password"))
        with pytest.raises(DecodeError, match="NotAuthorized"):
            onvif_stream_uri(device, None)
