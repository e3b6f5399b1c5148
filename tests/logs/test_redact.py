from __future__ import annotations

import logging
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.logs.bundle import BundleQuery, build_bundle
from agent.logs.jsonlog import JsonLineFormatter
from agent.logs.redact import Redactor

CASES = [
    ("mail alice@example.com now", "alice@example.com"),
    ("call +44 20 7946 0958", "7946 0958"),
    ("call 555-123-4567", "555-123-4567"),
    ("from 192.168.1.20:8080", "192.168.1.20"),
    ("peer 2001:db8::1 joined", "2001:db8::1"),
    ("link fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a"),
    ("radio aa:bb:cc:dd:ee:0f up", "aa:bb:cc:dd:ee:0f"),
    ('joined ssid="Home Net 5G"', "Home Net 5G"),
    ("psk=correcthorsebattery", "correcthorsebattery"),
    ("serial_number: SN-99812-XQ", "SN-99812-XQ"),
    ("Authorization: Bearer abcd1234efgh5678", "abcd1234efgh5678"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJhbGciOiJIUzI1NiJ9"),
    ("secret 0123456789abcdef0123456789abcdef ok", "0123456789abcdef0123456789abcdef"),
    ("blob dGhpc2lzYXNlY3JldDEyMzQ1Njc4OTAxMjM0NQ== end", "dGhpc2lzYXNlY3JldDEyMzQ1Njc4"),
    ("url-safe Zm9v_YmFy-QmF6X3Rva2Vu_ZW5kMQ", "Zm9v_YmFy-QmF6X3Rva2Vu_ZW5kMQ"),
    ("mqtt://user:hunter2pass@broker.local", "hunter2pass"),
    ('{"password": "s3cr3t!"}', "s3cr3t!"),
    ("api_key=AKIA1234", "AKIA1234"),
]


@pytest.mark.parametrize(("text", "secret"), CASES)
def test_each_shape_is_redacted(text: str, secret: str) -> None:
    assert secret not in Redactor().redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "frame took 12345 ms at 20:07:50, version 1.2.3, 3 faces",
        "certificate expires 2026-11-24",
        'File "/usr/lib/python3/dist-packages/paho/mqtt/client_v2.py", line 1234, in loop',
        "module drivers.vision.pipeline_stage2 restarted",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor().redact(text) == text


def test_known_literals_match_case_and_separators() -> None:
    redactor = Redactor(lambda: ["Alice Smith", "AB123CD"])
    out = redactor.redact("ALICE smith saw plate ab-123 cd and ab123cd")
    assert "alice" not in out.lower()
    assert "123" not in out


def test_known_literals_are_asked_afresh() -> None:
    names: list[str] = []
    redactor = Redactor(lambda: names)
    assert "Zebulon" in redactor.redact("hello Zebulon")
    names.append("Zebulon")
    assert "Zebulon" not in redactor.redact("hello Zebulon")


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"failed for {args[0] if args else msg}")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_record_args_do_not_escape_redaction() -> None:
    formatter = JsonLineFormatter(Redactor(lambda: ["Mallory"]))
    line = formatter.format(_record("user %s from %s", "Mallory", "10.0.0.7", exc=True))
    assert "Mallory" not in line
    assert "10.0.0.7" not in line
    assert "EA-GEN-001" in line


def test_unformattable_args_do_not_leak() -> None:
    formatter = JsonLineFormatter(Redactor())
    line = formatter.format(_record("only one %s", "a@b.example", "extra@c.example"))
    assert "@" not in line


_secret_text = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=6, max_size=24
)
_noise = st.text(max_size=60)


def _bundle_for(message: str, secret: str) -> bytes:
    formatter = JsonLineFormatter(Redactor(lambda: [secret]))
    line = formatter.format(_record("%s", message, exc=True))
    bundle = build_bundle(
        [line], BundleQuery(), Redactor(lambda: [secret]), max_bytes=1 << 20, now=1.0
    )
    return bundle.data


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_secret_text, before=_noise, after=_noise)
def test_planted_known_secret_never_appears_in_a_bundle(
    secret: str, before: str, after: str
) -> None:
    # The secret must not be something the bundle contains anyway (a JSON key, a code).
    baseline = _bundle_for(before + " " + after, secret).decode().lower()
    assume(secret.lower() not in baseline)
    data = _bundle_for(f"{before}{secret}{after}", secret).decode()
    assert secret.lower() not in data.lower()


_octet = st.integers(0, 255)


@settings(max_examples=150)
@given(
    user=st.from_regex(r"[a-z][a-z0-9.]{2,12}", fullmatch=True),
    ip=st.tuples(_octet, _octet, _octet, _octet),
    mac=st.lists(_octet, min_size=6, max_size=6),
    token=st.binary(min_size=16, max_size=40),
    noise=_noise,
)
def test_generated_identifiers_never_survive(
    user: str, ip: tuple[int, int, int, int], mac: list[int], token: bytes, noise: str
) -> None:
    email = f"{user}@mail.example.org"
    ipv4 = ".".join(map(str, ip))
    mac_text = ":".join(f"{b:02x}" for b in mac)
    hex_token = token.hex()
    text = f"{noise} {email} from {ipv4} via {mac_text} token={hex_token} raw {hex_token} {noise}"
    out = Redactor().redact(text)
    assert email not in out
    assert f" {ipv4} " not in out
    assert mac_text not in out
    assert hex_token not in out
