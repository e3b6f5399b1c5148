"""The hawkBit DDI client end to end: the real upgrade service against a DDI test server.

The service is built as in production (``build_service`` with ``upgrade.source
= "hawkbit"``), on the simulated A/B machine; ``tick`` drives it as the agent's
loop does.  The server (tests/upgrade/hawkbit_server.py) speaks hawkBit's
published JSON and validates every feedback body.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.upgrade import hawkbit as ddi
from agent.upgrade.machine import State, UpgradeRecord
from agent.upgrade.settings import HawkbitSettings, ManifestSource
from drivers.upgrade.service import UpgradeService, build_service
from tests.upgrade.conftest import random_image
from tests.upgrade.hawkbit_server import Action, DdiServer, serve_ddi

Sign = Callable[..., bytes]


@pytest.fixture
def ddi_server() -> Iterator[DdiServer]:
    with serve_ddi() as server:
        yield server


@pytest.fixture
def fleet(
    tmp_path: pathlib.Path, make_config: Callable[..., AgentConfig], ddi_server: DdiServer
) -> Callable[..., tuple[UpgradeService, list[bool]]]:
    token = tmp_path / "hawkbit.token"
    token.write_text(ddi_server.token + "\n")

    def build(**upgrade: object) -> tuple[UpgradeService, list[bool]]:
        hawkbit = HawkbitSettings(
            server_url=ddi_server.url,
            tenant=ddi_server.tenant,
            controller_id=ddi_server.controller_id,
            token_file=token,
            min_poll_seconds=1,
        )
        config = make_config(source=ManifestSource.HAWKBIT, hawkbit=hawkbit, **upgrade)
        healthy = [True]
        service = build_service(config, lambda: healthy[-1])
        service.start()
        service.wait(10)
        return service, healthy

    return build


def _tick(service: UpgradeService, now: float) -> None:
    service.tick(now)
    service.wait(30)


def _release(sign: Sign, server: DdiServer, action_id: str, sequence: int, **kw: object) -> Action:
    image = random_image(200_000)
    # The manifest's own URI is never used: the image comes from the artifact link.
    envelope = sign(image, sequence, "https://cdn.invalid/never-fetched.img")
    return Action(action_id, envelope, image, module_id=int(action_id), **kw)  # type: ignore[arg-type]


def _install_and_commit(service: UpgradeService, now: float) -> float:
    _tick(service, now)  # poll: deployment, download, install
    assert service.installer.record().state == State.AWAITING_REBOOT, service.last_error
    _tick(service, now + 1)  # reboot (simulated) into the trial slot
    assert service.installer.record().state == State.TRIAL
    _tick(service, now + 2)  # healthy: commit
    assert service.installer.record().state == State.COMMITTED
    return now + 2


def test_forced_deployment_installs_reports_and_closes(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]],
    ddi_server: DdiServer,
    sign: Sign,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    action = _release(sign, ddi_server, "7", 3)
    ddi_server.actions.append(action)
    ddi_server.sleep = "00:00:30"
    service, _ = fleet()
    now = time.time()
    later = _install_and_commit(service, now)
    assert action.status == "open"  # the trial's outcome is reported at the next poll
    _tick(service, later + 31)
    assert (action.status, action.result) == ("closed", "success")
    assert ddi_server.executions("7")[0] == "proceeding"
    assert "download" in ddi_server.executions("7")
    assert ddi_server.executions("7")[-2:] == ["downloaded", "closed"]
    progress = [
        b["status"]["result"].get("progress")  # type: ignore[index,union-attr]
        for b in ddi_server.feedback_of("7")
    ]
    assert {"cnt": 10, "of": 10} in progress
    # The image came from the artifact link, with the token; the token is never logged.
    assert any(p.endswith("/artifacts/fw.img") for p in ddi_server.artifact_requests())
    assert all(auth == f"TargetToken {ddi_server.token}" for _, _, auth in ddi_server.requests)
    assert ddi_server.token not in caplog.text
    record = service.installer.record()
    assert record.installed_sequence == 3
    assert (service.installer.slots.boot_status().booted_slot, record.target_slot) == ("b", "b")
    # The same release assigned again (a second rollout): it already runs, so success.
    again = Action("15", action.envelope, action.image, module_id=15)
    ddi_server.actions.append(again)
    fetched = len(ddi_server.artifact_requests())
    _tick(service, later + 62)
    assert (again.status, again.result) == ("closed", "success")
    assert [p for p in ddi_server.artifact_requests()[fetched:] if p.endswith(".img")] == []


def test_the_servers_polling_interval_is_honoured(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]], ddi_server: DdiServer
) -> None:
    ddi_server.sleep = "00:00:30"
    service, _ = fleet()
    now = time.time()
    _tick(service, now)
    assert ddi_server.base_polls() == 1
    _tick(service, now + 29)
    assert ddi_server.base_polls() == 1
    ddi_server.sleep = "00:02:00"  # the server slows the fleet down
    _tick(service, now + 30.5)
    assert ddi_server.base_polls() == 2
    _tick(service, now + 100)
    assert ddi_server.base_polls() == 2  # two minutes now
    _tick(service, now + 151)
    assert ddi_server.base_polls() == 3


def test_skip_in_an_unavailable_maintenance_window_waits_then_installs(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]], ddi_server: DdiServer, sign: Sign
) -> None:
    action = _release(sign, ddi_server, "8", 4, update="skip", maintenance_window="unavailable")
    ddi_server.actions.append(action)
    ddi_server.sleep = "00:00:10"
    service, _ = fleet()
    now = time.time()
    _tick(service, now)
    _tick(service, now + 11)
    assert ddi_server.executions("8") == ["scheduled"]  # once, not at every poll
    details = ddi_server.feedback_of("8")[0]["status"]["details"]  # type: ignore[index]
    assert details == ["maintenance window unavailable"]
    assert ddi_server.artifact_requests() == []
    assert service.installer.record().state == State.IDLE
    action.update, action.maintenance_window = "attempt", "available"
    _install_and_commit(service, now + 22)
    _tick(service, now + 40)
    assert (action.status, action.result) == ("closed", "success")


def _window_excluding_now() -> str:
    local = time.localtime()
    minute = local.tm_hour * 60 + local.tm_min
    start, end = (minute + 120) % 1440, (minute + 180) % 1440
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def test_attempt_waits_for_the_local_window_forced_does_not(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]], ddi_server: DdiServer, sign: Sign
) -> None:
    action = _release(sign, ddi_server, "9", 5, update="attempt")
    ddi_server.actions.append(action)
    ddi_server.sleep = "00:00:10"
    service, _ = fleet(maintenance_windows=(_window_excluding_now(),))
    now = time.time()
    _tick(service, now)
    assert ddi_server.executions("9") == ["scheduled"]
    assert ddi_server.artifact_requests() == []
    action.update = "forced"  # the operator forces it: installed and rebooted now
    _install_and_commit(service, now + 11)
    _tick(service, now + 30)
    assert (action.status, action.result) == ("closed", "success")


def test_cancel_before_the_start_is_confirmed(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]], ddi_server: DdiServer, sign: Sign
) -> None:
    action = _release(sign, ddi_server, "10", 6, update="skip")
    ddi_server.actions.append(action)
    ddi_server.sleep = "00:00:10"
    service, _ = fleet()
    now = time.time()
    _tick(service, now)
    action.cancel_requested = True
    _tick(service, now + 11)
    cancel = ddi_server.feedback_of("10", "cancel")
    assert [b["status"] for b in cancel] == [
        {
            "execution": "closed",
            "result": {"finished": "success"},
            "details": ["cancelled on request"],
        }
    ]
    assert action.status == "canceled"
    assert ddi_server.artifact_requests() == []


def test_cancel_during_the_download_stops_it_without_barring_the_release(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]], ddi_server: DdiServer, sign: Sign
) -> None:
    action = _release(sign, ddi_server, "11", 7)
    action.image = random_image(600_000)
    action.envelope = sign(action.image, 7, "https://cdn.invalid/x.img")
    ddi_server.actions.append(action)
    ddi_server.sleep = "00:00:01"
    ddi_server.trickle_delay = 0.02  # ~200 KB/s: three seconds for the image
    service, _ = fleet()
    timer = threading.Timer(1.2, lambda: setattr(action, "cancel_requested", True))
    timer.start()
    try:
        _tick(service, time.time())
    finally:
        timer.cancel()
    record = service.installer.record()
    assert record.state == State.FAILED and record.failed_sequences == ()
    assert "cancelled" in record.reason
    assert action.status == "canceled"
    assert ddi_server.artifact_bytes < len(action.image) + len(action.envelope)
    assert service.installer.slots.boot_status().next_slot == "a"  # nothing armed


def test_a_failed_health_check_reports_failure_and_the_release_is_not_retried(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]], ddi_server: DdiServer, sign: Sign
) -> None:
    action = _release(sign, ddi_server, "12", 8)
    ddi_server.actions.append(action)
    ddi_server.sleep = "00:00:10"
    service, healthy = fleet(health_grace_seconds=0.0)
    now = time.time()
    _tick(service, now)
    _tick(service, now + 1)  # reboot into the trial
    healthy.append(False)
    _tick(service, now + 2)  # unhealthy past the grace: roll back, reboot into slot a
    record = service.installer.record()
    assert record.state == State.ROLLED_BACK and 8 in record.failed_sequences
    assert service.installer.slots.boot_status().booted_slot == "a"
    _tick(service, now + 12)
    assert (action.status, action.result) == ("closed", "failure")
    closing = ddi_server.feedback_of("12")[-1]["status"]
    assert "health check failed" in closing["details"][0]  # type: ignore[index]
    # The operator assigns the same release again: refused without a download.
    again = _release(sign, ddi_server, "13", 8)
    again.image, again.envelope = action.image, action.envelope
    ddi_server.actions.append(again)
    downloads = len(ddi_server.artifact_requests())
    _tick(service, now + 24)
    assert (again.status, again.result) == ("closed", "failure")
    assert (
        "failed on this device before" in ddi_server.feedback_of("13")[-1]["status"]["details"][0]
    )  # type: ignore[index]
    assert [p for p in ddi_server.artifact_requests()[downloads:] if p.endswith(".img")] == []


def test_an_envelope_by_an_unknown_key_is_refused_with_the_reason(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]], ddi_server: DdiServer, sign: Sign
) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    image = random_image(10_000)
    envelope = sign(image, 9, "https://cdn.invalid/x.img", keys=[stranger])
    action = Action("14", envelope, image, module_id=14)
    ddi_server.actions.append(action)
    service, _ = fleet()
    _tick(service, time.time())
    assert (action.status, action.result) == ("closed", "failure")
    details = ddi_server.feedback_of("14")[-1]["status"]["details"]  # type: ignore[index]
    assert "not a trusted key" in details[0]
    assert service.installer.record().state == State.IDLE


def test_a_wrong_token_is_an_error_not_a_crash(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]],
    ddi_server: DdiServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, _ = fleet()
    real = ddi_server.token
    ddi_server.token = "another"
    _tick(service, time.time())
    assert "401" in service.last_error
    assert real not in caplog.text and real not in service.last_error


def test_local_upgrade_commands_point_at_the_fleet_server(
    fleet: Callable[..., tuple[UpgradeService, list[bool]]],
) -> None:
    service, _ = fleet()
    for handler in (service.handle_check, service.handle_apply):
        with pytest.raises(DecodeError, match="managed by a hawkBit server"):
            handler({})


# --- the pure DDI functions -------------------------------------------------------------


def test_polling_sleep_is_parsed_and_bounded() -> None:
    assert ddi.parse_sleep("00:05:00") == 300
    assert ddi.parse_sleep("12:00:01") == 43201
    for bad in ("5m", "00:60:00", "", None, "1:2:3"):
        with pytest.raises(DecodeError):
            ddi.parse_sleep(bad)
    base = {"config": {"polling": {"sleep": "00:00:01"}}, "_links": {}}
    assert ddi.parse_base(base, 10, 600).sleep_seconds == 10
    base = {"config": {"polling": {"sleep": "24:00:00"}}, "_links": {}}
    assert ddi.parse_base(base, 10, 600).sleep_seconds == 600


def test_deployments_without_one_envelope_and_one_image_are_refused() -> None:
    link = {"download-http": {"href": "http://h/a"}}
    doc = {
        "id": "1",
        "deployment": {
            "download": "forced",
            "update": "forced",
            "chunks": [{"artifacts": [{"filename": "a.img", "_links": link}]}],
        },
    }
    with pytest.raises(DecodeError, match="0 envelope"):
        ddi.parse_deployment(doc, ".suit")
    doc["deployment"]["update"] = "sometimes"  # type: ignore[index]
    with pytest.raises(DecodeError):
        ddi.parse_deployment(doc, ".img")


def test_plans_follow_skip_attempt_forced() -> None:
    artifact = ddi.Artifact("a", 1, None, "http://h/a")
    deployment = ddi.Deployment(
        "5", ddi.Handling.FORCED, ddi.Handling.ATTEMPT, None, artifact, artifact
    )
    idle = UpgradeRecord()
    assert ddi.plan_deployment(deployment, ddi.ActionState(), idle, True).step == ddi.Step.INSTALL
    waiting = ddi.plan_deployment(deployment, ddi.ActionState(), idle, False)
    assert (waiting.step, waiting.state.phase) == (ddi.Step.WAIT, ddi.Phase.SCHEDULED)
    assert ddi.plan_deployment(deployment, waiting.state, idle, False).feedback is None
    forced = dataclasses.replace(deployment, update=ddi.Handling.FORCED)
    plan = ddi.plan_deployment(forced, waiting.state, idle, False)
    assert (plan.step, plan.state.forced) == (ddi.Step.INSTALL, True)
    skip = dataclasses.replace(deployment, download=ddi.Handling.SKIP)
    assert ddi.plan_deployment(skip, ddi.ActionState(), idle, True).step == ddi.Step.WAIT
