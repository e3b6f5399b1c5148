"""A release that failed its trial or its verification is never installed again by itself.

The failed sequence is kept in the persisted upgrade state; the periodic
check skips it until a newer sequence is published, and only an explicit
``upgrade.apply`` with ``force: true`` (CLI ``upgrade apply --force``) retries it.
A transport fault (a cut download) does not bar a release.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.upgrade.errors import FailedReleaseError
from agent.upgrade.machine import State
from drivers.upgrade.service import UpgradeService, build_service
from tests.upgrade.conftest import random_image
from tests.upgrade.imageserver import Fault, ImageServer

INSIDE = 3 * 60


def _service(
    make_config: Callable[..., AgentConfig], server: ImageServer, healthy: list[bool], **kw: object
) -> UpgradeService:
    config = make_config(manifest_url=server.url("/latest.suit"), health_grace_seconds=0.0, **kw)
    service = build_service(config, lambda: healthy[-1])
    service.local_minute = lambda now: INSIDE
    service.start()
    service.wait()
    return service


def _tick(service: UpgradeService, now: float | None = None) -> None:
    service.tick(time.time() if now is None else now)
    service.wait()


def _image_requests(server: ImageServer, path: str = "/fw.img") -> int:
    return len([p for p, _ in server.requests if p == path])


@pytest.fixture
def publish(image_server: ImageServer, sign: Callable[..., bytes]) -> Callable[..., bytes]:
    def publish(sequence: int, path: str = "/fw.img") -> bytes:
        image = random_image(60_000)
        image_server.files[path] = image
        image_server.files["/latest.suit"] = sign(image, sequence, image_server.url(path))
        return image

    return publish


def _fail_a_trial(service: UpgradeService) -> None:
    _tick(service)  # check + install
    _tick(service)  # simulated reboot into the trial
    assert service.installer.record().state == State.TRIAL, service.last_error
    _tick(service)  # unhealthy past the grace: roll back (and reboot)
    assert service.installer.record().state == State.ROLLED_BACK


def test_a_release_that_failed_its_trial_is_not_installed_again_until_a_newer_one(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    publish(5)
    healthy = [False]
    service = _service(make_config, image_server, healthy)
    _fail_a_trial(service)
    assert service.installer.record().failed_sequences == (5,)
    assert service.installer.slots.boot_status().booted_slot == "a"
    downloads = _image_requests(image_server)
    now = time.time()
    for step in range(1, 4):  # later checks, each past the check interval
        _tick(service, now + step * service.settings.check_interval_seconds)
    assert _image_requests(image_server) == downloads
    assert service.installer.record().state == State.ROLLED_BACK
    assert "sequence 5 failed on this device before" in service.last_error
    assert "health check failed" in service.last_error
    # The same holds after a restart: the bar is persisted with the upgrade state.
    restarted = _service(make_config, image_server, healthy)
    _tick(restarted, now + 10 * service.settings.check_interval_seconds)
    assert _image_requests(image_server) == downloads
    # A newer sequence is installed as usual.
    publish(6, "/fw6.img")
    healthy.append(True)
    _tick(restarted, now + 20 * service.settings.check_interval_seconds)
    assert restarted.installer.record().state == State.AWAITING_REBOOT
    assert restarted.installer.record().sequence == 6
    _tick(restarted)
    _tick(restarted)
    record = restarted.installer.record()
    assert (record.state, record.installed_sequence) == (State.COMMITTED, 6)
    assert record.failed_sequences == ()  # nothing newer than the installed one is barred


def test_only_an_apply_with_force_retries_a_failed_release(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    publish(5)
    healthy = [False]
    service = _service(make_config, image_server, healthy)
    _fail_a_trial(service)
    handlers = service.command_handlers()
    with pytest.raises(FailedReleaseError, match="sequence 5 failed on this device before"):
        handlers["upgrade.check"]({})
    with pytest.raises(FailedReleaseError, match="force"):
        handlers["upgrade.apply"]({})
    for bad in ("yes", 1, None):
        with pytest.raises(DecodeError, match="force"):
            handlers["upgrade.apply"]({"force": bad})
    assert handlers["upgrade.apply"]({"force": True}) == {"started": True}
    service.wait()
    record = service.installer.record()
    assert (record.state, record.sequence) == (State.AWAITING_REBOOT, 5), service.last_error
    assert record.failed_sequences == (5,)  # still barred for the automatic path
    healthy.append(True)
    _tick(service)
    _tick(service)
    record = service.installer.record()
    assert (record.state, record.installed_sequence) == (State.COMMITTED, 5)


def test_a_cut_download_does_not_bar_the_release(
    make_config: Callable[..., AgentConfig],
    image_server: ImageServer,
    sign: Callable[..., bytes],
) -> None:
    image = random_image(60_000)
    image_server.files["/fw.img"] = image
    image_server.files["/latest.suit"] = sign(image, 7, image_server.url("/fw.img"))
    # Cut before a byte arrives, every time: no progress, so the attempts run out.
    image_server.faults["/fw.img"] = Fault(cut_after=0, cuts=100)
    service = _service(make_config, image_server, [True], download_attempts=2)
    _tick(service)
    record = service.installer.record()
    assert (record.state, record.failed_sequences) == (State.FAILED, ())
    image_server.faults.clear()
    _tick(service, time.time() + service.settings.check_interval_seconds)
    assert service.installer.record().state == State.AWAITING_REBOOT, service.last_error


def test_an_image_that_fails_verification_is_barred(
    make_config: Callable[..., AgentConfig],
    image_server: ImageServer,
    sign: Callable[..., bytes],
) -> None:
    signed = random_image(60_000)
    image_server.files["/fw.img"] = random_image(60_000)  # not the signed bytes
    image_server.files["/latest.suit"] = sign(signed, 8, image_server.url("/fw.img"))
    service = _service(make_config, image_server, [True])
    _tick(service)
    record = service.installer.record()
    assert (record.state, record.failed_sequences) == (State.FAILED, (8,))
    assert "digest" in record.reason
    downloads = _image_requests(image_server)
    _tick(service, time.time() + 5 * service.settings.check_interval_seconds)
    assert _image_requests(image_server) == downloads
    assert "sequence 8 failed on this device before" in service.last_error
    assert service.installer.slots.boot_status().next_slot == "a"
