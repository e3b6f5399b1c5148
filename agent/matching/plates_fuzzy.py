"""Fuzzy licence-plate lookup: bit-parallel Levenshtein over a whole watch-list.

Two stages, both exact:

1. **Unit-cost Levenshtein <= k** for every stored plate at once.  Plates are
   kept in length buckets of ``uint8`` codes and, from those, one ``uint64``
   match-mask word per plate and alphabet symbol (``peq``).  Myers/Hyyrö's
   bit-vector recurrence then runs with the *plate* as the pattern (one word per
   plate, so plates are at most 64 characters) and the query as the text: one
   pass of numpy bitwise operations over the bucket's whole column per query
   character.  The final distance is read off the last column's vertical
   deltas: ``d = n + popcount(VP) - popcount(VN)`` over the plate's ``m`` bits.
2. A **lossless q-gram prefilter** (count lemma, Jokinen & Ukkonen): two strings
   ``a, b`` with ``ed(a, b) <= k`` share at least ``max(|a|, |b|) - q + 1 - k*q``
   of their q-grams, counted as a multiset.  The inverted index is keyed by
   ``(q-gram, occurrence rank)`` so that the number of postings hit equals the
   multiset intersection size.  A plate is skipped only when its count is below
   that bound; when the bound is <= 0 the bucket is scanned in full.

The OCR-confusion-aware weighted distance (:func:`weighted_distance`) is a
small DP run only on survivors of stage 1; see :func:`unit_radius` for why
that is exact.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from agent.errors import TooLargeError

MAX_PATTERN_CHARS = 64
# Code 0 stands for "a character no stored plate contains": its peq row is 0.
UNKNOWN_CODE = 0
MAX_ALPHABET = 255
_RANK_BASE = MAX_PATTERN_CHARS + 1

DEFAULT_CONFUSABLE_PAIRS: tuple[tuple[str, str], ...] = (
    ("O", "0"),
    ("I", "1"),
    ("B", "8"),
    ("S", "5"),
    ("Z", "2"),
)

IntArray = npt.NDArray[np.int64]
WordArray = npt.NDArray[np.uint64]


@dataclasses.dataclass(frozen=True)
class _GramIndex:
    """CSR inverted index: ``keys[i]`` -> ``postings[starts[i]:starts[i+1]]``."""

    keys: IntArray
    starts: IntArray
    postings: IntArray


def _gram_ids(codes: npt.NDArray[np.int64], q: int, alphabet_size: int) -> IntArray:
    """Per row, the id of each q-gram (columns 0..L-q) of a [n, L] code matrix."""
    width = codes.shape[1] - q + 1
    ids = codes[:, :width].copy()
    for offset in range(1, q):
        ids = ids * alphabet_size + codes[:, offset : offset + width]
    return ids


def _ranked_keys(ids: IntArray) -> IntArray:
    """``gram_id * RANK_BASE + rank`` where rank counts earlier equal grams in the row."""
    width = ids.shape[1]
    earlier = np.tril(np.ones((width, width), dtype=bool), k=-1)
    same = ids[:, :, None] == ids[:, None, :]
    ranks: IntArray = (same & earlier[None, :, :]).sum(axis=2, dtype=np.int64) + 1
    return ids * _RANK_BASE + ranks


def _query_keys(codes: Sequence[int], q: int, alphabet_size: int) -> list[int]:
    seen: dict[int, int] = {}
    keys = []
    for start in range(len(codes) - q + 1):
        gram = 0
        for code in codes[start : start + q]:
            gram = gram * alphabet_size + code
        seen[gram] = seen.get(gram, 0) + 1
        keys.append(gram * _RANK_BASE + seen[gram])
    return keys


class PlateIndex:
    """An immutable index over normalised plate strings (see module docstring).

    ``plates[i]`` keeps its index ``i`` in every result.  Rebuild the index when
    the watch-list changes; building 100k plates takes well under a second.
    """

    def __init__(self, plates: Sequence[str]) -> None:
        self.plates = tuple(plates)
        alphabet: dict[str, int] = {}
        for plate in self.plates:
            if not plate or len(plate) > MAX_PATTERN_CHARS:
                raise TooLargeError(f"plates must have 1..{MAX_PATTERN_CHARS} characters")
            for char in plate:
                if char not in alphabet:
                    if len(alphabet) >= MAX_ALPHABET - 1:
                        raise TooLargeError("more than 254 distinct plate characters")
                    alphabet[char] = len(alphabet) + 1
        self.alphabet: Mapping[str, int] = alphabet
        self.alphabet_size = len(alphabet) + 1
        lengths = np.fromiter((len(p) for p in self.plates), dtype=np.int64, count=len(plates))
        # Stable so that postings of one key come out in ascending position order.
        self._order: IntArray = np.argsort(lengths, kind="stable").astype(np.int64)
        self._lengths: IntArray = lengths[self._order]
        self.buckets: dict[int, npt.NDArray[np.uint8]] = {}
        self._bucket_range: dict[int, tuple[int, int]] = {}
        size = len(self.plates)
        self._peq: WordArray = np.zeros((self.alphabet_size, size), dtype=np.uint64)
        self._masks: WordArray = np.zeros(size, dtype=np.uint64)
        gram_keys: dict[int, list[IntArray]] = {1: [], 2: []}
        gram_positions: dict[int, list[IntArray]] = {1: [], 2: []}
        for length in np.unique(self._lengths).tolist():
            start = int(np.searchsorted(self._lengths, length, side="left"))
            end = int(np.searchsorted(self._lengths, length, side="right"))
            bucket = np.array(
                [[alphabet[c] for c in self.plates[i]] for i in self._order[start:end].tolist()],
                dtype=np.uint8,
            ).reshape(end - start, length)
            self.buckets[length] = bucket
            self._bucket_range[length] = (start, end)
            self._fill_peq(bucket, start)
            self._masks[start:end] = np.uint64((1 << length) - 1)
            wide = bucket.astype(np.int64)
            positions = np.arange(start, end, dtype=np.int64)
            for q in (1, 2):
                if length >= q:
                    keys = _ranked_keys(_gram_ids(wide, q, self.alphabet_size))
                    gram_keys[q].append(keys.ravel())
                    gram_positions[q].append(np.repeat(positions, keys.shape[1]))
        self._grams = {q: self._build_grams(gram_keys[q], gram_positions[q]) for q in (1, 2)}

    def _fill_peq(self, bucket: npt.NDArray[np.uint8], start: int) -> None:
        rows = np.arange(bucket.shape[0], dtype=np.int64) + start
        for column in range(bucket.shape[1]):
            bit = np.uint64(1 << column)
            np.bitwise_or.at(self._peq, (bucket[:, column].astype(np.int64), rows), bit)

    @staticmethod
    def _build_grams(keys: list[IntArray], positions: list[IntArray]) -> _GramIndex:
        if not keys:
            empty = np.zeros(0, dtype=np.int64)
            return _GramIndex(empty, np.zeros(1, dtype=np.int64), empty)
        all_keys = np.concatenate(keys)
        all_positions = np.concatenate(positions)
        order = np.argsort(all_keys, kind="stable")
        sorted_keys = all_keys[order]
        unique, first = np.unique(sorted_keys, return_index=True)
        starts = np.append(first, len(sorted_keys)).astype(np.int64)
        return _GramIndex(unique.astype(np.int64), starts, all_positions[order])

    def __len__(self) -> int:
        return len(self.plates)

    def encode(self, text: str) -> list[int]:
        return [self.alphabet.get(c, UNKNOWN_CODE) for c in text]

    # --- stage 2: q-gram prefilter --------------------------------------------

    def _lengths_in_reach(self, query_len: int, k: int) -> list[int]:
        return [length for length in self._bucket_range if abs(length - query_len) <= k]

    @staticmethod
    def shared_gram_bound(plate_len: int, query_len: int, q: int, k: int) -> int:
        """The count lemma: q-grams shared by any two strings within distance ``k``."""
        return max(plate_len, query_len) - q + 1 - k * q

    def _choose_q(self, lengths: Iterable[int], query_len: int, k: int) -> int | None:
        lengths = list(lengths)
        for q, useful in ((2, 2), (1, 1)):
            bounds = [self.shared_gram_bound(n, query_len, q, k) for n in lengths]
            if bounds and min(bounds) >= useful:
                return q
        return None

    def candidates(
        self, query: str, k: int, *, prefilter: bool = True
    ) -> IntArray | tuple[int, int]:
        """Sorted positions (in length order) that may lie within distance ``k``.

        Returns a ``(start, end)`` range when nothing can be skipped, so the
        caller scans contiguous bucket slices without a gather.  Only the length
        filter (``| |a| - |b| | <= k``) applies when ``prefilter`` is False.
        """
        codes = self.encode(query)
        lengths = self._lengths_in_reach(len(codes), k)
        if not lengths:
            return np.zeros(0, dtype=np.int64)
        q = self._choose_q(lengths, len(codes), k) if prefilter else None
        if q is None:
            ranges = [self._bucket_range[n] for n in lengths]
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
            if sum(e - s for s, e in ranges) == high - low:
                return (low, high)
            return np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in sorted(ranges)])
        grams = self._grams[q]
        wanted = np.asarray(_query_keys(codes, q, self.alphabet_size), dtype=np.int64)
        slots = np.searchsorted(grams.keys, wanted)
        inside = slots < len(grams.keys)
        slots, wanted = slots[inside], wanted[inside]
        starts = grams.starts
        hits = [
            grams.postings[starts[s] : starts[s + 1]]
            for s in slots[grams.keys[slots] == wanted].tolist()
        ]
        if not hits:
            return np.zeros(0, dtype=np.int64)
        counts = np.bincount(np.concatenate(hits), minlength=len(self.plates))
        found = []
        for length in sorted(lengths):
            start, end = self._bucket_range[length]
            bound = self.shared_gram_bound(length, len(codes), q, k)
            found.append(np.flatnonzero(counts[start:end] >= bound) + start)
        return np.concatenate(found)

    # --- stage 1: bit-parallel Levenshtein ------------------------------------

    def distances(self, query: str, positions: IntArray | tuple[int, int]) -> IntArray:
        """Exact unit-cost Levenshtein distance from ``query`` to each position."""
        codes = self.encode(query)
        if isinstance(positions, tuple):
            start, end = positions
            masks = self._masks[start:end]
            rows: list[WordArray] = [self._peq[c, start:end] for c in codes]
        else:
            masks = self._masks[positions]
            rows = [self._peq[c].take(positions) for c in codes]
        return _myers_columns(rows, masks, len(codes))

    def within(self, query: str, k: int, *, prefilter: bool = True) -> list[tuple[int, int]]:
        """``(plate index, distance)`` for every plate within unit distance ``k``."""
        if k < 0:
            return []
        positions = self.candidates(query, k, prefilter=prefilter)
        dist = self.distances(query, positions)
        keep = np.flatnonzero(dist <= k)
        chosen = keep + positions[0] if isinstance(positions, tuple) else positions[keep]
        plates = self._order[chosen].tolist()
        return list(zip(plates, dist[keep].tolist(), strict=True))


def _myers_columns(rows: Sequence[WordArray], masks: WordArray, text_len: int) -> IntArray:
    """Hyyrö's global-distance recurrence, one plate per uint64 lane.

    Bits above a plate's length hold garbage; every operation only carries
    information towards higher bits, so the low ``m`` bits stay exact and the
    final ``& masks`` discards the rest.
    """
    size = masks.shape[0]
    vp = masks.copy()
    vn = np.zeros(size, dtype=np.uint64)
    x = np.empty(size, dtype=np.uint64)
    d0 = np.empty(size, dtype=np.uint64)
    hp = np.empty(size, dtype=np.uint64)
    hn = np.empty(size, dtype=np.uint64)
    one = np.uint64(1)
    for eq in rows:
        np.bitwise_or(eq, vn, out=x)
        np.bitwise_and(eq, vp, out=d0)
        np.add(d0, vp, out=d0)
        np.bitwise_xor(d0, vp, out=d0)
        np.bitwise_or(d0, x, out=d0)
        # hp = vn | ~(d0 | vp)
        np.bitwise_or(d0, vp, out=hp)
        np.invert(hp, out=hp)
        np.bitwise_or(hp, vn, out=hp)
        np.bitwise_and(d0, vp, out=hn)
        # Row 0 of the global DP grows by one per text character: carry in 1.
        np.left_shift(hp, one, out=hp)
        np.bitwise_or(hp, one, out=hp)
        np.left_shift(hn, one, out=hn)
        # vp = hn | ~(d0 | hp); vn = hp & d0
        np.bitwise_or(d0, hp, out=vp)
        np.invert(vp, out=vp)
        np.bitwise_or(vp, hn, out=vp)
        np.bitwise_and(hp, d0, out=vn)
    np.bitwise_and(vp, masks, out=vp)
    np.bitwise_and(vn, masks, out=vn)
    ups = np.bitwise_count(vp).astype(np.int64)
    downs = np.bitwise_count(vn).astype(np.int64)
    return ups - downs + text_len


# --- OCR-confusion-aware weighted distance ------------------------------------


def confusion_table(pairs: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    table: set[tuple[str, str]] = set()
    for a, b in pairs:
        table.add((a, b))
        table.add((b, a))
    return frozenset(table)


DEFAULT_CONFUSIONS = confusion_table(DEFAULT_CONFUSABLE_PAIRS)


def unit_radius(max_cost: float, confusable_cost: float) -> int:
    """The unit-cost radius whose survivors contain every weighted match.

    Bound: every edit operation of the weighted distance costs at least
    ``c_min = min(confusable_cost, 1)`` (indels and other substitutions cost 1),
    so an alignment of weighted cost ``w`` uses at most ``w / c_min`` operations,
    and the unit-cost distance ``d`` (the fewest operations of any alignment)
    satisfies ``d <= w / c_min``.  Hence ``w <= max_cost`` implies
    ``d <= floor(max_cost / c_min)``: scanning with that unit radius drops no
    weighted match.  Conversely ``w <= d`` (no operation costs more than 1), so
    survivors with ``d <= max_cost`` match for sure and the DP only fixes their
    score.  With the default ``c_min = 0.5`` the radius is ``2 * max_cost``.
    """
    if not 0 < confusable_cost <= 1:
        raise ValueError("confusable_cost must be in (0, 1]")
    if max_cost < 0:
        return -1
    # The epsilon absorbs binary rounding such as 1.5 / 0.3 = 4.999...
    return math.floor(max_cost / min(confusable_cost, 1.0) + 1e-9)


def weighted_distance(
    a: str,
    b: str,
    *,
    confusable_cost: float = 0.5,
    confusions: frozenset[tuple[str, str]] = DEFAULT_CONFUSIONS,
) -> float:
    """Levenshtein distance where OCR-confusable substitutions cost less."""
    previous = [float(j) for j in range(len(b) + 1)]
    for i, char_a in enumerate(a, start=1):
        current = [float(i)] + [0.0] * len(b)
        for j, char_b in enumerate(b, start=1):
            if char_a == char_b:
                substitution = 0.0
            elif (char_a, char_b) in confusions:
                substitution = confusable_cost
            else:
                substitution = 1.0
            current[j] = min(
                previous[j] + 1.0, current[j - 1] + 1.0, previous[j - 1] + substitution
            )
        previous = current
    return previous[-1]
