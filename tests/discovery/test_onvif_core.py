"""The ONVIF device service's decisions, in process: auth, replay, lockout, media, faults.

Requests are signed by zeep's WS-Security code (tests/discovery/onvif_support.py);
the attempt limiter writes its real file under ``tmp_path``.
"""

from __future__ import annotations

import base64
import datetime
import pathlib
import time

import pytest

from agent.discovery.onvif_auth import Authenticator, OnvifCredentials, password_digest
from agent.discovery.onvif_device import HttpRequest, OnvifDevice
from agent.discovery.onvif_media import Media, MediaSource, public_uri
from agent.discovery.onvif_soap import PASSWORD_DIGEST, UsernameToken
from agent.layout import StateLayout
from agent.provisioning.limits import AttemptLimiter
from drivers.limitstore import LimitStore
from tests.discovery.onvif_support import (
    TDS,
    TR2,
    TRT,
    envelope,
    fault_code,
    fault_subcodes,
    find_text,
    signed,
)
from tests.support.clock import FixedClock

USER, PASSWORD = "admin", "correct horse"
NOW = time.time()
STREAM = "rtsp://cam:secret@127.0.0.1:8554/live"


class World:
    def __init__(
        self,
        tmp_path: pathlib.Path,
        *,
        credentials: OnvifCredentials | None = None,
        source: MediaSource | None = None,
        max_nonces: int = 64,
        started_at: float = NOW - 600,
    ) -> None:
        self.credentials = credentials
        self.path = StateLayout(tmp_path).onvif_auth_limits
        self.limiter = AttemptLimiter(3, 60, 30, 900)
        LimitStore.attach(self.path, self.limiter, FixedClock(NOW), "ONVIF login limiter")
        self.auth = Authenticator(
            lambda: self.credentials,
            self.limiter,
            skew_seconds=300,
            started_at=started_at,
            max_nonces=max_nonces,
        )
        self.device = OnvifDevice(
            identity_for_tests(),
            Media(source or MediaSource(STREAM, "", 640, 480, 10.0)),
            self.auth,
            hostname=lambda: "cam-host",
            interfaces=list,
            max_body_bytes=32768,
        )

    def call(self, body: bytes, path: str = "/onvif/device_service", now: float = NOW):  # type: ignore[no-untyped-def]
        return self.device.handle(HttpRequest("POST", path, body, "192.168.1.20", 8080), now)


def identity_for_tests():  # type: ignore[no-untyped-def]
    from agent.discovery.onvif_device import DeviceIdentity

    return DeviceIdentity("edge-agent", "edge-cam-1", "0.1.0", "EA-1", "rev-a", ("onvif://x/y",))


def at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path, credentials=OnvifCredentials(USER, PASSWORD))


def test_digest_matches_what_zeep_sends() -> None:
    body = signed(envelope("GetDeviceInformation"), USER, PASSWORD, nonce="0123456789abcdef",
                  created=at(NOW))
    password = find_text(
        body,
        ".//{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Password",
    )
    created = find_text(
        body,
        ".//{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd}Created",
    )
    assert password == [password_digest(b"0123456789abcdef", created[0], PASSWORD)]


def test_time_is_public_and_everything_else_needs_a_user(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)  # no ONVIF user set yet
    reply = world.call(envelope("GetSystemDateAndTime"))
    assert reply.status == 200
    year = find_text(reply.body, ".//tt:UTCDateTime/tt:Date/tt:Year")
    assert year == [str(at(NOW).year)]
    for operation, namespace in [("GetDeviceInformation", TDS), ("GetProfiles", TRT),
                                 ("GetStreamUri", TR2), ("NoSuchThing", TDS)]:
        reply = world.call(signed(envelope(operation, namespace), USER, PASSWORD))
        assert reply.status == 400, operation
        assert fault_subcodes(reply.body) == ["ter:NotAuthorized"], operation
        assert b"onvif.set_credentials" in reply.body


def test_valid_digest_is_answered(world: World) -> None:
    reply = world.call(signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW)))
    assert reply.status == 200, reply.body
    assert find_text(reply.body, ".//tds:SerialNumber") == ["EA-1"]


@pytest.mark.parametrize(
    ("user", "password"), [(USER, "wrong password"), ("root", PASSWORD), ("", "")]
)
def test_wrong_user_or_password_is_refused_and_counted(
    world: World, user: str, password: str
) -> None:
    reply = world.call(signed(envelope("GetDeviceInformation"), user, password, created=at(NOW)))
    assert reply.status == 400 and fault_subcodes(reply.body) == ["ter:NotAuthorized"]
    assert b"EA-1" not in reply.body
    assert world.auth.failures == 1


def test_missing_token_and_password_text_are_refused_without_counting(world: World) -> None:
    for body in (
        envelope("GetDeviceInformation"),
        signed(envelope("GetDeviceInformation"), USER, PASSWORD, digest=False),
    ):
        reply = world.call(body)
        assert fault_subcodes(reply.body) == ["ter:NotAuthorized"]
    assert world.auth.failures == 0


def test_replayed_nonce_is_refused(world: World) -> None:
    body = signed(envelope("GetDeviceInformation"), USER, PASSWORD, nonce="replay-me-please",
                  created=at(NOW))
    assert world.call(body).status == 200
    again = world.call(body, now=NOW + 5)
    assert again.status == 400 and fault_subcodes(again.body) == ["ter:NotAuthorized"]
    # The same nonce with a new Created is still a replayed nonce.
    other = signed(envelope("GetDeviceInformation"), USER, PASSWORD, nonce="replay-me-please",
                   created=at(NOW + 1))
    assert world.call(other, now=NOW + 5).status == 400
    assert world.auth.failures == 0


@pytest.mark.parametrize("offset", [-301, 301, -86400 * 365])
def test_created_outside_the_window_is_refused(world: World, offset: float) -> None:
    body = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW + offset))
    reply = world.call(body)
    assert reply.status == 400 and fault_subcodes(reply.body) == ["ter:NotAuthorized"]


def test_created_before_the_agent_started_is_refused(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path, credentials=OnvifCredentials(USER, PASSWORD), started_at=NOW)
    before = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW - 10))
    after = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW))
    assert world.call(before).status == 400
    assert world.call(after).status == 200


def test_lockout_refuses_even_the_right_password_and_survives_a_restart(
    tmp_path: pathlib.Path,
) -> None:
    world = World(tmp_path, credentials=OnvifCredentials(USER, PASSWORD))
    for _ in range(3):
        world.call(signed(envelope("GetDeviceInformation"), USER, "guess", created=at(NOW)))
    right = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW))
    reply = world.call(right, now=NOW + 1)
    assert reply.status == 400 and b"too many failed attempts" in reply.body
    assert world.path.is_file()
    # A new process reads the same file: still locked out.
    restarted = World(tmp_path, credentials=OnvifCredentials(USER, PASSWORD))
    again = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW + 2))
    assert b"too many failed attempts" in restarted.call(again, now=NOW + 2).body
    later = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW + 31))
    assert restarted.call(later, now=NOW + 31).status == 200


def test_a_full_nonce_table_refuses_rather_than_forgets(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path, credentials=OnvifCredentials(USER, PASSWORD), max_nonces=16)
    for _ in range(16):
        body = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW))
        assert world.call(body).status == 200
    busy = world.call(signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW)))
    assert busy.status == 500 and fault_code(busy.body) == "env:Receiver"
    # Once the first tokens can no longer be fresh, their nonces make room.
    late = signed(envelope("GetDeviceInformation"), USER, PASSWORD, created=at(NOW + 301))
    assert world.call(late, now=NOW + 301).status == 200


def test_unknown_operation_is_a_soap_fault(world: World) -> None:
    for operation, namespace in [("SetHostname", TDS), ("Frobnicate", "urn:example:nothing")]:
        reply = world.call(signed(envelope(operation, namespace), USER, PASSWORD, created=at(NOW)))
        assert reply.status == 500
        assert fault_code(reply.body) == "env:Receiver"
        assert fault_subcodes(reply.body) == ["ter:ActionNotSupported"]


def test_stream_uri_drops_credentials_and_names_the_reached_address(world: World) -> None:
    inner = "<op:StreamSetup/><op:ProfileToken>profile_main</op:ProfileToken>"
    reply = world.call(
        signed(envelope("GetStreamUri", TRT, inner), USER, PASSWORD, created=at(NOW)),
        path="/onvif/media_service",
    )
    assert find_text(reply.body, ".//trt:MediaUri/tt:Uri") == ["rtsp://192.168.1.20:8554/live"]
    media2 = world.call(
        signed(envelope("GetStreamUri", TR2, "<op:Protocol>RTSP</op:Protocol>"
                        "<op:ProfileToken>profile_main</op:ProfileToken>"),
               USER, PASSWORD, created=at(NOW)),
        path="/onvif/media2_service",
    )
    assert find_text(media2.body, ".//tr2:Uri") == ["rtsp://192.168.1.20:8554/live"]
    unknown = world.call(
        signed(envelope("GetStreamUri", TRT, "<op:ProfileToken>nope</op:ProfileToken>"),
               USER, PASSWORD, created=at(NOW)),
        path="/onvif/media_service",
    )
    assert unknown.status == 400
    assert fault_subcodes(unknown.body) == ["ter:InvalidArgVal", "ter:NoProfile"]


def test_without_a_stream_there_is_no_profile(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path, credentials=OnvifCredentials(USER, PASSWORD),
                  source=MediaSource("", "", 640, 480, 10.0))
    reply = world.call(signed(envelope("GetProfiles", TRT), USER, PASSWORD, created=at(NOW)))
    assert reply.status == 200 and find_text(reply.body, ".//trt:Profiles") == []


def test_media2_profiles_follow_the_requested_types(world: World) -> None:
    bare = world.call(signed(envelope("GetProfiles", TR2), USER, PASSWORD, created=at(NOW)))
    assert find_text(bare.body, ".//tr2:Profiles/tr2:Name") == ["Main"]
    assert find_text(bare.body, ".//tr2:Configurations") == []
    full = world.call(signed(envelope("GetProfiles", TR2, "<op:Type>All</op:Type>"),
                             USER, PASSWORD, created=at(NOW)))
    assert find_text(full.body, ".//tr2:VideoEncoder/tt:Encoding") == ["H264"]
    assert find_text(full.body, ".//tr2:VideoEncoder/tt:Resolution/tt:Width") == ["640"]


def test_snapshot_uri_only_when_one_is_configured(tmp_path: pathlib.Path) -> None:
    inner = "<op:ProfileToken>profile_main</op:ProfileToken>"
    none = World(tmp_path / "a", credentials=OnvifCredentials(USER, PASSWORD))
    reply = none.call(signed(envelope("GetSnapshotUri", TRT, inner), USER, PASSWORD,
                             created=at(NOW)))
    assert fault_subcodes(reply.body) == ["ter:ActionNotSupported"]
    some = World(tmp_path / "b", credentials=OnvifCredentials(USER, PASSWORD),
                 source=MediaSource(STREAM, "http://127.0.0.1/snap.jpg", 640, 480, 10.0))
    reply = some.call(signed(envelope("GetSnapshotUri", TRT, inner), USER, PASSWORD,
                             created=at(NOW)))
    assert find_text(reply.body, ".//trt:MediaUri/tt:Uri") == ["http://192.168.1.20/snap.jpg"]


def test_public_uri() -> None:
    assert public_uri("rtsp://u:p@10.0.0.5:554/s?x=1", "192.168.1.2") == "rtsp://10.0.0.5:554/s?x=1"
    assert public_uri("rtsp://localhost/s", "192.168.1.2") == "rtsp://192.168.1.2/s"
    assert public_uri("rtsp://[::1]:8554/s", "fe80::1") == "rtsp://[fe80::1]:8554/s"
    assert public_uri("not a uri", "192.168.1.2") == ""


def test_token_fields_reach_the_authenticator_verbatim(world: World) -> None:
    nonce = base64.b64encode(b"n" * 16).decode()
    created = at(NOW).isoformat().replace("+00:00", "Z")
    token = UsernameToken(USER, password_digest(b"n" * 16, created, PASSWORD), PASSWORD_DIGEST,
                          nonce, created)
    assert world.auth.check(token, NOW).ok
    assert not world.auth.check(token, NOW).ok  # the same nonce again
