"""``edge-agent upgrade keygen|sign|check|apply|status`` end to end (real files, real HTTP)."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from agent.upgrade.envelope import verify_envelope
from agent.upgrade.keys import KeySet, key_from_bytes
from agent.upgrade.machine import State
from agent.upgrade.settings import SignatureAlgorithm
from drivers.cli import main
from tests.upgrade.conftest import HARDWARE_CLASS, VENDOR_DOMAIN, random_image
from tests.upgrade.imageserver import ImageServer


@pytest.fixture
def vendor(tmp_path: pathlib.Path) -> pathlib.Path:
    key = tmp_path / "vendor.pem"
    assert main(["upgrade", "keygen", "--out", str(key)]) == 0
    return key


def _config(tmp_path: pathlib.Path, pub: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[device]\nhardware_class = "{HARDWARE_CLASS}"\n'
        f'[upgrade]\ntrusted_keys = ["{pub}"]\nvendor_domain = "{VENDOR_DOMAIN}"\n'
    )
    return path


def _sign(
    tmp_path: pathlib.Path,
    key: pathlib.Path,
    image: pathlib.Path,
    uri: str,
    sequence: int,
    *extra: str,
) -> pathlib.Path:
    out = tmp_path / f"fw-{sequence}.suit"
    argv = [
        "upgrade",
        "sign",
        "--key",
        str(key),
        "--image",
        str(image),
        "--sequence",
        str(sequence),
        "--hardware-class",
        HARDWARE_CLASS,
        "--vendor-domain",
        VENDOR_DOMAIN,
        "--uri",
        uri,
        "--version",
        f"2.{sequence}",
        "--out",
        str(out),
        *extra,
    ]
    assert main(argv) == 0
    return out


def _check(config: pathlib.Path, tmp_path: pathlib.Path, manifest: pathlib.Path) -> int:
    argv = ["--config", str(config), "--state-dir", str(tmp_path / "state")]
    return main(["upgrade", "check", *argv, "--manifest", str(manifest)])


def test_keygen_writes_a_usable_key_pair(vendor: pathlib.Path, tmp_path: pathlib.Path) -> None:
    pub = vendor.with_suffix(".pub.pem")
    assert vendor.stat().st_mode & 0o777 == 0o600
    image = tmp_path / "img"
    image.write_bytes(b"hello")
    # A device whose policy accepts only the fully specified id needs --alg Ed25519.
    envelope = _sign(tmp_path, vendor, image, "http://x/x", 3, "--alg", "Ed25519").read_bytes()
    keys = KeySet.from_keys([key_from_bytes(pub.read_bytes())], [SignatureAlgorithm.ED25519])
    manifest = verify_envelope(envelope, keys).manifest
    assert (manifest.sequence, manifest.image_size, manifest.software_version) == (3, 5, "2.3")


def test_check_apply_status_with_progress(
    vendor: pathlib.Path,
    tmp_path: pathlib.Path,
    image_server: ImageServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = random_image(300_000)
    image = tmp_path / "fw.img"
    image.write_bytes(data)
    image_server.files["/fw.img"] = data
    envelope = _sign(tmp_path, vendor, image, image_server.url("/fw.img"), 7)
    image_server.files["/fw.suit"] = envelope.read_bytes()
    config = _config(tmp_path, vendor.with_suffix(".pub.pem"))
    common = ["--config", str(config), "--state-dir", str(tmp_path / "state")]
    capsys.readouterr()
    assert main(["upgrade", "check", *common, "--manifest", str(envelope)]) == 0
    assert "sequence 7" in capsys.readouterr().out
    assert main(["upgrade", "apply", *common, "--manifest", image_server.url("/fw.suit")]) == 0
    captured = capsys.readouterr()
    assert "awaiting-reboot" in captured.out
    assert "100% 300000/300000" in captured.err
    assert main(["upgrade", "status", *common]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "awaiting-reboot"
    assert (status["next_slot"], status["trial"]) == ("b", True)


def test_bad_manifest_exits_2_with_one_line(
    vendor: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, vendor.with_suffix(".pub.pem"))
    garbage = tmp_path / "garbage.suit"
    garbage.write_bytes(b"\xd8\x6b\xa0")
    code = _check(config, tmp_path, garbage)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "authentication wrapper" in err


def test_wrong_key_manifest_is_refused_by_check(
    vendor: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pem"
    main(["upgrade", "keygen", "--out", str(other), "--algorithm", "es256"])
    image = tmp_path / "img"
    image.write_bytes(b"x" * 10)
    envelope = _sign(tmp_path, other, image, "http://127.0.0.1/x", 1)
    config = _config(tmp_path, vendor.with_suffix(".pub.pem"))
    code = _check(config, tmp_path, envelope)
    assert code == 2
    assert "not accepted by policy" in capsys.readouterr().err


def _common(tmp_path: pathlib.Path, config: pathlib.Path) -> list[str]:
    return ["--config", str(config), "--state-dir", str(tmp_path / "state")]


def _fail_trial(tmp_path: pathlib.Path, config: pathlib.Path) -> None:
    """Reboot the simulated device into the trial and fail its health check."""
    import dataclasses

    from agent import config as agent_config
    from drivers.upgrade.service import build_installer

    cfg = agent_config.load(config, state_dir=tmp_path / "state")
    cfg = dataclasses.replace(
        cfg, upgrade=dataclasses.replace(cfg.upgrade, health_grace_seconds=0.0)
    )
    installer, machine = build_installer(cfg)
    assert machine is not None
    machine.boot()
    installer.resume()
    record, _ = installer.health(False)
    assert record.state == State.ROLLED_BACK
    machine.boot()


def test_apply_force_retries_a_release_that_failed_here(
    vendor: pathlib.Path,
    tmp_path: pathlib.Path,
    image_server: ImageServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = tmp_path / "fw.img"
    image.write_bytes(random_image(20_000))
    image_server.files["/fw.img"] = image.read_bytes()
    envelope = _sign(tmp_path, vendor, image, image_server.url("/fw.img"), 4)
    config = _config(tmp_path, vendor.with_suffix(".pub.pem"))
    common = _common(tmp_path, config)
    assert main(["upgrade", "apply", *common, "--manifest", str(envelope)]) == 0
    _fail_trial(tmp_path, config)
    capsys.readouterr()
    assert main(["upgrade", "apply", *common, "--manifest", str(envelope)]) == 2
    err = capsys.readouterr().err.strip()
    assert "sequence 4 failed on this device before (health check failed)" in err
    assert "\n" not in err
    assert main(["upgrade", "apply", *common, "--manifest", str(envelope), "--force"]) == 0
    assert "awaiting-reboot: sequence 4" in capsys.readouterr().out


def _usb_release(
    vendor: pathlib.Path, tmp_path: pathlib.Path, uri: str, sequence: int, size: int
) -> tuple[bytes, pathlib.Path, pathlib.Path, list[str]]:
    """(image bytes, image file, signed envelope, common CLI options) of a release on a stick."""
    data = random_image(size)
    image = tmp_path / "usb" / "fw.img"
    image.parent.mkdir(exist_ok=True)
    image.write_bytes(data)
    envelope = _sign(tmp_path, vendor, image, uri, sequence)
    config = _config(tmp_path, vendor.with_suffix(".pub.pem"))
    return data, image, envelope, _common(tmp_path, config)


def test_offline_apply_from_an_envelope_and_an_image_file(
    vendor: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = random_image(300_000)
    image = tmp_path / "usb" / "fw.img"
    image.parent.mkdir()
    image.write_bytes(data)
    # The manifest names the vendor's server; the device never reaches it (nothing listens).
    envelope = _sign(tmp_path, vendor, image, "http://127.0.0.1:9/fw.img", 6)
    config = _config(tmp_path, vendor.with_suffix(".pub.pem"))
    common = _common(tmp_path, config)
    wrong = tmp_path / "usb" / "other.img"
    wrong.write_bytes(random_image(300_000))
    offline = ["upgrade", "apply", *common, "--file", str(envelope)]
    capsys.readouterr()
    assert main([*offline, "--image", str(wrong)]) == 2
    assert "digest" in capsys.readouterr().err
    assert main(["upgrade", "status", *common]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["next_slot"]) == ("failed", "a")
    assert main([*offline, "--image", str(tmp_path / "usb" / "missing.img")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # A wrong file does not bar the release: the right one installs.
    assert main([*offline, "--image", str(image)]) == 0
    assert "awaiting-reboot: sequence 6 in slot b" in capsys.readouterr().out
    slot_b = tmp_path / "state" / "upgrade" / "slots" / "slot-b.img"
    assert slot_b.read_bytes() == data
    # The same policy as online: a release that failed its trial needs --force.
    _fail_trial(tmp_path, config)
    assert main([*offline, "--image", str(image)]) == 2
    assert "failed on this device before" in capsys.readouterr().err


def test_offline_apply_takes_a_manifest_whose_uri_is_no_web_address(
    vendor: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An envelope made for USB sticks only: its URI is never fetched, so any scheme goes."""
    data, image, envelope, common = _usb_release(
        vendor, tmp_path, "file:///media/usb/fw.img", 7, 200_000
    )
    capsys.readouterr()
    # Online the same envelope is refused: the device would have to fetch that URI.
    assert main(["upgrade", "apply", *common, "--manifest", str(envelope)]) == 2
    assert "is not http(s)" in capsys.readouterr().err
    assert main(["upgrade", "apply", *common, "--file", str(envelope), "--image", str(image)]) == 0
    assert "awaiting-reboot: sequence 7 in slot b" in capsys.readouterr().out
    assert (tmp_path / "state" / "upgrade" / "slots" / "slot-b.img").read_bytes() == data


def test_apply_from_the_cli_removes_temp_files_of_killed_writes(
    vendor: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A technician's apply on a device whose daemon is stopped cleans up as the daemon would."""
    data, image, envelope, common = _usb_release(
        vendor, tmp_path, "http://127.0.0.1:9/fw.img", 8, 50_000
    )
    upgrade_dir = tmp_path / "state" / "upgrade"
    upgrade_dir.mkdir(parents=True, exist_ok=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = upgrade_dir / f".state.json.{gone.pid}.1a2b3c4d.tmp"
    stale.write_bytes(b"half a write")
    assert main(["upgrade", "apply", *common, "--file", str(envelope), "--image", str(image)]) == 0
    assert not stale.exists()
    assert (upgrade_dir / "slots" / "slot-b.img").read_bytes() == data


def test_offline_image_needs_its_envelope(
    vendor: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, vendor.with_suffix(".pub.pem"))
    image = tmp_path / "fw.img"
    image.write_bytes(b"x" * 100)
    argv = ["upgrade", "apply", *_common(tmp_path, config), "--image", str(image)]
    assert main(argv) == 2
    assert "--file ENVELOPE" in capsys.readouterr().err
