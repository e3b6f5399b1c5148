"""Where the ONVIF user is kept: sealed and 0600, or a file the image provides."""

from __future__ import annotations

import pathlib
import socket
import time

import pytest

from agent.config import AgentConfig
from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import DecodeError, PolicyError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from drivers.discovery.onvif_store import (
    OnvifCredentialsHolder,
    OnvifCredentialStore,
    check_password,
    check_username,
)
from drivers.discovery.service import build_service
from tests.discovery.conftest import loopback_config, running
from tests.discovery.onvif_support import envelope, fault_subcodes, post, signed
from tests.support.clock import FixedClock


def store_in(tmp_path: pathlib.Path) -> OnvifCredentialStore:
    layout = StateLayout(tmp_path)
    return OnvifCredentialStore(layout, DataKeys(layout))


def test_sealed_round_trip_is_private_and_never_plaintext(tmp_path: pathlib.Path) -> None:
    store = store_in(tmp_path)
    assert store.load() is None
    store.save(OnvifCredentials("nvr", "a long password"), time.time())
    path = StateLayout(tmp_path).onvif_credentials
    assert path.stat().st_mode & 0o777 == 0o600
    assert b"a long password" not in path.read_bytes() and b"nvr" not in path.read_bytes()
    assert store.load() == OnvifCredentials("nvr", "a long password")
    assert store_in(tmp_path).load() == OnvifCredentials("nvr", "a long password")


def test_holder_exports_no_password_and_erasure_destroys_the_key(tmp_path: pathlib.Path) -> None:
    store = store_in(tmp_path)
    store.save(OnvifCredentials("nvr", "a long password"), time.time())
    holder = OnvifCredentialsHolder(store, FixedClock(1.0))
    exported = holder.export_personal_data()
    assert exported["username"] == "nvr" and "a long password" not in repr(exported)
    blob = StateLayout(tmp_path).onvif_credentials.read_bytes()
    assert holder.erase_personal_data() == 1
    assert store.load() is None
    # A copy of the sealed file made before the erasure no longer opens.
    StateLayout(tmp_path).onvif_credentials.write_bytes(blob)
    StateLayout(tmp_path).onvif_credentials.chmod(0o600)
    assert store_in(tmp_path).load() is None


def test_image_provided_file_must_be_private(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "onvif-user"
    source.write_text("viewer:image-password\n")
    source.chmod(0o644)
    layout = StateLayout(tmp_path / "state")
    store = OnvifCredentialStore(layout, DataKeys(layout), source)
    assert store.load() is None  # readable by others: refused (one error line)
    source.chmod(0o600)
    source.write_text("viewer:image-password2\n")
    assert store.load() == OnvifCredentials("viewer", "image-password2")
    with pytest.raises(PolicyError):
        store.save(OnvifCredentials("x", "yyyyyyyy"), time.time())


@pytest.mark.parametrize("name", ["", "a b", "a:b", "x" * 33, "naïve", 7])
def test_bad_usernames(name: object) -> None:
    with pytest.raises(DecodeError):
        check_username(name)


@pytest.mark.parametrize("password", ["short", "x" * 65, "tab\there", None])
def test_bad_passwords(password: object) -> None:
    with pytest.raises(DecodeError):
        check_password(password)


def test_non_discoverable_device_still_serves_onvif_but_says_nothing(
    tmp_path: pathlib.Path,
) -> None:
    config: AgentConfig = loopback_config(tmp_path, discoverable=False)
    store = store_in(tmp_path)
    store.save(OnvifCredentials("nvr", "a long password"), time.time())
    service = build_service(config, store=store, lan_discovery=False)
    assert service.responder is None and service.announcer is None
    with running(service):
        assert service.onvif is not None and service.onvif.port is not None
        port = service.onvif.port
        ok, _ = post(port, signed(envelope("GetDeviceInformation"), "nvr", "a long password"))
        refused, body = post(port, signed(envelope("GetDeviceInformation"), "nvr", "guess"))
    assert ok == 200
    assert refused == 400 and fault_subcodes(body) == ["ter:NotAuthorized"]


def test_disabled_onvif_or_firmware_xaddrs_serve_nothing(
    tmp_path: pathlib.Path, udp_listener: socket.socket
) -> None:
    def responder_xaddrs(**discovery: object) -> tuple[object, tuple[str, ...]]:
        service = build_service(
            loopback_config(tmp_path / str(len(discovery)), **discovery),
            bind_address="127.0.0.1",
            announce_to=udp_listener.getsockname(),
            join_group=False,
        )
        with running(service):
            assert service.responder is not None and service.responder.responder is not None
            return service.onvif, service.responder.responder.target.xaddrs

    assert responder_xaddrs(onvif_enabled=False) == (None, ())
    firmware = "http://192.168.1.50/onvif/device_service"
    assert responder_xaddrs(onvif_enabled=True, onvif_xaddrs=(firmware,)) == (None, (firmware,))


def test_account_erasure_from_the_cli_removes_the_onvif_user(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drivers.cli import main

    store = store_in(tmp_path)
    store.save(OnvifCredentials("nvr", "a long password"), time.time())
    assert main(["data", "erase", "--account", "--yes", "--state-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert not StateLayout(tmp_path).onvif_credentials.exists()
    assert store_in(tmp_path).load() is None


def test_key_rotation_reseals_the_credentials(tmp_path: pathlib.Path) -> None:
    store = store_in(tmp_path)
    store.save(OnvifCredentials("nvr", "a long password"), time.time())
    holder = OnvifCredentialsHolder(store, FixedClock(2.0))
    keys = store._keys  # rotation runs in the daemon, on its one DataKeys
    keys.rotate("onvif")
    assert holder.reseal_personal_data() == 1
    assert keys.retire_older("onvif") == 1
    assert store_in(tmp_path).load() == OnvifCredentials("nvr", "a long password")
