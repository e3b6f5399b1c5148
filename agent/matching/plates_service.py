"""Consent-gated plate enrolment and matching, returning ``plate.match`` events.

:class:`PlateRecognition` is the pure core behind the CLI, the
``plate.observe`` MQTT command and the camera pipeline: callers pass ``now``.
Nothing is enrolled or matched unless ``plate_recognition`` is granted, and a
withdrawal erases the watch-list files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from agent.errors import ConsentRequiredError, DecodeError, NotFoundError, TooLargeError
from agent.events import Event
from agent.matching.events import PLATE_MATCH
from agent.matching.plates import (
    MatchPolicy,
    PlateEntry,
    PlateList,
    PlateMatch,
    PlateWatchlist,
    make_entry,
    normalise_plate,
)
from agent.matching.plates_store import PlateStore
from agent.ports import AuditSink, CommandArgs, Outcome
from agent.purposes import Purpose

PURPOSE = Purpose.PLATE_RECOGNITION
OBSERVE_COMMAND = "plate.observe"
MAX_CAMERA_CHARS = 64


class PlateRecognition:
    """Implements ``agent.ports.PersonalDataHolder`` (through its store)."""

    name = "plates"

    def __init__(
        self,
        store: PlateStore,
        policy: MatchPolicy,
        is_granted: Callable[[Purpose], bool],
        *,
        audit: AuditSink | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.is_granted = is_granted
        self.audit = audit
        self._watchlist: PlateWatchlist | None = None
        self._seen_version: int | None = None

    def _require_consent(self) -> None:
        if not self.is_granted(PURPOSE):
            raise ConsentRequiredError(PURPOSE.value)

    def _record(self, kind: str, detail: Mapping[str, object], now: float) -> None:
        if self.audit is not None:
            self.audit.record(kind, detail, now)

    # --- the watch-list ---------------------------------------------------------

    def enrol(
        self,
        text: object,
        *,
        plate_list: PlateList | str = PlateList.ALLOW,
        label: object = None,
        plate_format: object = None,
        now: float,
    ) -> PlateEntry:
        self._require_consent()
        entry = make_entry(
            text, plate_list=plate_list, label=label, plate_format=plate_format, now=now
        )
        self.store.put(entry)
        self._watchlist = None
        self._record("plate.enrol", {"list": entry.list.value}, now)
        return entry

    def remove(self, text: object, *, now: float) -> PlateEntry:
        """Removing data is always allowed, consent or not."""
        plate = normalise_plate(text)
        existing = {e.plate: e for e in self.store.entries()}
        if plate not in existing or not self.store.remove(plate):
            raise NotFoundError(f"plate {plate!r} is not on the watch-list")
        self._watchlist = None
        self._record("plate.remove", {"list": existing[plate].list.value}, now)
        return existing[plate]

    def entries(self) -> list[PlateEntry]:
        return self.store.entries()

    def refresh_if_changed(self) -> None:
        """Drop the cached index when another process (the CLI) changed the file."""
        version = self.store.data_version()
        if version != self._seen_version:
            self._seen_version = version
            self._watchlist = None

    def _current(self) -> PlateWatchlist:
        if self._watchlist is None:
            self._watchlist = PlateWatchlist(self.store.entries(), self.policy)
        return self._watchlist

    # --- matching -------------------------------------------------------------------

    def observe(self, text: object) -> list[PlateMatch]:
        """Match one reading against the watch-list."""
        self._require_consent()
        return self._current().match(normalise_plate(text))

    def events(self, matches: Sequence[PlateMatch], *, camera: str, now: float) -> list[Event]:
        """One ``plate.match`` event per matching entry."""
        return [self._event(match, camera, now) for match in matches]

    def _event(self, match: PlateMatch, camera: str, now: float) -> Event:
        fields: dict[str, object] = {
            "score": match.score,
            "list": match.entry.list.value,
            "distance": match.distance,
            "camera": camera,
        }
        if match.entry.label is not None:
            fields["label"] = match.entry.label
        return Event(
            type=PLATE_MATCH.type,
            occurred_at=now,
            fields=fields,
            identifiers={"plate": match.entry.plate},
        )

    def handle_observe(self, args: CommandArgs, now: float) -> Outcome:
        """The ``plate.observe`` command: ``{"text": str, "camera": str}`` from a recogniser."""
        unknown = set(args) - {"text", "camera"}
        if unknown:
            raise DecodeError(f"plate.observe: unknown argument {sorted(unknown)[0][:40]!r}")
        camera = args.get("camera", "")
        if not isinstance(camera, str):
            raise DecodeError("plate.observe: camera must be a string")
        if len(camera) > MAX_CAMERA_CHARS or any(ord(c) < 32 for c in camera):
            raise TooLargeError("plate.observe: camera name too long or not printable")
        matches = self.observe(args.get("text"))
        # The reply says only that the reading was taken: telling the sender
        # whether a plate is listed would make the command a watch-list oracle.
        # Matches reach the owner as consented plate.match events.
        return Outcome({"accepted": True}, tuple(self.events(matches, camera=camera, now=now)))

    # --- consent and personal data ------------------------------------------------

    def export_personal_data(self) -> Mapping[str, object]:
        return self.store.export_personal_data()

    def erase_personal_data(self) -> int:
        self._watchlist = None
        return self.store.erase_personal_data()
