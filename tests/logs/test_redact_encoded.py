"""Redaction sees through encodings: percent, form, JSON, ``\\x``, HTML, hex, base64, nested.

Issue 11 item 7: bundles and the store held URL-encoded names, a URL-encoded
phone number and a passphrase.  Each test plants a secret in one encoded form
(or several, nested) and checks that no form of it survives the redactor, the
JSON-lines formatter and a bundle.
"""

from __future__ import annotations

import json
import logging
import urllib.parse

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.logs.bundle import BundleQuery, build_bundle
from agent.logs.jsonlog import JsonLineFormatter
from agent.logs.redact import MAX_LITERALS, Redactor
from tests.logs.leaks import encoded_forms, leaks

SECRETS = [
    "Zoë Ångström-Smith",  # a name: accents, a space, a hyphen
    'Home "Net" 5G',  # an SSID with quotes
    "c0rrect h0rse+battery/staple%",  # a passphrase full of URL metacharacters
    "AB12 XYZ",  # a plate
    "東京タワー家",  # not Latin at all
]
CONTEXTS = [
    "GET /api/v1/logs/bundle?grep={}&tail=5 HTTP/1.1",
    'request body {{"ssid": "{}", "ok": true}}',
    "nmcli said: Error: {}.",
    "payload={}; retrying",
    "<a href='/x?n={}'>x</a>",
]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("context", CONTEXTS)
def test_every_encoded_form_of_a_known_secret_is_redacted(secret: str, context: str) -> None:
    redactor = Redactor(lambda: [secret])
    for form, encoded in encoded_forms(secret).items():
        out = redactor.redact(context.format(encoded))
        assert leaks(secret, out) == [], (form, out)


@pytest.mark.parametrize("secret", SECRETS)
def test_remembered_secrets_are_redacted_without_any_store(secret: str) -> None:
    redactor = Redactor()
    line = f"provisioning via lan for SSID {secret!r}: wrong_key; query "
    line += urllib.parse.quote(secret)
    assert leaks(secret, redactor.redact(line))
    redactor.remember(secret, None, "")
    assert leaks(secret, redactor.redact(line)) == []


def test_remembered_secrets_are_capped_oldest_first() -> None:
    redactor = Redactor()
    redactor.remember(*(f"literal-{i:05d}" for i in range(MAX_LITERALS + 10)))
    assert "literal-00000" in redactor.redact("x literal-00000 y")  # dropped first
    newest = f"literal-{MAX_LITERALS + 9:05d}"
    assert newest not in redactor.redact(f"x {newest} y")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("call %2B44%2020%207946%200958 now", "7946"),
        ("call +44+20+7946+0958 now", "7946"),
        ("mail alice%40example.com", "alice"),
        ("login?user%3Dmallory%26pass%3Dhunter2", "hunter2"),
        ("ip=10%2E0%2E0%2E7", "10%2E0%2E0%2E7"),
        ('{"phone": "\\u002B44 20 7946 0958"}', "7946"),
    ],
)
def test_encoded_shapes_are_redacted(text: str, secret: str) -> None:
    assert secret not in Redactor().redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "battery at 100% after 12 ms",
        "C++ and a+b, 2024-01-01T10:00:00+01:00",
        'File "/usr/lib/python3/dist-packages/paho/mqtt/client_v2.py", line 1234, in loop',
        "provisioning window open; LAN API listening on port 8470",
        "escaped path C:\\new\\table & co",
    ],
)
def test_ordinary_text_with_escape_characters_is_left_alone(text: str) -> None:
    assert Redactor(lambda: ["Mallory Quinn"]).redact(text) == text


_letter = st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x30FF)
_extra = st.sampled_from(list(" !#$&'()*+,/:;=?@[]%\"\\<>{}~^"))
_secrets = st.lists(_letter | _extra, min_size=6, max_size=24).map("".join).filter(
    lambda s: sum(c.isalnum() for c in s) >= 6
)
_noise = st.text(
    alphabet=st.characters(codec="utf-8", max_codepoint=0x2FFF), max_size=30
)


def _nest(secret: str, layers: list[str]) -> str:
    encoders = {
        "percent": lambda s: urllib.parse.quote(s, safe=""),
        "form": lambda s: urllib.parse.quote_plus(s, safe=""),
        "json": lambda s: json.dumps(s)[1:-1],
        "repr": lambda s: repr(s.encode("utf-8"))[2:-1],
    }
    for layer in layers:
        secret = encoders[layer](secret)
    return secret


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=_secrets,
    form=st.sampled_from(list(encoded_forms("x"))),
    before=_noise,
    after=_noise,
)
def test_any_secret_in_any_form_with_any_neighbours_is_redacted(
    secret: str, form: str, before: str, after: str
) -> None:
    redactor = Redactor(lambda: [secret])
    baseline = redactor.redact(before + " " + after)
    assume(leaks(secret, baseline) == [] and leaks(secret, before + after) == [])
    out = redactor.redact(before + encoded_forms(secret)[form] + after)
    assert leaks(secret, out) == [], out


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=_secrets,
    layers=st.lists(st.sampled_from(["percent", "form", "json", "repr"]), min_size=1, max_size=3),
)
def test_nested_encodings_are_redacted(secret: str, layers: list[str]) -> None:
    out = Redactor(lambda: [secret]).redact(f"value=<{_nest(secret, layers)}> end")
    assert leaks(secret, out) == [], out


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_secrets, form=st.sampled_from(list(encoded_forms("x"))), noise=_noise)
def test_a_bundle_never_carries_a_planted_secret(secret: str, form: str, noise: str) -> None:
    """Through the store's formatter (record args, traceback) and again through a bundle."""
    redactor = Redactor()
    redactor.remember(secret)
    encoded = encoded_forms(secret)[form]
    try:
        raise ValueError(f"attempt for {encoded} failed")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "%s %s", (noise, encoded), sys.exc_info()
        )
    line = JsonLineFormatter(redactor).format(record)
    assume(leaks(secret, noise) == [])
    bundle = build_bundle([line], BundleQuery(), redactor, max_bytes=1 << 20, now=1.0)
    assert leaks(secret, line) == [] and leaks(secret, bundle.data) == []
