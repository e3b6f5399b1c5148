"""The client library over mutual TLS: a mosquitto that demands client certificates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import TlsMode
from agent.errors import ConnectionLostError, EdgeAgentError, VerificationError
from drivers.auth.client import CommandClient, TlsOptions, generate_key
from tests.auth.conftest import bind_owner
from tests.support.agent_harness import RunningAgent, make_config
from tests.support.broker import Broker
from tests.support.pki import issue_client_cert, make_pki


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca, cert, key = make_pki(pki)
    broker = Broker(
        tmp_path,
        listener_options=(
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
            "require_certificate true\nallow_anonymous true\n"
        ),
    )
    broker.start()
    try:
        yield broker, pki
    finally:
        broker.stop()


def test_owner_commands_over_mutual_tls_and_refusals_without_ca_or_certificate(
    tmp_path: Path, mtls: tuple[Broker, Path]
) -> None:
    broker, pki = mtls
    owner = generate_key()
    state = tmp_path / "state"
    device_id = bind_owner(state, owner)
    device_cert, device_key = issue_client_cert(pki, "device")
    running = RunningAgent(
        make_config(
            state, broker.port, tls=TlsMode.ON, ca_file=pki / "ca.pem",
            cert_file=device_cert, key_file=device_key,
        )
    )
    try:
        cert, key = issue_client_cert(pki, "owner-app")
        tls = TlsOptions(ca_file=pki / "ca.pem", cert_file=cert, key_file=key)

        def client(options: TlsOptions) -> CommandClient:
            return CommandClient(
                broker.host, broker.port, device_id=device_id, signing_key=owner, tls=options
            )

        with client(tls) as app:
            status = _until_answered(app)
            assert status["bound"] is True
            result = app.call("consent.set", {"purpose": "cloud_events", "granted": True})
            assert result["granted"] is True

        # System CAs do not know the test CA: the broker is not who it says.
        with pytest.raises(VerificationError, match="does not verify"):
            client(TlsOptions()).connect()
        # The right CA but no client certificate: the broker hangs up during the handshake.
        with pytest.raises(ConnectionLostError):
            client(TlsOptions(ca_file=pki / "ca.pem")).connect()
    finally:
        running.stop()


def _until_answered(app: CommandClient) -> dict[str, object]:
    last: EdgeAgentError | None = None
    for _ in range(20):  # the agent may still be connecting: status is cheap and public
        try:
            return app.call("status", timeout=1.0)
        except EdgeAgentError as exc:
            last = exc
    raise AssertionError(f"the agent never answered over TLS: {last}")
