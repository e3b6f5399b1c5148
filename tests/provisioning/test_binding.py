"""Verification code, label payload, binding QR payload and the token ledger."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import pathlib
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError, PolicyError, TooLargeError, VerificationError
from agent.provisioning import binding
from agent.provisioning.binding import Binding
from drivers.provisioning.store import (
    FileTokenLedger,
    load_or_create_binding,
    provisioning_dir,
    write_private,
)

NOW = 1_800_000_000.0
TOKEN = "tok_" + "A1b2" * 6


@pytest.mark.parametrize(
    "code",
    [
        "00000000",
        "11111111",
        "12345678",
        "87654321",
        "78901234",
        "12121212",
        "12341234",
        "11112222",
    ],
)
def test_trivial_codes_rejected(code: str) -> None:
    assert binding.is_trivial_code(code)


@pytest.mark.parametrize("code", ["12345", "abcdefgh", "1234567890"])
def test_malformed_codes_count_as_trivial(code: str) -> None:
    assert binding.is_trivial_code(code)


def test_non_trivial_code_is_accepted() -> None:
    assert not binding.is_trivial_code("40719382")


def test_generator_redraws_trivial_codes() -> None:
    # the first eight draws spell 11111111, the next eight a usable code
    digits = itertools.chain([1] * 8, [4, 0, 7, 1, 9, 3, 8, 2])
    assert binding.generate_verification_code(lambda _: next(digits)) == "40719382"


def test_generated_codes_are_never_trivial() -> None:
    codes = {binding.generate_verification_code() for _ in range(200)}
    assert all(len(c) == 8 and c.isdigit() and not binding.is_trivial_code(c) for c in codes)
    assert len(codes) > 190


def test_binding_is_created_once_private_and_stable(tmp_path: pathlib.Path) -> None:
    first = load_or_create_binding(tmp_path, "EA-1")
    path = provisioning_dir(tmp_path) / "binding.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_binding(tmp_path, "EA-1") == first
    assert first.verification_code not in repr(first)


def test_corrupt_binding_file_is_reported(tmp_path: pathlib.Path) -> None:
    write_private(provisioning_dir(tmp_path) / "binding.json", b'{"verification_code": "11111111"}')
    with pytest.raises(DecodeError):
        load_or_create_binding(tmp_path, "EA-1")


def test_write_private_leaves_no_temp_files(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "p" / "f.json"
    write_private(target, b"one")
    write_private(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_label_payload_round_trip() -> None:
    original = Binding("EA-2026-0042", "40719382")
    text = binding.label_payload(original)
    assert text.startswith("edge-agent:provision?")
    assert binding.parse_label(text) == original


@pytest.mark.parametrize(
    "text",
    [
        "edge-agent:provision?v=2&sn=X&code=40719382",
        "edge-agent:provision?v=1&sn=X&code=4071",
        "other:provision?v=1&sn=X&code=40719382",
        "edge-agent:provision?v=1&code=40719382",
    ],
)
def test_bad_labels_are_rejected(text: str) -> None:
    with pytest.raises(DecodeError):
        binding.parse_label(text)


DEVICE = Binding("EA-2026-0042", "40719382")
OWNER_KEY = bytes(range(32))


def payload(**overrides: object) -> str:
    """A valid version-2 binding QR for DEVICE; an override of None drops the key."""
    text = binding.build_binding_payload(DEVICE, "acme-site-7", TOKEN, int(NOW) + 600, OWNER_KEY)
    body: dict[str, object] = json.loads(text)
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not None})


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_binding_payload_parses_and_its_proof_verifies() -> None:
    request = binding.parse_binding_payload(payload(), NOW)
    assert (request.account, request.token, request.expires_at, request.owner_key) == (
        "acme-site-7",
        TOKEN,
        int(NOW) + 600,
        OWNER_KEY,
    )
    binding.verify_binding_proof(request, DEVICE)
    assert TOKEN not in repr(request)
    assert b64url(request.proof) not in repr(request)


def test_version_1_binding_qr_is_refused_with_a_reason() -> None:
    legacy = json.dumps({"v": 1, "account": "acme-site-7", "token": TOKEN, "exp": int(NOW) + 60})
    with pytest.raises(PolicyError, match="lacks the owner's key; update the app"):
        binding.parse_binding_payload(legacy, NOW)


@pytest.mark.parametrize(
    "device",
    [
        Binding(DEVICE.serial_number, "40719383"),  # someone without the sticker's code
        Binding("EA-2026-0043", DEVICE.verification_code),  # a QR made for another device
    ],
)
def test_proof_made_without_this_devices_code_is_refused(device: Binding) -> None:
    text = binding.build_binding_payload(device, "acme-site-7", TOKEN, int(NOW) + 600, OWNER_KEY)
    request = binding.parse_binding_payload(text, NOW)
    with pytest.raises(VerificationError):
        binding.verify_binding_proof(request, DEVICE)


@pytest.mark.parametrize(
    "field",
    [
        {"key": b64url(bytes(32))},  # the attacker's key under the owner's proof
        {"account": "mallory"},
        {"token": "tok_" + "Z9y8" * 6},
        {"exp": int(NOW) + 6000},
    ],
)
def test_any_field_changed_after_the_proof_is_refused(field: dict[str, object]) -> None:
    request = binding.parse_binding_payload(payload(**field), NOW)
    with pytest.raises(VerificationError):
        binding.verify_binding_proof(request, DEVICE)


def test_expired_binding_payload_is_refused() -> None:
    with pytest.raises(PolicyError, match="expired"):
        binding.parse_binding_payload(payload(), NOW + 601)


def test_binding_payload_deep_nesting_is_rejected() -> None:
    with pytest.raises(TooLargeError, match="nested"):
        binding.parse_binding_payload("[" * 500 + "]" * 500, NOW)


def test_binding_payload_deep_nesting_inside_a_field_is_rejected() -> None:
    with pytest.raises(TooLargeError, match="nested"):
        binding.parse_binding_payload(payload(account={"a": {"b": {"c": {"d": 1}}}}), NOW)


def test_binding_payload_huge_is_rejected() -> None:
    with pytest.raises(TooLargeError):
        binding.parse_binding_payload(payload(account="a" * 5000), NOW)


_KEY = b64url(OWNER_KEY)


@pytest.mark.parametrize(
    "text",
    [
        payload(exp="soon"),
        payload(exp=True),
        payload(exp=2**64),
        payload(exp=-5),
        payload(v=3),
        payload(v=True),
        payload(token="short"),
        payload(account="bad account!"),
        payload(extra=1),
        payload(token=None),
        payload(pop=None),
        payload(key=_KEY + "="),  # padded
        payload(key=_KEY[:-1]),  # 31.x bytes
        payload(key=_KEY[:-1] + "B"),  # same bytes, non-zero padding bits
        payload(key=_KEY[:-2] + "+/"),  # the other base64 alphabet
        payload(key=OWNER_KEY.hex()),
        payload(key=None, v=1),
        "[1, 2]",
        "{not json",
        '"just a string"',
    ],
)
def test_malformed_binding_payloads_are_rejected(text: str) -> None:
    with pytest.raises(DecodeError):
        binding.parse_binding_payload(text, NOW)


def _expected(text: str) -> None:
    """Parsing hostile text may refuse it, but only as bad data of the three kinds."""
    with contextlib.suppress(DecodeError, PolicyError, TooLargeError):
        binding.parse_binding_payload(text, NOW)


@given(st.text(max_size=1200))
def test_binding_payload_parser_raises_only_bad_data(text: str) -> None:
    _expected(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = st.sampled_from(["v", "account", "token", "exp", "key", "pop", "x"])


@given(st.dictionaries(_FIELDS, _JSON, max_size=7))
def test_binding_parser_on_hostile_objects_raises_only_bad_data(body: dict[str, object]) -> None:
    _expected(json.dumps(body))


@given(st.integers(0, 10_000), st.characters())
def test_binding_parser_on_mutated_valid_payloads_raises_only_bad_data(
    position: int, char: str
) -> None:
    text = payload()
    at = position % len(text)
    mutated = text[:at] + char + text[at + 1 :]
    try:
        request = binding.parse_binding_payload(mutated, NOW)
    except (DecodeError, PolicyError, TooLargeError):
        return
    # What still parses either is the original or fails its proof.
    if mutated != text:
        with contextlib.suppress(VerificationError):
            binding.verify_binding_proof(request, DEVICE)
            assert request == binding.parse_binding_payload(text, NOW)


def test_reused_token_is_refused_even_after_restart(tmp_path: pathlib.Path) -> None:
    request = binding.parse_binding_payload(payload(), NOW)
    binding.redeem(request, FileTokenLedger(tmp_path), NOW)
    with pytest.raises(PolicyError, match="already used"):
        binding.redeem(request, FileTokenLedger(tmp_path), NOW + 1)
    ledger_file = provisioning_dir(tmp_path) / "used_tokens.json"
    assert stat.S_IMODE(ledger_file.stat().st_mode) == 0o600
    assert TOKEN not in ledger_file.read_text()


def test_ledger_prunes_expired_tokens(tmp_path: pathlib.Path) -> None:
    ledger = FileTokenLedger(tmp_path)
    assert ledger.claim("a" * 64, int(NOW) + 10, NOW)
    assert ledger.claim("b" * 64, int(NOW) + 1000, NOW + 20)
    stored = json.loads((provisioning_dir(tmp_path) / "used_tokens.json").read_text())
    assert set(stored["tokens"]) == {"b" * 64}


@pytest.mark.parametrize(
    "code",
    [
        "\u00b9\u00b2\u00b3\u2074\u2075\u2077\u2078\u2079",
        "\u0664\u0660\u0667\u0661\u0669\u0663\u0668\u0662",
    ],
)
def test_verification_code_non_ascii_digits_is_rejected(code: str) -> None:
    # str.isdigit() accepts superscripts (int() then raises ValueError) and other scripts.
    assert binding.is_trivial_code(code)
    with pytest.raises(DecodeError):
        binding.check_verification_code(code)
    with pytest.raises(DecodeError):
        binding.parse_label(f"{binding.LABEL_SCHEME}?v=1&sn=EA-1&code={code}")
