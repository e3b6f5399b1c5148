"""The installer reads time only from its injected ``agent.ports.Clock``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.events import Event
from agent.upgrade.errors import ExpiredManifestError
from agent.upgrade.machine import Decision, State
from drivers.upgrade.service import build_installer
from tests.support.clock import SteppedWallClock
from tests.upgrade.conftest import random_image
from tests.upgrade.imageserver import ImageServer

Sign = Callable[..., bytes]
EXPIRY = 2_000_000_000  # 2033: in the future for the real clock


class Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> bool:
        self.events.append(event)
        return True


def test_expiry_is_judged_by_the_injected_clock(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    installer, _ = build_installer(make_config())
    image = random_image(1000)
    image_server.files["/clock.img"] = image
    envelope = sign(image, 1, image_server.url("/clock.img"), expires_at=EXPIRY)
    installer.clock = SteppedWallClock(EXPIRY)
    with pytest.raises(ExpiredManifestError):
        installer.verify(envelope)
    installer.clock = SteppedWallClock(EXPIRY - 1)
    assert installer.verify(envelope).manifest.expires_at == EXPIRY


def test_record_events_and_health_grace_follow_the_injected_clock(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    sink = Events()
    installer, machine = build_installer(make_config(health_grace_seconds=60.0), sink)
    assert machine is not None
    clock = SteppedWallClock(1_000_000.0)
    installer.clock = clock
    image = random_image(20_000)
    image_server.files["/grace.img"] = image
    record = installer.install(sign(image, 1, image_server.url("/grace.img")))
    assert record.updated_at == 1_000_000.0
    assert sink.events and {e.occurred_at for e in sink.events} == {1_000_000.0}
    machine.boot()
    clock.wall = 2_000_000.0
    record, _ = installer.resume()
    assert record.state == State.TRIAL and record.trial_since == 2_000_000.0
    clock.wall += 59.0
    assert installer.health(False)[1] == Decision.CHECK_HEALTH
    clock.wall += 1.0
    record, decision = installer.health(False)
    assert decision == Decision.ROLLBACK and record.updated_at == 2_000_060.0
