"""Helpers for discovery tests: loopback-only configs and a ticking responder."""

from __future__ import annotations

import dataclasses
import pathlib
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.discovery.settings import DiscoverySettings
from tests.conftest import vector_path

# A ProbeMatches reply captured from a real camera (tests/vectors/).
VECTOR = "wsdiscovery/probe_response_real.xml"


def real_probe_match() -> bytes:
    """The captured reply's bytes; a missing vector file fails the test."""
    return vector_path(VECTOR).read_bytes()


def loopback_config(tmp_path: pathlib.Path, **discovery: object) -> AgentConfig:
    """Defaults, state in ``tmp_path``, no reply delay, no mDNS, ephemeral WSD and ONVIF ports."""
    fields: dict[str, object] = {
        "reply_delay_max_ms": 0,
        "mdns_enabled": False,
        "wsd_port": 0,
        "http_port": 0,
        "interface_address": "127.0.0.1",
        "probe_repeats": 1,
    }
    fields.update(discovery)
    settings = dataclasses.replace(DiscoverySettings(), **fields)  # type: ignore[arg-type]
    return dataclasses.replace(AgentConfig(), state_dir=tmp_path, discovery=settings)


class Ticker:
    """Calls ``service.tick`` from a thread, waking on its socket, until stopped."""

    def __init__(self, service: object) -> None:
        self.service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            fileno_fn = getattr(self.service, "fileno", None)
            fileno = fileno_fn() if fileno_fn is not None else -1
            if fileno >= 0:
                select.select([fileno], [], [], 0.01)
            else:
                time.sleep(0.01)
            self.service.tick(time.time())  # type: ignore[attr-defined]

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@contextmanager
def running(service: object) -> Iterator[object]:
    service.start()  # type: ignore[attr-defined]
    try:
        with Ticker(service):
            yield service
    finally:
        service.stop()  # type: ignore[attr-defined]


@pytest.fixture
def udp_listener() -> Iterator[socket.socket]:
    """A loopback UDP socket that stands in for the multicast group in announcements."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3)
    try:
        yield sock
    finally:
        sock.close()


def tick_until_read(service: Any, timeout: float = 5.0) -> None:
    """Wait until a datagram sent to ``service`` is on its socket, then tick it once.

    ``tick`` reads the socket and sends every reply due now before it returns,
    so after this call an answer (if any) is already on its way.
    """
    fileno = service.fileno()
    assert select.select([fileno], [], [], timeout)[0], "the datagram never reached the service"
    service.tick(time.time())
    assert not select.select([fileno], [], [], 0)[0], "the service left datagrams unread"


def received_before_sentinel(sock: socket.socket, timeout: float = 5.0) -> list[bytes]:
    """Every datagram that reached ``sock`` before a sentinel datagram sent to it now.

    Call it once the code under test has sent (or decided not to send): on
    loopback a datagram is queued at the receiver inside ``sendto``, so anything
    sent earlier is ahead of the sentinel.  Waiting for the sentinel instead of
    for a quiet spell makes "nothing arrived" a fact, not a timing guess; a
    sentinel that never comes fails the test.
    """
    token = b"sentinel-" + uuid.uuid4().hex.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(token, sock.getsockname())
    sock.settimeout(timeout)
    received: list[bytes] = []
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            pytest.fail(f"the sentinel datagram never reached {sock.getsockname()}")
        if data == token:
            return received
        received.append(data)
