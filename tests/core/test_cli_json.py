"""``--json`` on every sub-command that prints data, run against real state and real peers.

Each command's output must parse: one JSON document for a one-shot command, JSON Lines
ending in ``{"event": "result", "ok": true}`` for a long-running one
(drivers/cli/output.py), and ``{"ok": false, "error": {...}}`` beside the one stderr
line when it fails.  :data:`EXERCISED_BY` names the test that runs each command; a
test fails if it runs a command mapped to another or misses one mapped to it, and
:func:`test_every_json_command_is_exercised` fails when a command with ``--json`` is
mapped to no test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.audit import AuditLog
from agent.auth.principals import PrincipalStore
from agent.database import Database
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning.improv_device import DeviceInfo, ImprovDevice
from agent.provisioning.provisioner import Provisioner
from drivers.auth import keys
from drivers.cli import EXIT_BAD_DATA, EXIT_TRANSPORT, build_parser, main
from drivers.clock import SystemClock
from drivers.logs.serial_link import FdChannel, TechnicianClient
from drivers.provisioning.service import ProvisioningService, build_service
from drivers.provisioning.store import FileProvisioningStore
from tests.logs.test_retention_audit import _tamper
from tests.logs.test_serial_cli import CODE, _device_service, _seed
from tests.provisioning.radio_double import RadioDouble
from tests.provisioning.support import ImprovPeerDevice, make_config
from tests.support.broker import Broker, free_port
from tests.upgrade.conftest import HARDWARE_CLASS, VENDOR_DOMAIN, random_image
from tests.upgrade.imageserver import serve_images

PASSPHRASE = "json-Passphrase-0451"
ACCOUNT = "acme-site-9"
Command = tuple[str, ...]

# Which test runs each command with --json.  `run` has no --json: it is the daemon and
# logs (journald), it prints no data (tests/core/test_cli_surface.py keeps that list).
EXERCISED_BY: dict[Command, str] = {
    **{
        command: "test_state_dir_commands_print_one_json_document"
        for command in (
            ("audit", "verify"), ("audit", "show"),
            ("auth", "keygen"), ("auth", "enrol"), ("auth", "list"), ("auth", "device-id"),
            ("auth", "reset"),
            ("config", "check"), ("config", "show"), ("config", "reference"),
            ("consent", "show"), ("consent", "history"), ("consent", "grant"),
            ("consent", "withdraw"),
            ("data", "export"), ("data", "erase"),
            ("logs", "bundle"), ("logs", "codes"),
            ("enrol", "face"), ("enrol", "plate"), ("match",),
            ("gallery", "list"), ("gallery", "rename"), ("gallery", "reembed"),
            ("gallery", "remove"), ("gallery", "plates"), ("gallery", "remove-plate"),
            ("provision", "label"), ("provision", "binding-qr"),
            ("samples", "faces"), ("discover",),
        )
    },
    **{
        command: "test_upgrade_commands_print_json"
        for command in (
            ("upgrade", "keygen"), ("upgrade", "sign"), ("upgrade", "check"),
            ("upgrade", "apply"), ("upgrade", "status"),
        )
    },
    ("provision", "bind"): "test_provision_lan_streams_json_lines_and_bind_one_document",
    ("provision", "lan"): "test_provision_lan_streams_json_lines_and_bind_one_document",
    ("provision", "improv"): "test_provision_improv_streams_json_lines",
    ("logs", "pull"): "test_logs_pull_and_serve_print_json",
    ("logs", "serve"): "test_logs_pull_and_serve_print_json",
    ("watch",): "test_watch_and_remote_print_json",
    ("remote",): "test_watch_and_remote_print_json",
}


def _json_commands() -> set[Command]:
    def walk(parser: argparse.ArgumentParser, path: Command) -> Iterator[
        tuple[Command, argparse.ArgumentParser]
    ]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
            return
        for name, sub in subs[0].choices.items():
            yield from walk(sub, (*path, name))

    return {
        path for path, parser in walk(build_parser(), ())
        if any("--json" in a.option_strings for a in parser._actions)
    }


def test_every_json_command_is_exercised() -> None:
    commands = _json_commands()
    assert len(commands) > 40
    assert set(EXERCISED_BY) == commands, (
        f"not exercised: {sorted(commands - set(EXERCISED_BY))}; "
        f"no longer take --json: {sorted(set(EXERCISED_BY) - commands)}"
    )


class Cli:
    """Runs ``edge-agent`` in this process and parses what ``--json`` printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.ran: set[Command] = set()
        self.err = ""

    def _run(self, argv: list[str]) -> tuple[int, str]:
        assert "--json" in argv
        self.ran.add(tuple(argv[:2]) if tuple(argv[:2]) in EXERCISED_BY else (argv[0],))
        self.capsys.readouterr()
        rc = main(argv)
        captured = self.capsys.readouterr()
        self.err = captured.err
        return rc, captured.out

    def document(self, *argv: str, rc: int = 0) -> object:
        """The one JSON document a one-shot command printed (exit code ``rc``)."""
        code, out = self._run(list(argv))
        assert code == rc, (argv, out, self.err)
        return json.loads(out)  # the whole of stdout is one document

    def error(self, *argv: str, rc: int) -> dict[str, object]:
        """A failure: one line on stderr, the error document on stdout."""
        document = self.document(*argv, rc=rc)
        assert isinstance(document, dict) and document["ok"] is False
        error = document["error"]
        assert isinstance(error, dict) and error["exit_code"] == rc
        assert self.err.strip().splitlines()[-1] == f"edge-agent: error: {error['message']}"
        return error

    def lines(self, *argv: str) -> list[dict[str, object]]:
        """JSON Lines of a long-running command: events, then the result."""
        code, out = self._run(list(argv))
        assert code == 0, (argv, out, self.err)
        return parse_lines(out)


def parse_lines(out: str) -> list[dict[str, object]]:
    events = [json.loads(line) for line in out.splitlines()]
    assert events and all(isinstance(e, dict) and "event" in e for e in events)
    assert events[-1]["event"] == "result" and events[-1]["ok"] is True
    assert [e["event"] for e in events].count("result") == 1
    return events


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> Iterator[Cli]:
    runner = Cli(capsys)
    yield runner
    mine = {c for c, test in EXERCISED_BY.items() if test == request.node.name}
    assert runner.ran == mine, (sorted(mine - runner.ran), sorted(runner.ran - mine))


def _as_dict(value: object) -> dict[str, object]:
    assert isinstance(value, dict), value
    return value


def _as_list(value: object) -> list[object]:
    assert isinstance(value, list), value
    return value


def test_state_dir_commands_print_one_json_document(cli: Cli, tmp_path: pathlib.Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[device]\nserial_number = "EA-HUB-0042"\n'
        "[mqtt]\ntls = \"off\"\n"
        "[matching]\nface_detector = 'haar'\nface_embedder = 'lbp'\nkeep_enrolment_crops = true\n"
    )
    o = ("--config", str(config))

    assert _as_dict(cli.document("config", "check", str(config), "--json"))["ok"] is True
    assert _as_dict(cli.document("config", "show", *o[:2], "--json"))["state_dir"] == str(
        tmp_path / "state"
    )
    keys = [_as_dict(k) for k in _as_list(cli.document("config", "reference", "--json"))]
    assert {"state_dir", "mqtt.tls", "matching.face_embedder"} <= {k["key"] for k in keys}
    assert _as_list(cli.document("logs", "codes", "--json"))

    # Who commands the device.
    key = tmp_path / "owner.pem"
    made = _as_dict(cli.document("auth", "keygen", "--out", str(key), "--json"))
    enrolled = _as_dict(cli.document(
        "auth", "enrol", *o, "--role", "owner", "--public-key", str(made["public_key"]), "--json"
    ))
    assert (enrolled["kid"], enrolled["changed"]) == (made["kid"], True)
    listed = _as_dict(cli.document("auth", "list", *o, "--json"))
    assert listed["device_id"] == enrolled["device_id"]
    assert _as_dict(cli.document("auth", "device-id", *o, "--json"))["device_id"] == (
        enrolled["device_id"]
    )
    reset = _as_dict(cli.document("auth", "reset", *o, "--json"))
    assert reset["forgotten"] == 1 and reset["previous_device_id"] == enrolled["device_id"]

    # Consent.
    shown = _as_dict(_as_dict(cli.document("consent", "show", *o, "--json"))["face_recognition"])
    assert shown["granted"] is False and "faces" in str(shown["description"])
    granted = cli.document("consent", "grant", "face_recognition", "--yes", *o, "--json")
    assert granted == {"face_recognition": {"granted": True, "purged": 0}}
    assert cli.document(
        "consent", "grant", "plate_recognition", "--yes", *o, "--json"
    ) == {"plate_recognition": {"granted": True, "purged": 0}}
    assert len(_as_list(cli.document("consent", "history", *o, "--json"))) == 2

    # Faces: the sample camera's drawn people, enrolled and matched.
    written = _as_dict(cli.document(
        "samples", "faces", str(tmp_path / "photos"), "--people", "2,5", "--json"
    ))
    two, five = _as_list(written["person2"]), _as_list(written["person5"])
    face = _as_dict(cli.document("enrol", "face", "two", *map(str, two[:3]), *o, "--json"))
    assert (face["name"], face["samples"], face["skipped"]) == ("two", 3, 0)
    cli.document("enrol", "face", "five", *map(str, five[:3]), *o, "--json")
    matched = _as_dict(cli.document("match", str(five[3]), *o, "--json"))
    assert (matched["known"], matched["name"]) == (True, "five")
    assert isinstance(matched["score"], float)
    renamed = _as_dict(cli.document("gallery", "rename", "two", "--to", "deux", *o, "--json"))
    assert renamed == {"name": "deux", "id": face["id"], "label": None}
    reembedded = _as_dict(cli.document("gallery", "reembed", "--yes", *o, "--json"))
    assert reembedded["without_crops"] == []
    assert sorted(_as_dict(r)["name"] for r in _as_list(reembedded["reembedded"])) == [
        "deux", "five"
    ]
    listed_faces = _as_dict(cli.document("gallery", "list", *o, "--json"))
    assert sorted(_as_dict(i)["name"] for i in _as_list(listed_faces["identities"])) == [
        "deux", "five"
    ]
    removed = cli.document("gallery", "remove", "deux", *o, "--json")
    assert removed == {"removed": {"name": "deux", "id": face["id"]}}
    # Nobody known in a photo: its own exit code, still a document.
    unknown = tmp_path / "blank.png"
    cv2.imwrite(str(unknown), np.full((120, 120, 3), 128, np.uint8))
    nobody = _as_dict(cli.document("match", str(unknown), *o, "--json", rc=3))
    assert nobody["known"] is False and nobody["name"] is None
    # Plates.
    plate = _as_dict(cli.document("enrol", "plate", "AB-123", "--label", "van", *o, "--json"))
    assert (plate["plate"], plate["list"], plate["label"]) == ("AB123", "allow", "van")
    assert [_as_dict(p)["plate"] for p in _as_list(cli.document("gallery", "plates", *o, "--json"))
            ] == ["AB123"]
    assert _as_dict(cli.document("gallery", "remove-plate", "AB123", *o, "--json"))[
        "removed"] == plate

    # Provisioning label and binding QR from the configured serial.
    label = _as_dict(cli.document("provision", "label", *o, "--json"))
    assert label["serial_number"] == "EA-HUB-0042"
    qr = _as_dict(cli.document(
        "provision", "binding-qr", "--label", str(label["payload"]), "--account", ACCOUNT,
        "--owner-key", str(made["public_key"]), "--json",
    ))
    assert json.loads(str(qr["payload"]))["account"] == ACCOUNT and qr["png"] is None

    # Logs, export, erasure, audit.
    bundle = _as_dict(cli.document("logs", "bundle", *o, "--json"))
    assert _as_dict(_as_list(bundle["bundle"])[0])["format"] == "edge-agent-log-bundle"
    out = tmp_path / "bundle.jsonl"
    written_bundle = _as_dict(cli.document("logs", "bundle", *o, "-o", str(out), "--json"))
    assert written_bundle["bytes"] == out.stat().st_size and "bundle" not in written_bundle
    export = _as_dict(cli.document("data", "export", *o, "--json"))
    assert "consent" in export or "audit" in export
    archive = tmp_path / "export.zip"
    exported = _as_dict(cli.document("data", "export", *o, "-o", str(archive), "--json"))
    assert (exported["format"], exported["bytes"]) == ("zip", archive.stat().st_size)
    erased = _as_dict(cli.document("data", "erase", "--yes", *o, "--json"))
    assert erased["complete"] is True
    assert _as_dict(cli.document("consent", "withdraw", "face_recognition", *o, "--json"))[
        "face_recognition"] == {"granted": False, "purged": 0}
    verdict = _as_dict(cli.document("audit", "verify", *o, "--json"))
    assert verdict["verdict"] == "intact"
    entries = _as_list(cli.document("audit", "show", *o, "--json"))
    assert len(entries) == verdict["entries"]
    # An edited chain: the verdict is still the document, and the failure has its line.
    audit = AuditLog.in_state_dir(tmp_path / "state")
    path = audit.path
    audit.close()
    _tamper(path, "DELETE FROM audit WHERE idx = 1")
    broken = _as_dict(cli.document("audit", "verify", *o, "--json", rc=EXIT_BAD_DATA))
    assert (broken["ok"], broken["first_bad_index"]) == (False, 1)
    assert cli.err.strip().splitlines()[-1].startswith("edge-agent: error: audit log ")

    # Discovery with every search off still reports (the gateway, no errors).
    assert _as_dict(cli.document(
        "discover", *o, "--no-cameras", "--no-router", "--no-agents", "--json"
    ))["errors"] == {}

    # A failure: one stderr line, the exit code, and the error document.
    error = cli.error("gallery", "remove", "nobody", *o, "--json", rc=EXIT_BAD_DATA)
    assert error["code"] == "not_found" and "nobody" in str(error["message"])
    sample = tmp_path / "sample.toml"
    sample.write_text("")  # the built-in defaults: the sample serial number
    error = cli.error("provision", "label", "--config", str(sample), "--state-dir",
                      str(tmp_path / "s2"), "--json", rc=EXIT_BAD_DATA)
    assert error["code"] == "config" and "sample serial" in str(error["message"])


def test_upgrade_commands_print_json(cli: Cli, tmp_path: pathlib.Path) -> None:
    key = tmp_path / "vendor.pem"
    made = _as_dict(cli.document("upgrade", "keygen", "--out", str(key), "--json"))
    pub = pathlib.Path(str(made["public_key_file"]))
    assert pub.exists() and made["algorithm"] == "ed25519"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nhardware_class = "{HARDWARE_CLASS}"\n'
        f'[upgrade]\ntrusted_keys = ["{pub}"]\nvendor_domain = "{VENDOR_DOMAIN}"\n'
    )
    o = ("--config", str(config), "--state-dir", str(tmp_path / "state"))
    data = random_image(50_000)
    image = tmp_path / "fw.img"
    image.write_bytes(data)
    envelope = tmp_path / "fw.suit"
    with serve_images() as server:
        server.files["/fw.img"] = data
        signed = _as_dict(cli.document(
            "upgrade", "sign", "--key", str(key), "--image", str(image), "--sequence", "4",
            "--hardware-class", HARDWARE_CLASS, "--vendor-domain", VENDOR_DOMAIN,
            "--uri", server.url("/fw.img"), "--version", "2.4", "--out", str(envelope), "--json",
        ))
        assert (signed["sequence"], signed["image_size"]) == (4, len(data))
        assert signed["bytes"] == envelope.stat().st_size
        checked = _as_dict(cli.document("upgrade", "check", *o, "--manifest", str(envelope),
                                        "--json"))
        assert (checked["sequence"], checked["software_version"]) == (4, "2.4")
        assert checked["image_digest"] == signed["image_digest"]
        applied = _as_dict(cli.document("upgrade", "apply", *o, "--manifest", str(envelope),
                                        "--json"))
        assert applied["state"] == "awaiting-reboot" and applied["sequence"] == 4
    status = _as_dict(cli.document("upgrade", "status", *o, "--json"))
    assert status["state"] == "awaiting-reboot"
    # A manifest that is not one: refused with the error document.
    envelope.write_bytes(b"\x00" * 10)
    error = cli.error("upgrade", "check", *o, "--manifest", str(envelope), "--json",
                      rc=EXIT_BAD_DATA)
    assert error["code"] == "decode"


@contextlib.contextmanager
def _provisioning_device(state: pathlib.Path) -> Iterator[tuple[ProvisioningService, str]]:
    state.mkdir()
    db = Database.in_state_dir(state)
    service = build_service(
        make_config(state), RadioDouble({"Home": PASSPHRASE}), principals=PrincipalStore(db)
    )
    service.start()
    try:
        assert service.lan is not None
        yield service, f"http://127.0.0.1:{service.lan.port}"
    finally:
        service.stop()
        db.close()


def test_provision_lan_streams_json_lines_and_bind_one_document(
    cli: Cli, tmp_path: pathlib.Path
) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE)
    owner_hex = keys.public_key_hex(keys.generate_key())
    with _provisioning_device(tmp_path / "a") as (service, url):
        code = service.binding.verification_code
        events = cli.lines(
            "provision", "lan", "--device", url, "--code", code, "--ssid", "Home",
            "--passphrase-file", str(secret), "--bind", ACCOUNT, "--owner-key", str(owner_hex),
            "--json",
        )
        assert service.provisioned
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and "bound" in kinds
    assert any(e.get("message") == "device verified" for e in events)
    result = events[-1]
    assert result["ssid"] == "Home" and result["serial_number"] == service.binding.serial_number
    assert result["device_id"] == next(e for e in events if e["event"] == "bound")["device_id"]
    assert PASSPHRASE not in json.dumps(events) + cli.err
    assert cli.err == ""  # under --json the progress is on stdout, as events

    with _provisioning_device(tmp_path / "b") as (service, url):
        bound = _as_dict(cli.document(
            "provision", "bind", "--device", url, "--code", service.binding.verification_code,
            "--account", ACCOUNT, "--owner-key", str(owner_hex), "--json",
        ))
        assert bound["account"] == ACCOUNT and bound["serial_number"] == (
            service.binding.serial_number
        )
        # Bound already: the error document, after no partial output.
        error = cli.error(
            "provision", "bind", "--device", url, "--code", service.binding.verification_code,
            "--account", ACCOUNT, "--owner-key", str(owner_hex), "--json", rc=EXIT_BAD_DATA,
        )
        assert "already bound" in str(error["message"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # A long-running command that fails: its last (here only) line is the error document.
    code_, out = cli._run(["provision", "lan", "--device", closed, "--code", "40719382",
                           "--ssid", "Home", "--json"])
    assert code_ == EXIT_TRANSPORT
    last = json.loads(out.splitlines()[-1])
    assert last["ok"] is False and last["error"]["code"] == "connection_lost"


def test_provision_improv_streams_json_lines(cli: Cli, tmp_path: pathlib.Path) -> None:
    master, slave = os.openpty()
    radio = RadioDouble({"Home": PASSPHRASE})
    device = ImprovDevice(DeviceInfo("edge-agent", "0.1.0", "c", "d"), lambda: radio.scan(1), "")
    store = FileProvisioningStore(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    provisioner = Provisioner(radio, store, SystemClock())
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE)
    try:
        with ImprovPeerDevice(master, device, provisioner):
            events = cli.lines("provision", "improv", "--port", os.ttyname(slave), "--ssid",
                               "Home", "--passphrase-file", str(secret), "--json")
    finally:
        os.close(master)
        os.close(slave)
    assert provisioner.provisioned
    assert events[0] == {"event": "progress", "message": "device state: authorized"}
    assert {"event": "progress", "message": "device state: provisioning"} in events
    assert events[-1]["ssid"] == "Home"


def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_logs_pull_and_serve_print_json(cli: Cli, tmp_path: pathlib.Path) -> None:
    # pull: a technician's laptop against a device's console service on a real pty.
    store = _seed(tmp_path)
    master, slave = os.openpty()
    service = _device_service(store, master)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            service.tick(time.time())
            time.sleep(0.002)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        pulled = _as_dict(cli.document("logs", "pull", "--port", os.ttyname(slave), "--code",
                                       CODE, "--tail", "4", "--json"))
    finally:
        stop.set()
        thread.join(5)
        os.close(slave)
        service.stop()
    lines = _as_list(pulled["bundle"])
    assert _as_dict(lines[0])["lines"] == 4 and _as_dict(lines[-1])["msg"] == "fault 39"

    # serve: the device answers one pull; each answered pull is an event.
    master, slave = os.openpty()
    cli.ran.add(("logs", "serve"))
    cli.capsys.readouterr()
    result: list[int] = []
    argv = ["logs", "serve", "--state-dir", str(tmp_path), "--port", os.ttyname(slave),
            "--duration", "3", "--json"]
    server = threading.Thread(target=lambda: result.append(main(argv)))
    out = ""
    server.start()
    try:
        def serving() -> bool:
            nonlocal out
            out += cli.capsys.readouterr().out
            return '"serving"' in out

        _until(serving)  # the port is open before the first frame
        data = TechnicianClient(FdChannel(master), timeout=5).pull("code", CODE, {"tail": 2})
    finally:
        server.join(15)
        os.close(slave)
        os.close(master)
    out += cli.capsys.readouterr().out
    assert result == [0]
    assert json.loads(data.decode().splitlines()[0])["lines"] == 2
    events = parse_lines(out)
    assert [e["event"] for e in events] == ["serving", "logs.pull", "result"]
    assert _as_dict(events[1]["detail"])["lines"] == 2
    assert events[-1]["pulls"] == 1


def test_watch_and_remote_print_json(
    cli: Cli, tmp_path: pathlib.Path, broker: Broker
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntls = "off"\n')
    publisher = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        publisher.publish("edge/dev1/status", b"online", qos=1, retain=True).wait_for_publish(10)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    code, out = cli._run(["watch", "--config", str(config), "--state-dir", str(tmp_path / "s"),
                          "--device-id", "dev1", "--count", "1", "--timeout", "20", "--json"])
    assert code == 0, cli.err
    (line,) = out.splitlines()  # JSON Lines: one object per message
    message = json.loads(line)
    assert (message["topic"], message["payload"], message["retained"]) == (
        "edge/dev1/status", "online", True
    )
    # remote's result is JSON (tests/auth/test_cli.py); with nobody answering, the error one.
    signer = tmp_path / "op.pem"
    main(["auth", "keygen", "--out", str(signer)])
    error = cli.error(
        "remote", "--key", str(signer), "--device-id", "dev1", "--host", broker.host,
        "--port", str(broker.port), "--no-tls", "--timeout", "1", "status.get", "--json",
        rc=EXIT_TRANSPORT,
    )
    assert error["code"] == "timeout" and "no reply" in str(error["message"])
    # And a broker nobody runs: watch fails in one line and one document.
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\ntls = "off"\n')
    error = cli.error("watch", "--config", str(config), "--state-dir", str(tmp_path / "s"),
                      "--device-id", "dev1", "--json", rc=EXIT_TRANSPORT)
    assert error["code"] == "connection_lost"


@pytest.mark.parametrize(
    ("argv", "prog", "fragment"),
    [
        (["consent", "grant", "--json"], "edge-agent consent grant",
         "the following arguments are required: purpose"),
        # Left-over arguments are the top-level parser's refusal, as in plain argparse.
        (["gallery", "list", "--json", "--no-such-option"], "edge-agent",
         "unrecognized arguments: --no-such-option"),
        (["data", "export", "--json", "--output"], "edge-agent data export",
         "expected one argument"),
    ],
)
def test_a_refused_command_line_under_json_prints_the_error_document(
    argv: list[str], prog: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse's own refusals too: one stderr line after the usage, one document on stdout."""
    assert main(argv) == EXIT_BAD_DATA
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["ok"] is False and document["error"]["code"] == "usage"
    assert document["error"]["exit_code"] == EXIT_BAD_DATA
    assert fragment in document["error"]["message"]
    assert captured.err.startswith("usage: ")
    assert captured.err.strip().splitlines()[-1] == f"{prog}: error: {document['error']['message']}"


def test_a_refused_command_line_without_json_prints_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "--json" after "--" is an operand, not the option.
    assert main(["consent", "grant", "--", "--json"]) == EXIT_BAD_DATA
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "invalid choice: '--json'" in captured.err
