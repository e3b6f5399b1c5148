"""Mutual TLS against a mosquitto that demands a client certificate and takes its name.

The broker runs with ``require_certificate true`` and ``use_identity_as_username
true``, and an ACL that lets only the user named like the device's certificate
write under ``edge/``: an event that reaches the observer proves the agent
connected with its certificate and was known by the name in it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig, TlsMode
from agent.purposes import Purpose
from tests.support.agent_harness import RunningAgent, make_config, motion
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.pki import issue_client_cert, make_pki

DEVICE = "EA-SAMPLE-0001"


class Pki:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca, self.server_cert, self.server_key = make_pki(directory)

    def client_context(self, common_name: str) -> ssl.SSLContext:
        cert, key = issue_client_cert(self.directory, common_name)
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(cert), str(key))
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def mtls_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    acl = tmp_path / "acl"
    acl.write_text(f"user observer\ntopic read edge/#\n\nuser {DEVICE}\ntopic readwrite edge/#\n")
    broker = Broker(
        tmp_path,
        listener_options=(
            f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"allow_anonymous false\nacl_file {acl}\n"
        ),
    )
    broker.start()
    yield broker
    broker.stop()


def _agent_config(state: Path, broker: Broker, pki: Pki, *, with_cert: bool) -> AgentConfig:
    cert, key = issue_client_cert(pki.directory, DEVICE) if with_cert else (None, None)
    return make_config(
        state, broker.port, tls=TlsMode.ON, ca_file=pki.ca, cert_file=cert, key_file=key
    )


def test_agent_publishes_over_mutual_tls_under_its_certificate_name(
    tmp_path: Path, pki: Pki, mtls_broker: Broker
) -> None:
    observer = Collector(
        mtls_broker.host, mtls_broker.port, "edge/#", tls=pki.client_context("observer")
    )
    running = RunningAgent(_agent_config(tmp_path / "state", mtls_broker, pki, with_cert=True))
    try:
        agent = running.agent
        agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        agent.emit(motion(7))
        assert observer.wait_for(
            lambda c: any(e["type"] == "motion" and e["f"]["area"] == 7 for e in c.events())
        ), mtls_broker.log.read_text()[-2000:]
        assert agent.link is not None and agent.link.connected
        assert f"{agent.topics.base}/status" in observer.topics()
    finally:
        running.stop()
        observer.close()


def test_broker_refuses_a_client_without_a_certificate(
    tmp_path: Path, pki: Pki, mtls_broker: Broker
) -> None:
    running = RunningAgent(_agent_config(tmp_path / "state", mtls_broker, pki, with_cert=False))
    try:
        agent = running.agent
        assert agent.link is not None
        # The broker's own refusal is the sentinel: once it is logged, the attempt is over.
        refused = "peer did not return a certificate"
        deadline = time.monotonic() + 15
        while refused not in mtls_broker.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert refused in mtls_broker.log.read_text()
        while not agent.link.last_error and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.link.last_error  # the agent saw it fail, too
        assert agent.link.connects == 0 and not agent.link.connected
        assert agent.outbox.stats()["acked"] == 0
        assert len(agent.outbox) == 1  # the start-up status event, still queued
    finally:
        running.stop()

