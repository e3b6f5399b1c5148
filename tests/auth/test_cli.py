"""``edge-agent auth ...`` and ``edge-agent remote`` through the real command line."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
from pathlib import Path

import cbor2

from agent.purposes import Purpose
from tests.auth.conftest import run_cli, wait_online
from tests.support.agent_harness import RunningAgent, make_config
from tests.support.broker import Broker
from tests.support.process import spawn_agent

EXIT_BAD_DATA = 2


def keygen(path: Path) -> tuple[str, str]:
    """``auth keygen`` into ``path``: (public key hex, key id hex)."""
    done = run_cli("auth", "keygen", "--out", str(path))
    assert done.returncode == 0, done.stderr
    public = re.search(r"^public key ([0-9a-f]{64})$", done.stdout, re.MULTILINE)
    kid = re.search(r"^key id +([0-9a-f]{32})$", done.stdout, re.MULTILINE)
    assert public and kid, done.stdout
    return public[1], kid[1]


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent: error: "), done.stderr
    return lines[0]


def listing(state: Path) -> dict[str, object]:
    done = run_cli("auth", "list", "--state-dir", str(state), "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def device_id(state: Path) -> str:
    done = run_cli("auth", "device-id", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_keygen_writes_a_private_key_once_and_prints_its_public_half(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    public, _ = keygen(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public not in path.read_text()  # the PEM holds the key, not our hex line
    before = path.read_bytes()
    again = run_cli("auth", "keygen", "--out", str(path))
    assert again.returncode == EXIT_BAD_DATA
    assert "refusing to overwrite" in one_error_line(again)
    assert path.read_bytes() == before


def test_enrol_list_replace_and_reset_on_the_device(tmp_path: Path) -> None:
    state = tmp_path / "state"
    owner_pub, owner_kid = keygen(tmp_path / "owner.key")
    tech_pub, tech_kid = keygen(tmp_path / "tech.key")
    unbound_id = device_id(state)
    assert listing(state) == {"device_id": unbound_id, "principals": []}

    done = run_cli("auth", "enrol", "--state-dir", str(state), "--role", "owner",
                   "--public-key", owner_pub, "--label", "Alice's phone")
    assert done.returncode == 0, done.stderr
    bound_id = device_id(state)
    assert bound_id != unbound_id and bound_id in done.stdout  # a binding renames the device
    (tmp_path / "tech.hex").write_text(tech_pub + "\n")
    done = run_cli("auth", "enrol", "--state-dir", str(state), "--role", "technician",
                   "--public-key", str(tmp_path / "tech.hex"))
    assert done.returncode == 0, done.stderr
    listed = listing(state)
    assert listed["device_id"] == bound_id
    principals = listed["principals"]
    assert isinstance(principals, list)
    assert [(p["role"], p["kid"], p["added_by"]) for p in principals] == [
        ("owner", owner_kid, "cli"),
        ("technician", tech_kid, "cli"),
    ]
    assert principals[0]["label"] == "Alice's phone"
    human = run_cli("auth", "list", "--state-dir", str(state)).stdout
    assert f"device id {bound_id}" in human and owner_kid in human and "technician" in human

    demote = run_cli("auth", "enrol", "--state-dir", str(state), "--role", "technician",
                     "--public-key", owner_pub)
    assert demote.returncode == EXIT_BAD_DATA and "owner's key" in one_error_line(demote)

    # A second owner needs --replace: nobody takes a bound device over by accident.
    new_pub, new_kid = keygen(tmp_path / "new-owner.key")
    refused = run_cli("auth", "enrol", "--state-dir", str(state), "--role", "owner",
                      "--public-key", new_pub)
    assert refused.returncode == EXIT_BAD_DATA
    assert "already has an owner" in one_error_line(refused)
    assert listing(state) == listed
    done = run_cli("auth", "enrol", "--state-dir", str(state), "--role", "owner",
                   "--public-key", new_pub, "--replace")
    assert done.returncode == 0, done.stderr
    replaced = listing(state)
    assert replaced["device_id"] not in (bound_id, unbound_id)
    assert [p["kid"] for p in replaced["principals"]] == [new_kid]  # type: ignore[attr-defined]

    done = run_cli("auth", "reset", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    assert "forgot 1 key(s)" in done.stdout
    after = listing(state)
    assert after["principals"] == [] and after["device_id"] != replaced["device_id"]
    assert str(after["device_id"]) in done.stdout

    audit = run_cli("audit", "show", "--state-dir", str(state))
    kinds = [json.loads(line)["kind"] for line in audit.stdout.splitlines() if line.strip()]
    assert kinds.count("auth.enrol") == 3 and kinds.count("auth.reset") == 1


def test_enrol_refuses_a_private_key_file_and_bad_roles(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keygen(tmp_path / "owner.key")
    done = run_cli("auth", "enrol", "--state-dir", str(state), "--role", "owner",
                   "--public-key", str(tmp_path / "owner.key"))
    assert done.returncode == EXIT_BAD_DATA
    assert "private key" in one_error_line(done)
    done = run_cli("auth", "enrol", "--state-dir", str(state), "--role", "root",
                   "--public-key", "00" * 32)
    assert done.returncode != 0 and "invalid choice" in done.stderr
    assert listing(state)["principals"] == []


def remote(broker: Broker, key: Path, device: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli("remote", "--key", str(key), "--device-id", device, "--host", broker.host,
                   "--port", str(broker.port), "--no-tls", "--timeout", "10", *argv)


def test_remote_sends_signed_commands_to_the_agent_and_prints_json(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    owner_key, tech_key = tmp_path / "owner.key", tmp_path / "tech.key"
    owner_pub, _ = keygen(owner_key)
    tech_pub, _ = keygen(tech_key)
    assert run_cli("auth", "enrol", "--state-dir", str(state), "--role", "owner",
                   "--public-key", owner_pub).returncode == 0
    device = device_id(state)
    running = RunningAgent(make_config(state, broker.port))
    try:
        wait_online(broker, f"edge/{device}")
        done = remote(broker, owner_key, device, "consent.set", "purpose=cloud_events",
                      "granted=true")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["granted"] is True
        assert running.agent.ledger.is_granted(Purpose.CLOUD_EVENTS)

        # Bytes arguments (hex:) and results (base64); data.export travels sealed.
        done = remote(broker, owner_key, device, "data.export", "format=cbor")
        assert done.returncode == 0, done.stderr
        export = json.loads(done.stdout)
        document = cbor2.loads(base64.b64decode(export["data"]))
        assert document["holders"]["consent"]["state"]["cloud_events"] is True
        done = remote(broker, owner_key, device, "auth.grant", "role=technician",
                      f"public_key=hex:{tech_pub}", "label=tech")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["role"] == "technician"

        done = remote(broker, tech_key, device, "consent.set", "purpose=cloud_events",
                      "granted=false")
        assert done.returncode == EXIT_BAD_DATA
        line = one_error_line(done)
        assert line.startswith("edge-agent: error: consent.set: unauthorized: ")
        assert running.agent.ledger.is_granted(Purpose.CLOUD_EVENTS)

        done = remote(broker, owner_key, "d0000000000000000", "consent.get", "--timeout", "1")
        assert done.returncode == 1 and "no reply" in one_error_line(done)
        done = remote(broker, owner_key, device, "consent.set", "granted")
        assert done.returncode == EXIT_BAD_DATA and "key=value" in one_error_line(done)
    finally:
        running.stop()


def test_remote_commands_the_real_agent_process(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    owner_key = tmp_path / "owner.key"
    owner_pub, _ = keygen(owner_key)
    assert run_cli("auth", "enrol", "--state-dir", str(state), "--role", "owner",
                   "--public-key", owner_pub).returncode == 0
    device = device_id(state)
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\n[matching]\nenabled = false\n"
        "[camera]\nenabled = false\n"
    )
    agent = spawn_agent(config, state, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_online(broker, f"edge/{device}")
        done = remote(broker, owner_key, device, "consent.set", "purpose=usage_statistics",
                      "granted=true")
        assert done.returncode == 0, done.stderr
        done = remote(broker, owner_key, device, "consent.get")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["consent"]["usage_statistics"] is True
        done = remote(broker, owner_key, device, "status")
        status = json.loads(done.stdout)
        assert status["bound"] is True and "auth.grant" in status["commands"]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
