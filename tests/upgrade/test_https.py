"""Images over HTTPS on loopback: a private CA via ``upgrade.ca_file``, or refusal."""

from __future__ import annotations

import dataclasses
import pathlib
import ssl
from collections.abc import Callable, Iterator

import pytest

from agent.config import AgentConfig
from agent.errors import VerificationError
from agent.upgrade.machine import State
from drivers.upgrade.service import build_installer

# The lead's PKI helper: a CA plus a 127.0.0.1 server certificate.
from tests.support.pki import make_pki
from tests.upgrade.conftest import random_image
from tests.upgrade.imageserver import ImageServer, serve_images


@pytest.fixture
def tls_server(tmp_path: pathlib.Path) -> Iterator[tuple[ImageServer, pathlib.Path]]:
    ca, cert, key = make_pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve_images(context) as server:
        yield server, ca


def test_https_download_with_private_ca(
    make_config: Callable[..., AgentConfig],
    tls_server: tuple[ImageServer, pathlib.Path],
    sign: Callable[..., bytes],
) -> None:
    server, ca = tls_server
    image = random_image(200_000)
    server.files["/fw.img"] = image
    installer, machine = build_installer(make_config(ca_file=ca))
    assert machine is not None
    record = installer.install(sign(image, 1, server.url("/fw.img")))
    assert record.state == State.AWAITING_REBOOT
    assert (machine.directory / "slot-b.img").read_bytes() == image


def test_https_server_with_unknown_certificate_is_refused(
    make_config: Callable[..., AgentConfig],
    tls_server: tuple[ImageServer, pathlib.Path],
    sign: Callable[..., bytes],
) -> None:
    server, _ = tls_server
    image = random_image(1000)
    server.files["/fw.img"] = image
    installer, _ = build_installer(make_config())
    with pytest.raises(VerificationError, match="certificate"):
        installer.install(sign(image, 1, server.url("/fw.img")))
    assert installer.record().state == State.FAILED


def test_extra_ca_file_adds_to_the_system_store_and_ca_file_replaces_it(
    tmp_path: pathlib.Path,
    make_config: Callable[..., AgentConfig],
    sign: Callable[..., bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CDN on a public CA and a mirror on a private one, with one configuration."""
    (tmp_path / "public").mkdir()
    (tmp_path / "private").mkdir()
    public_ca, public_cert, public_key = make_pki(tmp_path / "public", "public root CA")
    private_ca, private_cert, private_key = make_pki(tmp_path / "private", "private mirror CA")
    # OpenSSL's default verify paths read SSL_CERT_FILE: here it is "the system store".
    monkeypatch.setenv("SSL_CERT_FILE", str(public_ca))
    image = random_image(50_000)
    contexts = []
    for cert, key in ((public_cert, public_key), (private_cert, private_key)):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        contexts.append(context)
    with serve_images(contexts[0]) as cdn, serve_images(contexts[1]) as mirror:
        cdn.files["/fw.img"] = mirror.files["/fw.img"] = image
        additive = make_config(extra_ca_file=private_ca)
        for n, server in enumerate((cdn, mirror)):
            config = dataclasses.replace(additive, state_dir=tmp_path / f"state-{n}")
            installer, _ = build_installer(config)
            record = installer.install(sign(image, 1, server.url("/fw.img")))
            assert record.state == State.AWAITING_REBOOT
        # ca_file replaces the store: the CDN on the "public" CA is no longer trusted.
        replacing = dataclasses.replace(
            make_config(ca_file=private_ca), state_dir=tmp_path / "state-replacing"
        )
        installer, _ = build_installer(replacing)
        with pytest.raises(VerificationError, match="certificate"):
            installer.install(sign(image, 1, cdn.url("/fw.img")))
