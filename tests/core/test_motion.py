from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.camera.motion import MotionDetector, MotionLifecycle, MotionSettings, MotionStateTopic
from agent.events import Event
from agent.purposes import Purpose


def frames_with_moving_square(n: int, moving: range) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        frame = np.full((120, 160), 40, np.uint8)
        if i in moving:
            x = 10 + (i - moving.start) * 8
            frame[40:80, x : x + 40] = 220
        frames.append(frame)
    return frames


def lifecycle(**changes: float) -> MotionLifecycle:
    ids = itertools.count(1)
    return MotionLifecycle("cam0", MotionSettings(**changes), new_id=lambda: f"ev{next(ids)}")  # type: ignore[arg-type]


def phases(events: list[Event]) -> list[tuple[str, object]]:
    return [(str(e.fields["phase"]), e.fields["event_id"]) for e in events]


def test_one_walk_past_the_camera_is_one_event_new_then_end_with_duration() -> None:
    detector = MotionDetector("cam0")
    events: list[Event] = []
    for i, frame in enumerate(frames_with_moving_square(40, range(10, 20))):
        events += detector.feed(frame, now=100 + i * 0.2)
    assert [e.fields["phase"] for e in events] == ["new", "end"]
    new, end = events
    assert new.fields["event_id"] == end.fields["event_id"] and new.fields["event_id"]
    assert new.type == end.type == "motion" and end.fields["camera"] == "cam0"
    assert abs(new.occurred_at - 102.0) < 1e-6 and end.occurred_at == new.occurred_at
    assert new.fields["duration"] == 0.0
    assert 1.5 <= float(end.fields["duration"]) <= 2.0  # type: ignore[arg-type]
    assert float(end.fields["area"]) > 0.05  # type: ignore[arg-type]


def test_static_scene_and_sensor_noise_are_not_motion() -> None:
    rng = np.random.default_rng(1)
    detector = MotionDetector("cam0")
    for i in range(50):
        noisy = np.clip(100 + rng.normal(0, 4, (120, 160)), 0, 255).astype(np.uint8)
        assert detector.feed(noisy, now=i * 0.2) == []


def test_lasting_motion_is_updated_at_the_configured_rate_under_one_id() -> None:
    machine = lifecycle(update_seconds=5.0, max_event_seconds=300.0)
    events: list[Event] = []
    for i in range(100):  # 20 s of motion at 5 frames per second, then quiet
        events += machine.observe(0.2, now=i * 0.2)
    for i in range(100, 110):
        events += machine.observe(0.0, now=i * 0.2)
    assert phases(events) == [("new", "ev1")] + [("update", "ev1")] * 3 + [("end", "ev1")]
    updates = [float(e.fields["duration"]) for e in events[1:4]]  # type: ignore[arg-type]
    assert updates == [5.0, 10.0, 15.0]
    assert abs(float(events[-1].fields["duration"]) - 19.8) < 1e-6  # type: ignore[arg-type]


def test_motion_that_never_stops_is_cut_into_events_of_bounded_length() -> None:
    machine = lifecycle(update_seconds=100.0, max_event_seconds=30.0)
    events: list[Event] = []
    for i in range(400):  # 80 s of a scene that changes every frame
        events += machine.observe(0.5, now=i * 0.2)
    assert phases(events) == [
        ("new", "ev1"), ("end", "ev1"), ("new", "ev2"), ("end", "ev2"), ("new", "ev3")
    ]
    ends = [float(e.fields["duration"]) for e in events if e.fields["phase"] == "end"]  # type: ignore[arg-type]
    assert all(29.9 <= d <= 30.1 for d in ends)


# Scores as a run of (changed fraction, seconds to the next frame); None: no frame came.
frame_runs = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(0, 1), st.none()),
        st.floats(0.01, 3.0),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(
    run=frame_runs,
    update_seconds=st.floats(0.1, 10),
    quiet_seconds=st.floats(0, 5),
    max_event_seconds=st.floats(1, 60),
)
def test_lifecycle_properties(
    run: list[tuple[float | None, float]],
    update_seconds: float,
    quiet_seconds: float,
    max_event_seconds: float,
) -> None:
    machine = lifecycle(
        update_seconds=update_seconds,
        quiet_seconds=quiet_seconds,
        max_event_seconds=max_event_seconds,
    )
    now = 1000.0
    seen: list[tuple[float, Event]] = []
    for score, step in run:
        if score is None:
            seen += [(now, e) for e in machine.expire(now, after=0.6)]
        else:
            seen += [(now, e) for e in machine.observe(score, now)]
        now += step
    # Quiet for long enough ends whatever is open.
    seen += [(now, e) for e in machine.observe(0.0, now + quiet_seconds + 1)]
    assert not machine.active
    open_id: str | None = None
    last_report = 0.0
    finished: set[object] = set()
    for at, event in seen:
        phase, event_id = event.fields["phase"], event.fields["event_id"]
        assert event.fields["camera"] == "cam0"
        if phase == "new":
            assert open_id is None, "a new event while another is open"
            assert event_id not in finished, "an id reused"
            open_id, last_report, started = str(event_id), at, event.occurred_at
            continue
        assert event_id == open_id, "update/end outside its event, or with another id"
        assert event.occurred_at == started
        if phase == "update":
            assert at - last_report >= update_seconds, "updates faster than the rate limit"
            last_report = at
        else:
            assert phase == "end"
            finished.add(event_id)
            open_id = None
        duration = float(event.fields["duration"])  # type: ignore[arg-type]
        assert 0 <= duration <= at - started + 0.006  # rounded to 0.01 s
        if phase == "update":
            assert abs(duration - (at - started)) <= 0.006
    assert open_id is None, "a new without its end"


def test_state_topic_follows_motion_only_while_cloud_events_is_granted() -> None:
    granted = {Purpose.CLOUD_EVENTS: False}
    state = MotionStateTopic("cam0", lambda p: granted.get(p, False))
    state.refresh(on=False)
    assert dict(state.retained_messages()) == {"camera/cam0/motion": b""}
    version = state.version
    state.refresh(on=True)  # motion without consent: still cleared
    assert dict(state.retained_messages()) == {"camera/cam0/motion": b""}
    granted[Purpose.CLOUD_EVENTS] = True
    state.refresh(on=True)
    assert state.version > version
    assert dict(state.retained_messages()) == {"camera/cam0/motion": b"ON"}
    version = state.version
    state.refresh(on=True)
    assert state.version == version  # unchanged: nothing to republish
    state.refresh(on=False)
    assert dict(state.retained_messages()) == {"camera/cam0/motion": b"OFF"}
    granted[Purpose.CLOUD_EVENTS] = False
    state.refresh(on=False)
    assert dict(state.retained_messages()) == {"camera/cam0/motion": b""}


def test_an_event_ends_when_frames_stop_coming() -> None:
    machine = lifecycle(quiet_seconds=1.0)
    assert phases(machine.observe(0.3, now=10.0)) == [("new", "ev1")]
    assert machine.expire(10.5, after=0.6) == []  # a frame may still come
    assert machine.expire(10.9, after=0.6) == []  # quiet_seconds not yet over
    (end,) = machine.expire(11.0, after=0.6)
    assert end.fields["phase"] == "end" and end.fields["duration"] == 0.0
    assert not machine.active and machine.expire(20.0, after=0.6) == []
