"""Licence-plate watch-list: normalisation, plate formats and fuzzy matching.

Everything here is pure: texts in, matches out.  Storage lives in
:mod:`agent.matching.plates_store`, consent gating and events in
:mod:`agent.matching.plates_service`, model inference in
``drivers/vision/plate_reader.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.errors import DecodeError, TooLargeError
from agent.matching.plates_fuzzy import (
    PlateIndex,
    confusion_table,
    unit_radius,
    weighted_distance,
)

# Raw text longer than this is rejected before any processing (OCR junk, attacks).
MAX_RAW_CHARS = 64
MAX_PLATE_CHARS = 16
MAX_LABEL_CHARS = 64
MAX_FORMAT_CHARS = 128
MAX_FORMAT_ALTERNATIVES = 8
MAX_VARIABLE_ATOMS = 4
MAX_REPEAT = MAX_PLATE_CHARS
MAX_FIT_SWAPS = 6  # ambiguous positions tried when fitting a reading to a format (64 ways)


class PlateList(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


def normalise_plate(text: object) -> str:
    """Upper-case, NFKC-fold and strip spaces and dashes; only letters and digits remain.

    Raises DecodeError (TooLargeError for overlong input) rather than guessing:
    control characters or punctuation mean the reading is not a plate.
    """
    if not isinstance(text, str):
        raise DecodeError(f"plate text must be a string, got {type(text).__name__}")
    if len(text) > MAX_RAW_CHARS:
        raise TooLargeError(f"plate text longer than {MAX_RAW_CHARS} characters")
    folded = unicodedata.normalize("NFKC", text).upper()
    kept = []
    for char in folded:
        category = unicodedata.category(char)
        if char.isspace() or category == "Pd":
            continue
        if category[0] == "C":
            raise DecodeError("plate text contains control or format characters")
        if not char.isalnum():
            raise DecodeError(f"plate text may only contain letters and digits, not {char!r}")
        kept.append(char)
    plate = "".join(kept)
    if not plate:
        raise DecodeError("plate text is empty")
    if len(plate) > MAX_PLATE_CHARS:
        raise TooLargeError(f"plate longer than {MAX_PLATE_CHARS} characters")
    return plate


def normalise_label(label: object) -> str | None:
    if label is None or label == "":
        return None
    if not isinstance(label, str):
        raise DecodeError("label must be a string")
    if len(label) > MAX_LABEL_CHARS:
        raise TooLargeError(f"label longer than {MAX_LABEL_CHARS} characters")
    if any(unicodedata.category(c)[0] == "C" for c in label):
        raise DecodeError("label contains control characters")
    return label


# --- plate formats: a safe regular-expression subset ---------------------------

_QUANTIFIER = re.compile(r"\?|\*|\+|\{(\d{1,2})(,(\d{0,2}))?\}")


def _class_end(pattern: str, start: int) -> int:
    """Index just past the ``]`` closing the class opened at ``start``."""
    index = start + 1
    if index < len(pattern) and pattern[index] == "^":
        index += 1
    first = True
    while index < len(pattern):
        char = pattern[index]
        if char == "]" and not first:
            return index + 1
        if char == "\\":
            if pattern[index + 1 : index + 2] != "d":
                raise DecodeError("format: only \\d may be escaped inside [...]")
            index += 2
        elif char.isalnum() or (char == "-" and not first):
            index += 1
        else:
            raise DecodeError(f"format: {char!r} is not allowed inside [...]")
        first = False
    raise DecodeError("format: unterminated character class '['")


def _check_alternative(pattern: str) -> None:
    index = 0
    variable_atoms = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "[":
            index = _class_end(pattern, index)
        elif char == "\\":
            if pattern[index + 1 : index + 2] != "d":
                raise DecodeError("format: the only escape allowed is \\d")
            index += 2
        elif char.isalnum() or char == ".":
            index += 1
        elif char in "()":
            raise DecodeError(
                "format: groups are not supported (nested repetition can backtrack "
                "catastrophically); use literals, [classes], \\d, quantifiers and |"
            )
        else:
            raise DecodeError(f"format: {char!r} is not supported here")
        quantifier = _QUANTIFIER.match(pattern, index)
        if quantifier is None:
            continue
        low, high = _repeat_bounds(quantifier)
        if high is None or low != high:
            variable_atoms += 1
        index = quantifier.end()
        if index < len(pattern) and pattern[index] in "?*+{":
            raise DecodeError("format: stacked quantifiers are not supported")
    if variable_atoms > MAX_VARIABLE_ATOMS:
        raise DecodeError(
            f"format: more than {MAX_VARIABLE_ATOMS} variable-length repeats per alternative"
        )


def _repeat_bounds(match: re.Match[str]) -> tuple[int, int | None]:
    symbol = match.group(0)
    if symbol in ("?", "*", "+"):
        return {"?": (0, 1), "*": (0, None), "+": (1, None)}[symbol]
    low = int(match.group(1))
    if match.group(2) is None:
        high: int | None = low
    else:
        high = int(match.group(3)) if match.group(3) else None
    if low > MAX_REPEAT or (high is not None and (high > MAX_REPEAT or high < low)):
        raise DecodeError(f"format: repeat bounds must satisfy 0 <= m <= n <= {MAX_REPEAT}")
    return low, high


def compile_format(pattern: object) -> re.Pattern[str]:
    """Compile an owner-supplied plate format after proving it cannot blow up.

    Accepted subset: literals, ``.``, ``\\d``, ``[...]`` classes, quantifiers on
    single atoms and top-level ``|``; an optional leading ``^`` / trailing ``$``.
    Without groups no repetition nests, and with at most
    ``MAX_VARIABLE_ATOMS`` variable repeats per alternative over a plate of at
    most ``MAX_PLATE_CHARS`` characters backtracking is bounded by
    C(16 + 4, 4) = 4845 splits per alternative, so matching is always cheap.
    The format is matched against the *normalised* plate with ``fullmatch``.
    """
    if not isinstance(pattern, str):
        raise DecodeError("format must be a string")
    if len(pattern) > MAX_FORMAT_CHARS:
        raise TooLargeError(f"format longer than {MAX_FORMAT_CHARS} characters")
    body = pattern.removeprefix("^")
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    if not body:
        raise DecodeError("format is empty")
    alternatives = body.split("|")
    if len(alternatives) > MAX_FORMAT_ALTERNATIVES:
        raise DecodeError(f"format: more than {MAX_FORMAT_ALTERNATIVES} alternatives")
    for alternative in alternatives:
        if not alternative:
            raise DecodeError("format: empty alternative")
        _check_alternative(alternative)
    try:
        return re.compile(body)
    except re.error as exc:
        raise DecodeError(f"format: invalid regular expression: {exc}") from exc


def fit_format(
    text: str, formats: Sequence[re.Pattern[str]], confusable_pairs: Iterable[str]
) -> str | None:
    """``text``, or the reading nearest to it that fits one of ``formats``; None if none does.

    An OCR reading that misses every format by confusable characters only (``O``
    read for ``0`` where the format wants a digit) is corrected with as few
    swaps as possible; at most ``MAX_FIT_SWAPS`` ambiguous positions are tried.
    """
    if any(f.fullmatch(text) for f in formats):
        return text
    partner: dict[str, str] = {}
    for pair in confusable_pairs:
        if len(pair) == 2:
            partner.setdefault(pair[0], pair[1])
            partner.setdefault(pair[1], pair[0])
    ambiguous = [i for i, c in enumerate(text) if c in partner][:MAX_FIT_SWAPS]
    for swaps in range(1, len(ambiguous) + 1):
        for chosen in itertools.combinations(ambiguous, swaps):
            chars = list(text)
            for i in chosen:
                chars[i] = partner[chars[i]]
            candidate = "".join(chars)
            if any(f.fullmatch(candidate) for f in formats):
                return candidate
    return None


# --- the watch-list ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlateEntry:
    plate: str
    list: PlateList
    label: str | None = None
    format: str | None = None
    created_at: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "plate": self.plate,
            "list": self.list.value,
            "label": self.label,
            "format": self.format,
            "created_at": self.created_at,
        }


def make_entry(
    text: object,
    *,
    plate_list: PlateList | str = PlateList.ALLOW,
    label: object = None,
    plate_format: object = None,
    now: float = 0.0,
) -> PlateEntry:
    """Validate and normalise owner input into an entry (raises DecodeError)."""
    plate = normalise_plate(text)
    try:
        chosen = plate_list if isinstance(plate_list, PlateList) else PlateList(plate_list)
    except ValueError:
        raise DecodeError(f"list must be 'allow' or 'deny', not {str(plate_list)[:20]!r}") from None
    if plate_format is not None and plate_format != "":
        compiled = compile_format(plate_format)
        if compiled.fullmatch(plate) is None:
            raise DecodeError(f"plate {plate!r} does not fit its format {plate_format!r}")
        format_text: str | None = str(plate_format)
    else:
        format_text = None
    return PlateEntry(plate, chosen, normalise_label(label), format_text, now)


@dataclasses.dataclass(frozen=True)
class PlateMatch:
    entry: PlateEntry
    observed: str
    distance: float
    unit_distance: int

    @property
    def score(self) -> float:
        """1 for an exact reading, falling linearly with the weighted distance."""
        longest = max(len(self.observed), len(self.entry.plate))
        return round(max(0.0, 1.0 - self.distance / longest), 4)


@dataclasses.dataclass(frozen=True)
class MatchPolicy:
    max_cost: float = 1.0
    confusable_cost: float = 0.5
    confusable_pairs: tuple[str, ...] = ("O0", "I1", "B8", "S5", "Z2")


class PlateWatchlist:
    """An immutable snapshot of the entries with their fuzzy index."""

    def __init__(self, entries: Iterable[PlateEntry], policy: MatchPolicy) -> None:
        self.entries: tuple[PlateEntry, ...] = tuple(entries)
        self.policy = policy
        self._confusions = confusion_table(
            (pair[0], pair[1]) for pair in policy.confusable_pairs if len(pair) == 2
        )
        self._formats = {
            e.format: compile_format(e.format) for e in self.entries if e.format is not None
        }
        self._index = PlateIndex([e.plate for e in self.entries])
        self._radius = unit_radius(policy.max_cost, policy.confusable_cost)

    def match(self, observed: str) -> list[PlateMatch]:
        """Entries within ``max_cost`` of the normalised reading, best first."""
        found = []
        for position, unit in self._index.within(observed, self._radius):
            entry = self.entries[position]
            if entry.format is not None and self._formats[entry.format].fullmatch(observed) is None:
                continue
            cost = weighted_distance(
                observed,
                entry.plate,
                confusable_cost=self.policy.confusable_cost,
                confusions=self._confusions,
            )
            if cost <= self.policy.max_cost + 1e-9:
                found.append(PlateMatch(entry, observed, cost, unit))
        found.sort(key=lambda m: (m.distance, m.entry.list.value, m.entry.plate))
        return found


# --- model output ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlateReading:
    text: str
    confidence: float


class PlateReader(Protocol):
    """Reads plate text from an image crop (implemented in drivers/vision)."""

    def read(self, image: npt.NDArray[np.uint8]) -> Sequence[PlateReading]: ...


def ctc_greedy_decode(
    logits: npt.ArrayLike, charset: str, *, blank_last: bool = False
) -> PlateReading:
    """Best-path CTC decoding of a recogniser's ``[T, C]`` output (any 1-sized axes).

    The class axis is the one of size ``len(charset) + 1``; the blank is class
    0 (CRNN convention) or the last class (LPRNet) when ``blank_last``.
    Confidence is the mean of the per-step softmax maxima of kept characters.
    """
    classes = len(charset) + 1
    squeezed = np.squeeze(np.asarray(logits, dtype=np.float64))
    if squeezed.ndim == 1 and squeezed.shape[0] == classes:
        squeezed = squeezed[None, :]
    if squeezed.ndim != 2 or classes not in squeezed.shape:
        raise DecodeError(
            f"recogniser output shape {np.shape(logits)} has no axis of {classes} classes"
        )
    steps = squeezed if squeezed.shape[1] == classes else squeezed.T
    if not np.all(np.isfinite(steps)):
        raise DecodeError("recogniser output contains NaN or infinity")
    shifted = np.exp(steps - steps.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    best = probabilities.argmax(axis=1)
    blank = classes - 1 if blank_last else 0
    offset = 0 if blank_last else 1
    chars: list[str] = []
    scores: list[float] = []
    previous = -1
    for step, label in enumerate(best.tolist()):
        if label not in (blank, previous):
            chars.append(charset[label - offset])
            scores.append(float(probabilities[step, label]))
        previous = label
    confidence = float(np.mean(scores)) if scores else 0.0
    return PlateReading("".join(chars), round(confidence, 4))
