"""Helpers for discovery tests: loopback-only configs and a ticking responder."""

from __future__ import annotations

import dataclasses
import pathlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from agent.config import AgentConfig
from agent.discovery.settings import DiscoverySettings

VECTOR = pathlib.Path("wsdiscovery") / "probe_response_real.xml"


def loopback_config(tmp_path: pathlib.Path, **discovery: object) -> AgentConfig:
    """Defaults, state in ``tmp_path``, no reply delay, no mDNS, ephemeral WSD port."""
    fields: dict[str, object] = {
        "reply_delay_max_ms": 0,
        "mdns_enabled": False,
        "wsd_port": 0,
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


def receive_all(sock: socket.socket, quiet: float = 0.3) -> list[bytes]:
    """Every datagram until ``quiet`` seconds pass without one."""
    received = []
    sock.settimeout(quiet)
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return received
        received.append(data)
