"""The bit-parallel plate matcher against a plain dynamic programme."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import TooLargeError
from agent.matching.plates import MatchPolicy, PlateEntry, PlateList, PlateWatchlist
from agent.matching.plates_fuzzy import (
    PlateIndex,
    unit_radius,
    weighted_distance,
)


def plain_levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


# Confusable partners plus a few plain characters and one non-ASCII letter.
ALPHABETS = st.sampled_from(["O0I1B8S5Z2", "AB", "O0", "ABCDEFGH12345678", "ÄO0Q"])


@st.composite
def plate_sets(draw: st.DrawFn) -> tuple[list[str], list[str], int]:
    alphabet = draw(ALPHABETS)
    text = st.text(alphabet=alphabet, min_size=1, max_size=draw(st.sampled_from([4, 9, 20])))
    plates = draw(st.lists(text, min_size=1, max_size=40))
    # Queries: stored plates (exact hits), random text, and the empty string.
    queries = draw(st.lists(st.one_of(st.sampled_from(plates), text, st.just("")), max_size=6))
    return plates, queries, draw(st.integers(min_value=0, max_value=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plate_sets())
def test_bit_parallel_matches_plain_dp(case: tuple[list[str], list[str], int]) -> None:
    plates, queries, k = case
    index = PlateIndex(plates)
    for query in queries:
        expected = sorted(
            (i, d) for i, p in enumerate(plates) if (d := plain_levenshtein(query, p)) <= k
        )
        assert sorted(index.within(query, k)) == expected
        assert sorted(index.within(query, k, prefilter=False)) == expected


@settings(max_examples=300, deadline=None)
@given(plate_sets())
def test_qgram_prefilter_never_drops_a_true_match(case: tuple[list[str], list[str], int]) -> None:
    plates, queries, k = case
    index = PlateIndex(plates)
    order = index._order.tolist()
    for query in queries:
        found = index.candidates(query, k)
        if isinstance(found, tuple):
            kept = {order[p] for p in range(*found)}
        else:
            kept = {order[p] for p in found.tolist()}
        for i, plate in enumerate(plates):
            if plain_levenshtein(query, plate) <= k:
                assert i in kept, (query, plate, k)


def test_prefilter_actually_skips_far_plates() -> None:
    plates = ["ABC1234", "XYZ9876", "ABC1243", "QQQ0000"]
    found = PlateIndex(plates).candidates("ABC1234", 1)
    assert not isinstance(found, tuple)
    assert len(found) < len(plates)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="AB01", min_size=55, max_size=64), min_size=1, max_size=5),
    st.text(alphabet="AB01", min_size=50, max_size=70),
)
def test_64_character_plates_use_the_whole_word(plates: list[str], query: str) -> None:
    index = PlateIndex(plates)
    dist = index.distances(query, np.arange(len(plates), dtype=np.int64))
    by_position = [plain_levenshtein(query, index.plates[i]) for i in index._order.tolist()]
    assert dist.tolist() == by_position


def test_plates_longer_than_one_word_are_refused() -> None:
    with pytest.raises(TooLargeError):
        PlateIndex(["A" * 65])


def test_empty_index_matches_nothing() -> None:
    assert PlateIndex([]).within("ABC", 3) == []


def test_equals_rapidfuzz_with_score_cutoff() -> None:
    rapidfuzz = pytest.importorskip("rapidfuzz")
    rng = np.random.default_rng(7)
    alphabet = np.array(list("ABO0I1S5Z28"))
    plates = ["".join(rng.choice(alphabet, size=int(rng.integers(4, 9)))) for _ in range(3000)]
    index = PlateIndex(plates)
    for query in plates[:40]:
        for k in (0, 1, 2, 3):
            theirs = rapidfuzz.process.extract(
                query,
                plates,
                scorer=rapidfuzz.distance.Levenshtein.distance,
                score_cutoff=k,
                limit=None,
            )
            assert sorted(index.within(query, k)) == sorted((r[2], r[1]) for r in theirs)


# --- the weighted, OCR-confusion-aware distance ----------------------------------


def test_confusable_substitution_costs_half() -> None:
    assert weighted_distance("B0S", "8OS") == 1.0
    assert weighted_distance("ABC", "ABD") == 1.0
    assert weighted_distance("Z2", "2Z") == 1.0
    assert weighted_distance("", "AB") == 2.0


def test_unit_radius_bound() -> None:
    assert unit_radius(1.0, 0.5) == 2
    assert unit_radius(1.5, 0.3) == 5
    assert unit_radius(0.0, 0.5) == 0
    with pytest.raises(ValueError):
        unit_radius(1.0, 0.0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="O0I1B8S5Z2AX", min_size=1, max_size=8), min_size=1, max_size=25),
    st.text(alphabet="O0I1B8S5Z2AX", min_size=1, max_size=9),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]),
    st.sampled_from([0.5, 0.3, 1.0]),
)
def test_weighted_matching_equals_brute_force(
    plates: list[str], query: str, max_cost: float, confusable_cost: float
) -> None:
    entries = [PlateEntry(p, PlateList.DENY) for p in dict.fromkeys(plates)]
    policy = MatchPolicy(max_cost=max_cost, confusable_cost=confusable_cost)
    found = {m.entry.plate: m.distance for m in PlateWatchlist(entries, policy).match(query)}
    expected = {}
    for entry in entries:
        cost = weighted_distance(query, entry.plate, confusable_cost=confusable_cost)
        assert cost <= plain_levenshtein(query, entry.plate)
        if cost <= max_cost + 1e-9:
            expected[entry.plate] = cost
    assert found == expected
