"""Hostile plate texts, formats, command arguments and recogniser outputs."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import BadDataError, DecodeError, TooLargeError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.plates import (
    MatchPolicy,
    PlateList,
    compile_format,
    ctc_greedy_decode,
    make_entry,
    normalise_plate,
)
from agent.matching.plates_service import PlateRecognition
from agent.matching.plates_store import PlateStore
from agent.purposes import Purpose


def test_normalise_strips_spaces_and_dashes_and_uppercases() -> None:
    assert normalise_plate(" ab-12\u2013cd ") == "AB12CD"
    assert normalise_plate("m\u00fc 123") == "M\u00dc123"


def test_fullwidth_unicode_is_folded_to_ascii() -> None:
    assert normalise_plate("\uff21\uff22\uff11") == "AB1"


def test_very_long_text_is_rejected_before_processing() -> None:
    with pytest.raises(TooLargeError):
        normalise_plate("A" * 1_000_000)


def test_long_plate_after_normalising_is_rejected() -> None:
    with pytest.raises(TooLargeError):
        normalise_plate("A" * 17)


@pytest.mark.parametrize("text", ["", "   ", "- -"])
def test_empty_plate_is_rejected(text: str) -> None:
    with pytest.raises(DecodeError, match="empty"):
        normalise_plate(text)


@pytest.mark.parametrize("text", ["AB\x00C", "AB\x1b[2JC", "AB\u200bC", "AB\u202eC", "A\x7fB"])
def test_control_and_format_characters_are_rejected(text: str) -> None:
    with pytest.raises(DecodeError, match="control"):
        normalise_plate(text)


@pytest.mark.parametrize("text", ["AB'; DROP TABLE plates;--", "AB/12", "\U0001f697AB1"])
def test_punctuation_and_emoji_are_rejected(text: str) -> None:
    with pytest.raises(DecodeError, match="letters and digits"):
        normalise_plate(text)


def test_non_string_text_is_rejected() -> None:
    with pytest.raises(DecodeError):
        normalise_plate(b"AB123")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_normalise_never_raises_anything_but_bad_data(text: str) -> None:
    try:
        plate = normalise_plate(text)
    except BadDataError:
        return
    assert 1 <= len(plate) <= 16
    assert all(c.isalnum() for c in plate)


# --- formats -----------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["(A+)+$", "(A|AA)*B", "([A-Z]+)*", "(?:A*)*"])
def test_catastrophic_format_is_rejected(pattern: str) -> None:
    with pytest.raises(DecodeError, match="groups are not supported"):
        compile_format(pattern)


def test_many_variable_repeats_are_rejected() -> None:
    with pytest.raises(DecodeError, match="variable-length repeats"):
        compile_format("A*A*A*A*A*A*B")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("[A-", "unterminated"),
        ("[Z-A]", "invalid regular expression"),
        ("A{3,1}", "repeat bounds"),
        ("A{99}", "repeat bounds"),
        ("A**", "stacked"),
        ("\\1", "escape"),
        ("A||B", "empty alternative"),
        ("", "empty"),
        ("A(?=B)", "groups"),
    ],
)
def test_invalid_format_gives_a_clear_error(pattern: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        compile_format(pattern)


def test_overlong_format_is_rejected() -> None:
    with pytest.raises(TooLargeError):
        compile_format("[A-Z]" * 100)


def test_four_variable_repeats_are_accepted_and_match_correctly() -> None:
    worst = compile_format("A*A*A*A*B|.*.*.*.*C")
    assert worst.fullmatch("A" * 16) is None
    assert worst.fullmatch("AAAB") is not None
    assert worst.fullmatch("XYZC") is not None


def test_plate_must_fit_its_format() -> None:
    assert make_entry("ab 123", plate_format="^[A-Z]{2}[0-9]{3}$").plate == "AB123"
    with pytest.raises(DecodeError, match="does not fit"):
        make_entry("123AB", plate_format="[A-Z]{2}\\d{3}")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_formats_are_accepted_or_refused_cleanly(pattern: str) -> None:
    try:
        compiled = compile_format(pattern)
    except BadDataError:
        return
    compiled.fullmatch("AB1234567890ABCD")


def test_unknown_list_and_bad_labels_are_rejected() -> None:
    with pytest.raises(DecodeError, match="allow"):
        make_entry("AB1", plate_list="grey")
    with pytest.raises(TooLargeError):
        make_entry("AB1", label="x" * 65)
    with pytest.raises(DecodeError):
        make_entry("AB1", label="evil\nlabel")


# --- the plate.observe command ------------------------------------------------------


@pytest.fixture
def recognition(tmp_path: pathlib.Path) -> PlateRecognition:
    core = PlateRecognition(
        PlateStore(tmp_path / "plates.sqlite", keys=DataKeys(StateLayout(tmp_path))),
        MatchPolicy(),
        lambda p: True,
    )
    core.enrol("AB123", plate_list=PlateList.DENY, now=1.0)
    return core


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"text": None},
        {"text": 12345},
        {"text": ["AB123"]},
        {"text": "AB123", "camera": 7},
        {"text": "AB123", "camera": "x" * 65},
        {"text": "AB123", "camera": "gate\x00"},
        {"text": "AB123", "extra": 1},
        {"text": "A" * 100_000},
    ],
)
def test_observe_command_rejects_hostile_arguments(
    recognition: PlateRecognition, args: dict[str, object]
) -> None:
    with pytest.raises(BadDataError):
        recognition.handle_observe(args, now=2.0)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["text", "camera", "other"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=100), st.binary(max_size=10)),
    )
)
def test_observe_command_never_crashes(args: dict[str, object]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        state = pathlib.Path(tmp)
        store = PlateStore(state / "p.sqlite", keys=DataKeys(StateLayout(state)))
        core = PlateRecognition(store, MatchPolicy(), lambda p: True)
        core.enrol("AB123", now=1.0)
        try:
            reply = core.handle_observe(args, now=2.0)
        except BadDataError:
            return
        # Listed or not, the reply is the same: no watch-list oracle.
        assert reply.result == {"accepted": True}
        assert all(e.type == "plate.match" for e in reply.events)


# --- recogniser output ----------------------------------------------------------------


def _one_hot(labels: list[int], classes: int) -> np.ndarray:
    logits = np.full((len(labels), classes), -5.0)
    logits[np.arange(len(labels)), labels] = 5.0
    return logits


def test_ctc_collapses_repeats_and_drops_blanks() -> None:
    charset = "0123456789ABC"
    # blank=0; "A" = class 11, "1" = class 2
    reading = ctc_greedy_decode(_one_hot([11, 11, 0, 11, 2, 2, 0], 14), charset)
    assert reading.text == "AA1"
    assert 0.9 < reading.confidence <= 1.0
    last = ctc_greedy_decode(_one_hot([13, 10, 10, 13, 0], 14), charset, blank_last=True)
    assert last.text == "A0"
    transposed = ctc_greedy_decode(_one_hot([11, 0, 2], 14).T[None, :, :], charset)
    assert transposed.text == "A1"


@pytest.mark.parametrize(
    "logits", [np.zeros((4, 5)), np.zeros((2, 3, 14)), np.array([[math.nan] * 14])]
)
def test_ctc_rejects_wrong_shapes_and_nan(logits: np.ndarray) -> None:
    with pytest.raises(DecodeError):
        ctc_greedy_decode(logits, "0123456789ABC")


def test_plate_store_rejects_more_entries_than_configured(tmp_path: pathlib.Path) -> None:
    store = PlateStore(tmp_path / "p.sqlite", keys=DataKeys(StateLayout(tmp_path)), max_entries=2)
    core = PlateRecognition(store, MatchPolicy(), lambda p: p is Purpose.PLATE_RECOGNITION)
    core.enrol("AB1", now=1.0)
    core.enrol("AB2", now=1.0)
    core.enrol("AB2", label="again", now=1.0)  # replacing is not growing
    with pytest.raises(BadDataError, match="full"):
        core.enrol("AB3", now=1.0)
