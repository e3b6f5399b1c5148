"""Streaming download against a real loopback HTTP server with injected faults."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.errors import ConnectionLostError, NotFoundError
from agent.upgrade.errors import ExtraDataError
from agent.upgrade.machine import State
from drivers.upgrade.http import HttpImageSource, fetch_bounded
from drivers.upgrade.service import build_installer
from tests.upgrade.conftest import random_image
from tests.upgrade.imageserver import Fault, ImageServer

Sign = Callable[..., bytes]


def _install(config: AgentConfig, envelope: bytes) -> tuple[bytes, State]:
    installer, machine = build_installer(config)
    assert machine is not None
    record = installer.install(envelope)
    return (machine.directory / "slot-b.img").read_bytes(), record.state


def test_cut_mid_stream_resumes_with_range(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(1_000_000)
    image_server.files["/cut.img"] = image
    image_server.faults["/cut.img"] = Fault(cut_after=300_000, cuts=2)
    slot, state = _install(make_config(), sign(image, 1, image_server.url("/cut.img")))
    assert slot == image
    assert state == State.AWAITING_REBOOT
    ranges = [r for path, r in image_server.requests if path == "/cut.img"]
    assert ranges[0] is None
    assert ranges[1] == "bytes=300000-"
    assert ranges[2] == "bytes=600000-"


def test_server_ignoring_range_still_yields_the_exact_image(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(800_000)
    image_server.files["/norange.img"] = image
    image_server.faults["/norange.img"] = Fault(cut_after=500_000, ignore_range=True)
    slot, state = _install(make_config(), sign(image, 1, image_server.url("/norange.img")))
    assert slot == image
    assert state == State.AWAITING_REBOOT


def test_short_content_length_is_treated_as_a_cut(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(100_000)
    image_server.files["/short.img"] = image
    image_server.faults["/short.img"] = Fault(claim_length=60_000)
    slot, _ = _install(make_config(), sign(image, 1, image_server.url("/short.img")))
    assert slot == image
    assert len([p for p, _ in image_server.requests if p == "/short.img"]) >= 2


def test_long_content_length_is_refused_before_reading(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(100_000)
    image_server.files["/long.img"] = image + b"x" * 10
    with pytest.raises(ExtraDataError, match="announces"):
        _install(make_config(), sign(image, 1, image_server.url("/long.img")))


def test_persistent_cuts_give_up_after_the_attempt_limit(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(100_000)
    image_server.files["/flaky.img"] = image
    image_server.faults["/flaky.img"] = Fault(cut_after=0, cuts=100)
    installer, _ = build_installer(make_config(download_attempts=3))
    with pytest.raises(ConnectionLostError):
        installer.install(sign(image, 1, image_server.url("/flaky.img")))
    assert installer.record().state == State.FAILED
    assert len([p for p, _ in image_server.requests if p == "/flaky.img"]) == 3


def test_missing_image_fails_as_not_found(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(1000)
    installer, _ = build_installer(make_config())
    with pytest.raises(NotFoundError):
        installer.install(sign(image, 1, image_server.url("/nothing.img")))
    assert installer.record().state == State.FAILED


def test_fetch_bounded_refuses_oversized_manifests(image_server: ImageServer) -> None:
    image_server.files["/big"] = b"\x00" * 5000
    image_server.files["/small"] = b"\x01" * 10
    assert fetch_bounded(image_server.url("/small"), 100) == b"\x01" * 10
    with pytest.raises(Exception, match="exceeds"):
        fetch_bounded(image_server.url("/big"), 100)
    image_server.faults["/big"] = Fault(omit_length=True)
    with pytest.raises(Exception, match="more than"):
        fetch_bounded(image_server.url("/big"), 100)


def test_range_request_reports_the_resumed_offset(image_server: ImageServer) -> None:
    image_server.files["/r"] = bytes(range(256)) * 10
    stream = HttpImageSource(2.0).open(image_server.url("/r"), 100)
    try:
        assert stream.start == 100
        assert stream.length == 2460
        assert stream.read(4) == bytes([100, 101, 102, 103])
    finally:
        stream.close()


def _fail_after(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, path: str,
    image: bytes, envelope: bytes, cut_after: int,
) -> None:
    """One install whose only attempt is cut after ``cut_after`` bytes: it ends FAILED."""
    image_server.files[path] = image
    image_server.faults[path] = Fault(cut_after=cut_after, cuts=1)
    installer, _ = build_installer(make_config(download_attempts=1))
    with pytest.raises(ConnectionLostError):
        installer.install(envelope)
    record = installer.record()
    assert (record.state, record.received) == (State.FAILED, cut_after)
    image_server.requests.clear()


def test_a_download_that_ran_out_of_attempts_resumes_from_the_slot_next_time(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    """A long outage ends the install; asking again keeps the bytes already in the slot."""
    image = random_image(600_000)
    envelope = sign(image, 1, image_server.url("/outage.img"))
    _fail_after(make_config, image_server, "/outage.img", image, envelope, 250_000)
    slot, state = _install(make_config(), envelope)
    assert slot == image and state == State.AWAITING_REBOOT
    assert [r for p, r in image_server.requests if p == "/outage.img"] == ["bytes=250000-"]


def test_a_kept_prefix_that_no_longer_matches_is_downloaded_whole_and_not_barred(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(600_000)
    envelope = sign(image, 1, image_server.url("/flipped.img"))
    _fail_after(make_config, image_server, "/flipped.img", image, envelope, 250_000)
    _, machine = build_installer(make_config())
    assert machine is not None
    slot_file = machine.directory / "slot-b.img"
    kept = bytearray(slot_file.read_bytes())
    kept[1000] ^= 0xFF  # a flash error in the kept prefix
    slot_file.write_bytes(bytes(kept))
    slot, state = _install(make_config(), envelope)
    assert slot == image and state == State.AWAITING_REBOOT
    assert [r for p, r in image_server.requests if p == "/flipped.img"] == ["bytes=250000-", None]


def test_another_image_in_the_same_slot_starts_from_the_first_byte(
    make_config: Callable[..., AgentConfig], image_server: ImageServer, sign: Sign
) -> None:
    first = random_image(600_000)
    _fail_after(make_config, image_server, "/first.img", first,
                sign(first, 1, image_server.url("/first.img")), 250_000)
    second = random_image(600_000)
    image_server.files["/second.img"] = second
    slot, state = _install(make_config(), sign(second, 2, image_server.url("/second.img")))
    assert slot == second and state == State.AWAITING_REBOOT
    assert [r for p, r in image_server.requests if p == "/second.img"] == [None]
