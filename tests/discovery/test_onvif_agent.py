"""The ONVIF device service of the real ``edge-agent run``, through onvif-zeep-async.

One agent process (loopback only: broker, ONVIF, WS-Discovery), an owner key
enrolled in its state, and the ONVIF client library Home Assistant uses.  The
owner sets the ONVIF user with the signed ``onvif.set_credentials`` command
(the generated password comes back sealed); before that, everything but
GetSystemDateAndTime is NotAuthorized.  Then: the XAddrs WS-Discovery hands
out answer, the client reads device, capabilities, services, scopes, network
and the camera's stream; a wrong password, a replayed nonce and hostile bodies
are refused; a lockout survives a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import pathlib
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError

from agent.discovery.settings import DiscoverySettings
from drivers.discovery.clients import probe_cameras
from tests.discovery.onvif_support import (
    TR2,
    envelope,
    fault_code,
    fault_subcodes,
    find_text,
    post,
    signed,
)
from tests.discovery.test_onvif_hostile import BILLION_LAUGHS, deep
from tests.support.broker import Broker, free_port
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import spawn_agent

pytestmark = pytest.mark.slow

USER = "nvr"
MAX_FAILED = 3


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Rig:
    tmp: pathlib.Path
    state: pathlib.Path
    config: pathlib.Path
    broker: Broker
    owner: Signer
    base: str
    onvif_port: int
    wsd_port: int
    proc: subprocess.Popen[Any] | None = None
    password: str = ""

    def start(self) -> None:
        stderr = (self.tmp / "agent.stderr").open("ab")
        self.proc = spawn_agent(self.config, self.state, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"agent exited:\n{self.stderr()[-3000:]}"
            try:
                status, _ = post(self.onvif_port, envelope("GetSystemDateAndTime"))
                if status == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"ONVIF never answered:\n{self.stderr()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def stderr(self) -> str:
        path = self.tmp / "agent.stderr"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("onvif")
    broker = Broker(tmp)
    broker.start()
    state = tmp / "state"
    state.mkdir()
    owner = Signer()
    device_id = owner.enrol_in_state(state)
    onvif_port, wsd_port = free_port(), _free_udp_port()
    config = tmp / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\nreconnect_min_seconds = 0.1\n"
        "reconnect_max_seconds = 0.5\n"
        "[runtime]\ntick_seconds = 0.05\n"
        "[camera]\nenabled = false\nsource = 'rtsp'\n"
        "uri = 'rtsp://viewer:cam-secret@127.0.0.1:8554/cam1'\n"
        "[provisioning]\nlan_enabled = false\n"
        "[discovery]\ninterface_address = '127.0.0.1'\nmdns_enabled = false\n"
        f"wsd_port = {wsd_port}\nhttp_port = {onvif_port}\nreply_delay_max_ms = 0\n"
        f"onvif_max_failed_auth = {MAX_FAILED}\nonvif_lockout_seconds = 120\n"
    )
    rig = Rig(tmp, state, config, broker, owner, f"edge/{device_id}", onvif_port, wsd_port)
    rig.start()
    try:
        yield rig
    finally:
        rig.stop()
        broker.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _call(port: int, user: str, password: str, operation: str, params: Any = None) -> Any:
    camera = ONVIFCamera("127.0.0.1", port, user, password)
    try:
        devicemgmt = await camera.create_devicemgmt_service()
        return await getattr(devicemgmt, operation)(params)
    finally:
        await camera.close()


def _refused(exc: BaseException) -> bool:
    text = str(exc)
    return "NotAuthorized" in text or "not Authorized" in text or "Sender not" in text


def test_01_before_the_owner_sets_a_user_only_the_time_answers(rig: Rig) -> None:
    async def scenario() -> tuple[Any, BaseException]:
        camera = ONVIFCamera("127.0.0.1", rig.onvif_port, "admin", "admin")
        try:
            devicemgmt = await camera.create_devicemgmt_service()
            when = await devicemgmt.authless_GetSystemDateAndTime()
            try:
                await devicemgmt.GetDeviceInformation()
            except (zeep.exceptions.Fault, ONVIFError) as exc:
                return when, exc
            raise AssertionError("GetDeviceInformation answered without a user set")
        finally:
            await camera.close()

    when, refused = run(scenario())
    assert when.UTCDateTime.Date.Year == datetime.datetime.now(datetime.UTC).year
    assert _refused(refused)


def test_02_owner_sets_the_user_over_signed_mqtt(rig: Rig) -> None:
    collector = Collector("127.0.0.1", rig.broker.port, f"{rig.base}/#")
    try:
        topic = f"{rig.base}/cmd/onvif.set_credentials"
        unsigned = collector.request(topic, {"username": USER})
        assert unsigned["ok"] is False
        unsealed = collector.request(topic, {"username": USER}, signer=rig.owner)
        assert unsealed["ok"] is False and "reply_key" in unsealed["error"]["message"]
        reply = collector.request(topic, {"username": USER}, signer=rig.owner, sealed=True)
    finally:
        collector.close()
    assert reply["ok"] is True, reply
    result = reply["result"]
    assert result["username"] == USER and result["generated"] is True
    rig.password = result["password"]
    assert len(rig.password) >= 16
    sealed_file = rig.state / "onvif-credentials.sealed"
    assert sealed_file.stat().st_mode & 0o777 == 0o600
    assert rig.password.encode() not in sealed_file.read_bytes()


def test_03_ws_discovery_xaddrs_answer_the_onvif_client(rig: Rig) -> None:
    settings = dataclasses.replace(
        DiscoverySettings(), interface_address="127.0.0.1", probe_repeats=1
    )
    (camera,) = probe_cameras(settings, timeout=1.0, destination=("127.0.0.1", rig.wsd_port))
    assert camera.xaddrs == (f"http://127.0.0.1:{rig.onvif_port}/onvif/device_service",)
    for xaddr in camera.xaddrs:
        url = urllib.parse.urlsplit(xaddr)
        assert url.port is not None
        info = run(_call(url.port, USER, rig.password, "GetDeviceInformation"))
        assert info.SerialNumber == "EA-SAMPLE-0001"


def test_04_the_client_reads_device_and_media(rig: Rig) -> None:
    async def scenario() -> dict[str, Any]:
        camera = ONVIFCamera("127.0.0.1", rig.onvif_port, USER, rig.password)
        try:
            await camera.update_xaddrs()
            devicemgmt = await camera.create_devicemgmt_service()
            media = await camera.create_media_service()
            profiles = await media.GetProfiles()
            request = media.create_type("GetStreamUri")
            request.ProfileToken = profiles[0].token
            request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            return {
                "xaddrs": dict(camera.xaddrs),
                "time": await devicemgmt.GetSystemDateAndTime(),
                "info": await devicemgmt.GetDeviceInformation(),
                "capabilities": await camera.get_capabilities(),
                "services": await devicemgmt.GetServices({"IncludeCapability": True}),
                "scopes": await devicemgmt.GetScopes(),
                "hostname": await devicemgmt.GetHostname(),
                "interfaces": await devicemgmt.GetNetworkInterfaces(),
                "profiles": profiles,
                "stream": await media.GetStreamUri(request),
                "snapshot": await camera.get_snapshot_uri(profiles[0].token),
            }
        finally:
            await camera.close()

    got = run(scenario())
    base = f"http://127.0.0.1:{rig.onvif_port}"
    assert got["xaddrs"]["http://www.onvif.org/ver10/media/wsdl"] == f"{base}/onvif/media_service"
    assert got["xaddrs"]["http://www.onvif.org/ver20/media/wsdl"] == f"{base}/onvif/media2_service"
    assert got["info"].Manufacturer == "edge-agent" and got["info"].Model == "edge-cam-1"
    assert got["capabilities"]["Device"]["XAddr"] == f"{base}/onvif/device_service"
    assert got["capabilities"]["Media"]["XAddr"] == f"{base}/onvif/media_service"
    assert len(got["services"]) == 3
    scopes = [s.ScopeItem for s in got["scopes"]]
    assert "onvif://www.onvif.org/type/Network_Video_Transmitter" in scopes
    assert got["hostname"].Name == socket.gethostname()
    assert got["interfaces"] and got["interfaces"][0].IPv4.Config.Manual
    (profile,) = got["profiles"]
    assert profile.VideoEncoderConfiguration.Encoding == "H264"
    # The camera's configured RTSP source, without its user:password.
    assert got["stream"].Uri == "rtsp://127.0.0.1:8554/cam1"
    assert got["snapshot"] is None  # no snapshot URL configured: ActionNotSupported
    assert got["time"].UTCDateTime.Date.Year == datetime.datetime.now(datetime.UTC).year


def test_05_media2_with_a_zeep_signed_request(rig: Rig) -> None:
    inner = "<op:Type>All</op:Type>"
    status, body = post(
        rig.onvif_port,
        signed(envelope("GetProfiles", TR2, inner), USER, rig.password),
        "/onvif/media2_service",
    )
    assert status == 200, body
    assert find_text(body, ".//tr2:VideoEncoder/tt:Encoding") == ["H264"]
    status, body = post(
        rig.onvif_port,
        signed(
            envelope(
                "GetStreamUri",
                TR2,
                "<op:Protocol>RTSP</op:Protocol><op:ProfileToken>profile_main</op:ProfileToken>",
            ),
            USER,
            rig.password,
        ),
        "/onvif/media2_service",
    )
    assert status == 200 and find_text(body, ".//tr2:Uri") == ["rtsp://127.0.0.1:8554/cam1"]


def test_06_wrong_password_is_refused(rig: Rig) -> None:
    with pytest.raises((zeep.exceptions.Fault, ONVIFError)) as info:
        run(_call(rig.onvif_port, USER, rig.password + "x", "GetDeviceInformation"))
    assert _refused(info.value)


def test_07_replayed_nonce_is_refused(rig: Rig) -> None:
    async def scenario() -> tuple[Any, BaseException | None]:
        camera = ONVIFCamera("127.0.0.1", rig.onvif_port, USER, rig.password)
        try:
            devicemgmt = await camera.create_devicemgmt_service()
            # The library's own token object, pinned: the next call sends the same token.
            token = devicemgmt.zeep_client.wsse
            token.nonce = f"replay-{time.time_ns()}"
            token.created = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            first = await devicemgmt.GetDeviceInformation()
            try:
                await devicemgmt.GetDeviceInformation()
            except (zeep.exceptions.Fault, ONVIFError) as exc:
                return first, exc
            return first, None
        finally:
            await camera.close()

    first, replay = run(scenario())
    assert first.SerialNumber == "EA-SAMPLE-0001"
    assert replay is not None and _refused(replay)


def test_08_hostile_bodies_get_faults_and_the_service_keeps_answering(rig: Rig) -> None:
    port = rig.onvif_port
    status, _ = post(port, b"x" * 40000)
    assert status == 413  # oversized: refused on its Content-Length, never read
    for body in (deep(200), BILLION_LAUGHS, b"<?xml version='1.0'?><\xff\xfe/>"):
        status, answer = post(port, body)
        assert status == 400 and fault_subcodes(answer) == ["ter:WellFormed"]
    status, answer = post(port, signed(envelope("SetSystemFactoryDefault"), USER, rig.password))
    assert status == 500 and fault_code(answer) == "env:Receiver"
    assert fault_subcodes(answer) == ["ter:ActionNotSupported"]
    info = run(_call(port, USER, rig.password, "GetDeviceInformation"))
    assert info.SerialNumber == "EA-SAMPLE-0001"
    assert "Traceback" not in rig.stderr()
    assert rig.password not in rig.stderr()


def test_09_lockout_refuses_the_right_password_and_survives_a_restart(rig: Rig) -> None:
    for _ in range(MAX_FAILED):
        with pytest.raises((zeep.exceptions.Fault, ONVIFError)):
            run(_call(rig.onvif_port, USER, "not-the-password", "GetDeviceInformation"))
    status, body = post(rig.onvif_port, signed(envelope("GetDeviceInformation"), USER,
                                                rig.password))
    assert status == 400 and b"too many failed attempts" in body
    rig.stop()
    rig.start()
    status, body = post(rig.onvif_port, signed(envelope("GetDeviceInformation"), USER,
                                                rig.password))
    assert status == 400 and b"too many failed attempts" in body
    # The time stays public during a lockout (clients sync their clocks with it).
    assert post(rig.onvif_port, envelope("GetSystemDateAndTime"))[0] == 200
    assert (rig.state / "limits" / "onvif-auth.json").is_file()
