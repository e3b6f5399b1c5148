"""The runtime service: periodic check, maintenance window, deferral, health-gated commit."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.events import Event, PendingEvents
from agent.upgrade.events import UPGRADE_STATE
from agent.upgrade.machine import State
from drivers.upgrade.service import UpgradeService, build_service
from tests.upgrade.conftest import random_image
from tests.upgrade.imageserver import ImageServer

INSIDE, OUTSIDE = 3 * 60, 12 * 60  # 03:00 and 12:00 local


class RecordingSink(PendingEvents):
    """The service's own event queue, remembering everything that went through it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def emit(self, event: Event) -> bool:
        self.events.append(event)
        return super().emit(event)

    def states(self) -> list[str]:
        return [str(e.fields["state"]) for e in self.events]


@pytest.fixture
def publish(image_server: ImageServer, sign: Callable[..., bytes]) -> Callable[[int], bytes]:
    def publish(sequence: int) -> bytes:
        image = random_image(150_000)
        image_server.files["/fw.img"] = image
        image_server.files["/latest.suit"] = sign(image, sequence, image_server.url("/fw.img"))
        return image

    return publish


def _service(
    make_config: Callable[..., AgentConfig],
    image_server: ImageServer,
    healthy: list[bool],
    **settings: object,
) -> tuple[UpgradeService, RecordingSink]:
    sink = RecordingSink()
    config = make_config(
        manifest_url=image_server.url("/latest.suit"),
        maintenance_windows=("02:00-04:00",),
        **settings,
    )
    service = build_service(config, lambda: healthy[-1], events=sink)
    service.local_minute = lambda now: OUTSIDE
    service.start()
    service.wait()  # let the start-up reconciliation finish
    return service, sink


def _tick(service: UpgradeService, now: float | None = None) -> None:
    service.tick(time.time() if now is None else now)
    service.wait()


def test_auto_upgrade_waits_for_window_then_commits_when_healthy(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    image = publish(1)
    service, sink = _service(make_config, image_server, [True])
    _tick(service)
    assert service.installer.record().state == State.IDLE  # outside the window
    service.local_minute = lambda now: INSIDE
    _tick(service)
    assert service.installer.record().state == State.AWAITING_REBOOT, service.last_error
    _tick(service)  # reboots (simulated) into the trial slot
    assert service.installer.record().state == State.TRIAL
    _tick(service)  # health check passes: commit
    record = service.installer.record()
    assert record.state == State.COMMITTED
    assert record.installed_sequence == 1
    status = service.installer.slots.boot_status()
    assert (status.booted_slot, status.trial) == ("b", False)
    assert "downloading" in sink.states()
    assert sink.states()[-4:] == ["installing", "awaiting-reboot", "trial", "committed"]
    last = sink.events[-1]
    assert last.type == "upgrade.state"
    assert last.fields["total"] == len(image)
    assert set(last.fields) == set(UPGRADE_STATE.fields)


def test_unhealthy_trial_rolls_back_after_grace(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    publish(1)
    healthy = [False]
    service, sink = _service(make_config, image_server, healthy, health_grace_seconds=0.0)
    service.local_minute = lambda now: INSIDE
    _tick(service)
    _tick(service)
    assert service.installer.record().state == State.TRIAL
    _tick(service)
    record = service.installer.record()
    assert record.state == State.ROLLED_BACK
    assert "health" in record.reason
    assert service.installer.slots.boot_status().booted_slot == "a"
    assert sink.states()[-1] == "rolled-back"


def test_crashing_health_check_counts_as_unhealthy(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    publish(1)
    service, _ = _service(make_config, image_server, [True], health_grace_seconds=0.0)
    service.local_minute = lambda now: INSIDE
    _tick(service)
    _tick(service)

    def broken() -> bool:
        raise RuntimeError("agent loop dead")

    service.health_check = broken
    _tick(service)
    assert service.installer.record().state == State.ROLLED_BACK


def test_model_not_listed_is_not_auto_upgraded(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    publish(1)
    service, _ = _service(make_config, image_server, [True], auto_install_models=("nvr-9",))
    service.local_minute = lambda now: INSIDE
    _tick(service)
    assert service.installer.record().state == State.IDLE
    assert not [p for p, _ in image_server.requests if p == "/fw.img"]


def test_deferral_postpones_auto_upgrade(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    publish(1)
    service, _ = _service(make_config, image_server, [True])
    service.local_minute = lambda now: INSIDE
    reply = service.handle_apply({"defer_seconds": 3600})
    assert float(str(reply["deferred_until"])) > time.time() + 3500
    _tick(service)
    assert service.installer.record().state == State.IDLE
    _tick(service, now=time.time() + 3700)
    assert service.installer.record().state == State.AWAITING_REBOOT
    with pytest.raises(DecodeError):
        service.handle_apply({"defer_seconds": 10**9})


def test_mqtt_handlers_check_apply_status(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    image = publish(4)
    service, _ = _service(make_config, image_server, [True], auto_install_models=())
    handlers = service.command_handlers()
    assert set(handlers) == {"upgrade.check", "upgrade.apply", "upgrade.status"}
    check = handlers["upgrade.check"]({})
    assert (check["sequence"], check["size"]) == (4, len(image))
    assert handlers["upgrade.apply"]({}) == {"started": True}
    service.wait()
    status = handlers["upgrade.status"]({})
    assert status["state"] == "awaiting-reboot"
    assert (status["received"], status["total"]) == (len(image), len(image))
    assert status["next_slot"] == "b"


def test_reboot_is_requested_once_per_boot(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, publish: Callable
) -> None:
    publish(1)
    service, _ = _service(make_config, image_server, [True], auto_install_models=())
    service.handle_apply({})
    service.wait()
    service.settings = make_config(auto_install_models=("edge-cam-1",)).upgrade
    calls: list[float] = []
    service.reboot = lambda: calls.append(1.0)  # a real reboot takes a while to happen
    now = time.time()
    for step in range(5):
        service.tick(now + step)
    assert calls == [1.0]
    service.tick(now + 400)
    assert len(calls) == 2


def test_stop_interrupts_a_download_which_resumes_on_next_start(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Callable[..., bytes]
) -> None:
    from tests.upgrade.imageserver import Fault

    image = random_image(400_000)
    image_server.files["/fw.img"] = image
    image_server.files["/latest.suit"] = sign(image, 1, image_server.url("/fw.img"))
    image_server.faults["/fw.img"] = Fault(trickle_delay=0.002)
    service, _ = _service(make_config, image_server, [True], auto_install_models=())
    service.handle_apply({})
    deadline = time.monotonic() + 10
    slot_b = service.config.state_dir / "upgrade" / "slots" / "slot-b.img"
    while slot_b.stat().st_size < 50_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    service.stop()
    record = service.installer.record()
    assert record.state == State.DOWNLOADING
    assert 0 < record.received < len(image)
    restarted, _ = _service(make_config, image_server, [True], auto_install_models=())
    assert restarted.installer.record().state == State.AWAITING_REBOOT
    ranges = [r for p, r in image_server.requests if p == "/fw.img"]
    assert ranges[-1] is not None
