"""CDN-proof downloads: redirects, 416, Retry-After, flaky links, kill -9 mid-download.

Against a real nginx (redirect chains and loops, https -> http, 416, 503 with
Retry-After, Range resume) and the stdlib fault server (a link that drops every
N bytes; a trickle for a SIGKILL mid-stream).  In every case the signed digest
decides what gets installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from agent.config import AgentConfig
from agent.upgrade.errors import DeadlineExceededError, RedirectError, ServerBusyError
from agent.upgrade.machine import State
from drivers.upgrade.http import HttpImageSource, parse_retry_after
from drivers.upgrade.installer import DownloadInterruptedError, Installer
from drivers.upgrade.service import build_installer
from tests.support.pki import make_pki
from tests.upgrade.conftest import HARDWARE_CLASS, VENDOR_DOMAIN, random_image
from tests.upgrade.imageserver import Fault, ImageServer
from tests.upgrade.nginx import Nginx, run_nginx

REPO = pathlib.Path(__file__).resolve().parents[2]
Sign = Callable[..., bytes]
MakeConfig = Callable[..., AgentConfig]

LOCATIONS = """
        location = /chain/1 { return 301 /chain/2; }
        location = /chain/2 { return 302 http://127.0.0.1:$server_port/chain/3; }
        location = /chain/3 { return 308 /chain/4; }
        location = /chain/4 { return 307 /images/fw.img; }
        location = /loop/a { return 302 /loop/b; }
        location = /loop/b { return 302 /loop/a; }
        location /norange/ { if ($http_range) { return 416; } }
        location /busy/ {
            if (-f $document_root/busy.flag) {
                add_header Retry-After 2 always;
                return 503;
            }
        }
"""
TLS_LOCATIONS = """
        location = /down.img { return 302 http://127.0.0.1:{port}/images/fw.img; }
        location = /moved.img { return 301 /images/fw.img; }
"""


@pytest.fixture
def nginx(tmp_path: pathlib.Path) -> Iterator[Nginx]:
    with run_nginx(tmp_path / "nginx", LOCATIONS) as server:
        yield server


def _publish(server: Nginx, path: str, image: bytes) -> None:
    target = server.root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(image)


def _installer(config: AgentConfig) -> Installer:
    installer, machine = build_installer(config)
    assert machine is not None
    return installer


def _slot(installer: Installer) -> bytes:
    return b"".join(installer.slots.read("b", 1 << 40))


# --- redirects -------------------------------------------------------------------


def test_redirect_chain_is_followed_to_the_image(
    make_config: MakeConfig, nginx: Nginx, sign: Sign
) -> None:
    image = random_image(300_000)
    _publish(nginx, "/images/fw.img", image)
    installer = _installer(make_config())
    record = installer.install(sign(image, 1, nginx.url("/chain/1")))
    assert record.state == State.AWAITING_REBOOT
    assert _slot(installer)[: len(image)] == image
    hops = [(r.path, r.status) for r in nginx.requests()]
    assert hops == [
        ("/chain/1", 301),
        ("/chain/2", 302),
        ("/chain/3", 308),
        ("/chain/4", 307),
        ("/images/fw.img", 200),
    ]


def test_redirect_chain_longer_than_allowed_is_refused(
    make_config: MakeConfig, nginx: Nginx, sign: Sign
) -> None:
    image = random_image(1000)
    _publish(nginx, "/images/fw.img", image)
    installer = _installer(make_config(max_redirects=2))
    with pytest.raises(RedirectError, match="more than 2 redirects"):
        installer.install(sign(image, 1, nginx.url("/chain/1")))
    record = installer.record()
    assert record.state == State.FAILED
    assert record.failed_sequences == ()  # a server problem does not bar the release
    assert len(nginx.requests()) == 3  # no retries of a redirect that cannot work


def test_redirect_loop_is_refused_without_barring_the_release(
    make_config: MakeConfig, nginx: Nginx, sign: Sign
) -> None:
    image = random_image(1000)
    installer = _installer(make_config())
    with pytest.raises(RedirectError, match="redirect loop"):
        installer.install(sign(image, 1, nginx.url("/loop/a")))
    assert [r.path for r in nginx.requests()] == ["/loop/a", "/loop/b"]
    assert installer.record().failed_sequences == ()
    # Fixed on the server: the same release installs.
    _publish(nginx, "/images/fw.img", image)
    installer.source = HttpImageSource(2.0)
    record = installer.install(sign(image, 1, nginx.url("/images/fw.img")))
    assert record.state == State.AWAITING_REBOOT


def test_https_to_http_redirect_is_refused_unless_allowed(
    make_config: MakeConfig, tmp_path: pathlib.Path, sign: Sign
) -> None:
    (tmp_path / "pki").mkdir()
    ca, cert, key = make_pki(tmp_path / "pki")
    image = random_image(200_000)
    with run_nginx(tmp_path / "plain") as plain:
        _publish(plain, "/images/fw.img", image)
        locations = TLS_LOCATIONS.replace("{port}", str(plain.port))
        with run_nginx(tmp_path / "tls", tls=(cert, key), tls_locations=locations) as secure:
            _publish(secure, "/images/fw.img", image)
            envelope = sign(image, 1, secure.url("/down.img", tls=True))
            installer = _installer(make_config(ca_file=ca))
            with pytest.raises(RedirectError, match="https to http"):
                installer.install(envelope)
            assert installer.record().failed_sequences == ()
            assert plain.requests() == []  # never contacted
            # https -> https is fine.
            moved = sign(image, 1, secure.url("/moved.img", tls=True))
            assert installer.install(moved).state == State.AWAITING_REBOOT
            assert _slot(installer)[: len(image)] == image
            # An operator who accepts plain http behind https says so; the digest decides.
            config = make_config(ca_file=ca, allow_https_to_http_redirects=True)
            allowed = _installer(dataclasses.replace(config, state_dir=tmp_path / "other"))
            assert allowed.install(envelope).state == State.AWAITING_REBOOT
            assert [r.path for r in plain.requests()] == ["/images/fw.img"]


# --- 416, Retry-After, Range resume ------------------------------------------------------


def _interrupt_after(installer: Installer, reads: int) -> None:
    """Stop the download after ``reads`` chunks, as a stopping agent does (state persisted)."""
    calls = iter(range(reads + 1))
    installer.should_stop = lambda: next(calls, reads) >= reads


def test_resume_against_nginx_fetches_only_the_missing_bytes(
    make_config: MakeConfig, nginx: Nginx, sign: Sign
) -> None:
    image = random_image(6_000_000)
    _publish(nginx, "/images/fw.img", image)
    installer = _installer(make_config())
    _interrupt_after(installer, 3)
    with pytest.raises(DownloadInterruptedError, match="stopping"):
        installer.install(sign(image, 1, nginx.url("/images/fw.img")))
    kept = installer.record().received
    assert 0 < kept < len(image)
    installer.should_stop = lambda: False
    record, _ = installer.resume()
    assert record.state == State.AWAITING_REBOOT
    assert _slot(installer)[: len(image)] == image
    first, resumed = nginx.requests()
    assert (first.range, resumed.range, resumed.status) == (None, f"bytes={kept}-", 206)
    assert resumed.sent == len(image) - kept


def test_416_falls_back_to_a_full_get(make_config: MakeConfig, nginx: Nginx, sign: Sign) -> None:
    image = random_image(6_000_000)
    _publish(nginx, "/norange/fw.img", image)
    installer = _installer(make_config())
    _interrupt_after(installer, 3)
    with pytest.raises(DownloadInterruptedError, match="stopping"):
        installer.install(sign(image, 1, nginx.url("/norange/fw.img")))
    kept = installer.record().received
    installer.should_stop = lambda: False
    record, _ = installer.resume()
    assert record.state == State.AWAITING_REBOOT
    assert _slot(installer)[: len(image)] == image
    log = [(r.range, r.status) for r in nginx.requests()]
    assert log == [(None, 200), (f"bytes={kept}-", 416), (None, 200)]


def test_retry_after_is_honoured(make_config: MakeConfig, nginx: Nginx, sign: Sign) -> None:
    image = random_image(100_000)
    _publish(nginx, "/busy/fw.img", image)
    flag = nginx.root / "busy.flag"
    flag.touch()
    installer = _installer(make_config())
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        flag.unlink()  # the server is back after the wait it asked for

    installer.sleep = sleep
    record = installer.install(sign(image, 1, nginx.url("/busy/fw.img")))
    assert record.state == State.AWAITING_REBOOT
    assert waits == [2.0]
    assert [r.status for r in nginx.requests()] == [503, 200]


def test_retry_after_beyond_the_deadline_fails_at_once(
    make_config: MakeConfig, image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(1000)
    image_server.files["/fw.img"] = image
    image_server.faults["/fw.img"] = Fault(busy=100, retry_after="7200")
    installer = _installer(make_config(download_deadline_seconds=60))
    installer.sleep = lambda seconds: pytest.fail(f"slept {seconds} s past the deadline")
    with pytest.raises(DeadlineExceededError, match="retry in 7200 s"):
        installer.install(sign(image, 1, image_server.url("/fw.img")))
    assert installer.record().state == State.FAILED
    assert installer.record().failed_sequences == ()
    assert len(image_server.requests) == 1


def test_busy_without_retry_after_backs_off_and_http_dates_are_understood(
    make_config: MakeConfig, image_server: ImageServer, sign: Sign
) -> None:
    image = random_image(50_000)
    image_server.files["/fw.img"] = image
    image_server.faults["/fw.img"] = Fault(busy=2, busy_status=429)
    installer = _installer(make_config())
    waits: list[float] = []
    installer.sleep = waits.append
    assert installer.install(sign(image, 1, image_server.url("/fw.img"))).state == (
        State.AWAITING_REBOOT
    )
    assert len(waits) == 2 and all(0 < w <= 5 for w in waits)
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:20 GMT", now) == pytest.approx(120)
    assert parse_retry_after("Tue, 14 Nov 2023 20:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    with pytest.raises(ServerBusyError) as info:
        image_server.faults["/x"] = Fault(busy=1, retry_after="3")
        image_server.files["/x"] = b"x"
        HttpImageSource(2.0).open(image_server.url("/x"), 0)
    assert info.value.retry_after == 3.0


# --- flaky links and kill -9 ----------------------------------------------------------


def test_link_dropping_every_n_bytes_installs_an_image_of_ten_n(
    make_config: MakeConfig, image_server: ImageServer, sign: Sign
) -> None:
    n = 64 * 1024
    image = random_image(10 * n)
    image_server.files["/fw.img"] = image
    image_server.faults["/fw.img"] = Fault(cut_after=n, cuts=10**6)
    installer = _installer(make_config(download_attempts=2))
    installer.sleep = lambda seconds: None
    record = installer.install(sign(image, 1, image_server.url("/fw.img")))
    assert record.state == State.AWAITING_REBOOT
    assert _slot(installer)[: len(image)] == image
    ranges = [r for p, r in image_server.requests if p == "/fw.img"]
    assert ranges == [None, *(f"bytes={k * n}-" for k in range(1, 10))]
    assert image_server.sent["/fw.img"] == len(image)  # nothing fetched twice


def _state(state_dir: pathlib.Path) -> dict[str, object]:
    try:
        data = json.loads((state_dir / "upgrade" / "state.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    assert isinstance(data, dict)
    return data


def test_kill_9_mid_download_resumes_without_refetching_verified_bytes(
    tmp_path: pathlib.Path,
    make_config: MakeConfig,
    image_server: ImageServer,
    sign: Sign,
) -> None:
    make_config()  # writes vendor.pub.pem
    image = random_image(3 * 1024 * 1024)
    image_server.files["/fw.img"] = image
    image_server.faults["/fw.img"] = Fault(trickle_delay=0.002)  # ~0.5 MB/s
    envelope = tmp_path / "fw.suit"
    envelope.write_bytes(sign(image, 1, image_server.url("/fw.img")))
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nhardware_class = "{HARDWARE_CLASS}"\n'
        f'[upgrade]\ntrusted_keys = ["{tmp_path / "vendor.pub.pem"}"]\n'
        f'vendor_domain = "{VENDOR_DOMAIN}"\nio_timeout_seconds = 5.0\n'
    )
    state_dir = tmp_path / "state"
    argv = [sys.executable, "-m", "tests.upgrade.killchild", str(config), str(state_dir)]
    child = subprocess.Popen(
        [*argv, "-", "install", str(envelope)],  # "-": never parks; killed mid-stream
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None:
            received = _state(state_dir).get("received", 0)
            assert isinstance(received, int)
            if received >= 600_000:
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
        assert child.stdin is not None and child.stderr is not None
        child.stdin.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, "the download finished before the kill"
    kept = _state(state_dir)["received"]
    assert isinstance(kept, int) and 600_000 <= kept < len(image)
    served_before = image_server.sent["/fw.img"]
    assert served_before > kept  # the child had more in flight than it had verified

    image_server.faults["/fw.img"] = Fault()  # full speed after the restart
    installer = _installer(make_config())
    record, _ = installer.resume()
    assert record.state == State.AWAITING_REBOOT
    assert _slot(installer)[: len(image)] == image
    assert image_server.requests[-1] == ("/fw.img", f"bytes={kept}-")
    assert image_server.sent["/fw.img"] - served_before == len(image) - kept
