"""Consent gating, events, withdrawal and the runtime service, with real SQLite."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from agent import cbor
from agent.config import AgentConfig
from agent.consent import ConsentLedger
from agent.errors import ConsentRequiredError, NotFoundError
from agent.events import Event, SchemaCatalogue
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching.events import PLATE_MATCH
from agent.matching.plates import MatchPolicy, PlateList, PlateMatch
from agent.matching.plates_service import PlateRecognition
from agent.matching.plates_store import PlateStore
from agent.matching.settings import MatchingSettings, PlateReaderKind
from agent.minimise import Minimiser, Pseudonymiser
from agent.ports import Outcome
from agent.purposes import Purpose
from drivers.vision.feature import StoredPlates
from drivers.vision.plate_reader import build_service
from tests.support.clock import FixedClock

PLATES = Purpose.PLATE_RECOGNITION


class MinimisingSink:
    """The real minimiser behind a list: what would leave the device."""

    def __init__(self, ledger: ConsentLedger) -> None:
        self.events: list[Event] = []
        self.sent: list[dict[str, object]] = []
        self.minimiser = Minimiser(
            device_id="EA-TEST",
            schemas=SchemaCatalogue([PLATE_MATCH]),
            is_granted=ledger.is_granted,
            pseudonymiser=Pseudonymiser(b"k" * 32, ledger.key_generation),
        )

    def emit(self, event: Event) -> bool:
        self.events.append(event)
        message = self.minimiser.minimise(event)
        if message is None:
            return False
        self.sent.append(cbor.loads_untrusted(message.payload, max_bytes=1 << 20))
        return True


class EmittingCore:
    """The pure core plus what the runtime does with the events it returns."""

    def __init__(self, core: PlateRecognition, sink: MinimisingSink) -> None:
        self.core = core
        self.sink = sink

    def __getattr__(self, name: str) -> object:
        return getattr(self.core, name)

    def observe(self, text: object, *, camera: str, now: float) -> list[PlateMatch]:
        matches = self.core.observe(text)
        for event in self.core.events(matches, camera=camera, now=now):
            self.sink.emit(event)
        return matches


class RecordingAudit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object]]] = []

    def record(self, kind: str, detail: object, now: float) -> None:
        self.records.append((kind, dict(detail)))  # type: ignore[call-overload]


@pytest.fixture
def ledger(tmp_path: pathlib.Path) -> ConsentLedger:
    return ConsentLedger.open(tmp_path)


@pytest.fixture
def sink(ledger: ConsentLedger) -> MinimisingSink:
    return MinimisingSink(ledger)


@pytest.fixture
def core(tmp_path: pathlib.Path, ledger: ConsentLedger, sink: MinimisingSink) -> PlateRecognition:
    recognition = PlateRecognition(
        PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path))),
        MatchPolicy(max_cost=1.0),
        ledger.is_granted,
        audit=RecordingAudit(),
    )
    ledger.add_withdrawal_hook(PLATES, "plates", recognition.erase_personal_data)
    return EmittingCore(recognition, sink)  # type: ignore[return-value]


def test_enrolment_needs_consent(core: PlateRecognition, ledger: ConsentLedger) -> None:
    with pytest.raises(ConsentRequiredError):
        core.enrol("AB 123", now=1.0)
    assert not core.store.path.exists()
    ledger.grant(PLATES, now=2.0)
    assert core.enrol("AB 123", now=3.0).plate == "AB123"


def test_matching_needs_consent(core: PlateRecognition, ledger: ConsentLedger) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("AB123", now=1.0)
    ledger.set(PLATES, False, now=2.0, source="test")
    with pytest.raises(ConsentRequiredError):
        core.observe("AB123", camera="gate", now=3.0)


def test_match_event_carries_schema_fields_and_pseudonymised_plate(
    core: PlateRecognition, ledger: ConsentLedger, sink: MinimisingSink
) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("B0S-123", label="Alice's van", plate_list="deny", now=1.0)
    core.enrol("XY999", now=1.0)
    matches = core.observe("8OS 123", camera="gate", now=5.0)
    assert [(m.entry.plate, m.distance) for m in matches] == [("B0S123", 1.0)]
    event = sink.events[-1]
    assert event.type == "plate.match"
    assert set(event.fields) <= PLATE_MATCH.fields
    assert event.fields == {
        "score": pytest.approx(1 - 1 / 6, abs=1e-3),
        "label": "Alice's van",
        "list": "deny",
        "distance": 1.0,
        "camera": "gate",
    }
    assert event.identifiers == {"plate": "B0S123"}
    wire = sink.sent[-1]
    assert "B0S123" not in repr(wire)
    assert wire["ids"] and wire["f"]["list"] == "deny"  # type: ignore[index]


def test_label_only_when_set(
    core: PlateRecognition, ledger: ConsentLedger, sink: MinimisingSink
) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("XY999", now=1.0)
    core.observe("XY999", camera="gate", now=2.0)
    assert "label" not in sink.events[-1].fields
    assert sink.events[-1].fields["distance"] == 0.0


def test_format_filters_fuzzy_readings(core: PlateRecognition, ledger: ConsentLedger) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("AB123", plate_format="[A-Z]{2}\\d{3}", now=1.0)
    assert len(core.observe("AB128", camera="c", now=2.0)) == 1
    # "A8123" is one cheap confusion away but no longer fits the owner's format.
    assert core.observe("A8123", camera="c", now=2.0) == []


def test_far_readings_do_not_match(core: PlateRecognition, ledger: ConsentLedger) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("AB123", now=1.0)
    assert core.observe("XY987", camera="c", now=2.0) == []
    assert core.observe("AB1", camera="c", now=2.0) == []


def test_withdrawal_deletes_the_watch_list_files(
    core: PlateRecognition, ledger: ConsentLedger, tmp_path: pathlib.Path
) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("AB123", label="x", now=1.0)
    core.enrol("CD456", now=1.0)
    assert core.store.path.exists()
    change = ledger.withdraw(PLATES, now=2.0)
    assert change.purged["plates"] == 2
    assert not any(p.exists() for p in core.store.files())
    assert not list(tmp_path.glob("plates.sqlite*"))
    assert core.entries() == []
    assert not core.store.path.exists()  # reading did not recreate it


def test_withdrawing_another_purpose_keeps_plates(
    core: PlateRecognition, ledger: ConsentLedger
) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("AB123", now=1.0)
    ledger.withdraw(Purpose.FACE_RECOGNITION, now=2.0)
    assert [e.plate for e in core.entries()] == ["AB123"]


def test_entries_survive_reopening(tmp_path: pathlib.Path) -> None:
    keys = DataKeys(StateLayout(tmp_path))
    first = PlateRecognition(
        PlateStore.in_state_dir(tmp_path, keys=keys), MatchPolicy(), lambda p: True
    )
    first.enrol("AB123", label="van", plate_list=PlateList.DENY, now=7.0)
    first.store.close()
    again = PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    assert [e.as_dict() for e in again.entries()] == [
        {"plate": "AB123", "list": "deny", "label": "van", "format": None, "created_at": 7.0}
    ]


def test_export_and_erase(core: PlateRecognition, ledger: ConsentLedger) -> None:
    ledger.grant(PLATES, now=1.0)
    core.enrol("AB123", label="van", now=1.0)
    exported = core.export_personal_data()
    assert exported["plates"][0]["label"] == "van"  # type: ignore[index]
    assert core.erase_personal_data() == 1
    assert core.export_personal_data() == {"plates": []}


def test_remove_is_allowed_without_consent(tmp_path: pathlib.Path) -> None:
    granted = {PLATES: True}
    core = PlateRecognition(
        PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path))),
        MatchPolicy(),
        lambda p: granted.get(p, False),
    )
    core.enrol("AB123", now=1.0)
    granted[PLATES] = False
    assert core.remove("ab-123", now=4.0).plate == "AB123"
    with pytest.raises(NotFoundError):
        core.remove("AB123", now=5.0)


def test_service_picks_up_enrolments_from_another_process(
    tmp_path: pathlib.Path, ledger: ConsentLedger, sink: MinimisingSink
) -> None:
    ledger.grant(PLATES, now=1.0)
    config = AgentConfig(state_dir=tmp_path)
    service = build_service(
        config, is_granted=ledger.is_granted, clock=FixedClock(100.0),
        keys=DataKeys(StateLayout(tmp_path)),
    )
    service.start()
    handler = service.commands()["plate.observe"]

    def observe(args: dict[str, object]) -> Outcome:
        outcome = handler(args)
        assert isinstance(outcome, Outcome)
        return outcome

    service.core.enrol("AB123", now=1.0)
    first = observe({"text": "AB123", "camera": "gate"})
    assert first.result == {"accepted": True} and len(first.events) == 1
    # The CLI enrols through its own connection; the next tick sees it.
    other = PlateStore.in_state_dir(tmp_path, keys=DataKeys(StateLayout(tmp_path)))
    other.put(dataclasses.replace(service.core.entries()[0], plate="ZZ999"))
    assert service.tick(101.0) == ()  # no frame, no reader: nothing to report
    outcome = observe({"text": "ZZ998", "camera": "gate"})
    assert outcome.result == {"accepted": True}
    (event,) = outcome.events
    assert (event.type, event.occurred_at, event.fields["camera"]) == ("plate.match", 100.0, "gate")
    # What a withdrawal from the CLI erases, while the service still has the file open.
    StoredPlates(
        StateLayout(tmp_path), max_entries=1000, keys=DataKeys(StateLayout(tmp_path))
    ).erase_personal_data()
    service.stop()
    assert not list(tmp_path.glob("plates.sqlite*"))


def test_no_model_configured_means_no_reader(tmp_path: pathlib.Path) -> None:
    # (The default reader is PP-OCR on frames: off, and with no model of the owner's.)
    config = AgentConfig(
        state_dir=tmp_path,
        matching=MatchingSettings(plate_model=None, plate_reader=PlateReaderKind.OFF),
    )

    class Clock:
        def now(self) -> float:
            return 0.0

        def monotonic(self) -> float:
            return 0.0

    service = build_service(
        config, is_granted=lambda p: True, clock=FixedClock(0.0),
        keys=DataKeys(StateLayout(tmp_path)),
    )
    assert service.reader is None
