from __future__ import annotations

import numpy as np

from agent.camera.motion import MotionDetector


def frames_with_moving_square(n: int, moving: range) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        frame = np.full((120, 160), 40, np.uint8)
        if i in moving:
            x = 10 + (i - moving.start) * 8
            frame[40:80, x : x + 40] = 220
        frames.append(frame)
    return frames


def test_one_walk_past_the_camera_is_one_event_with_duration() -> None:
    detector = MotionDetector("cam0")
    events = []
    for i, frame in enumerate(frames_with_moving_square(40, range(10, 20))):
        event = detector.feed(frame, now=100 + i * 0.2)
        if event:
            events.append(event)
    assert len(events) == 1
    event = events[0]
    assert event.type == "motion" and event.fields["camera"] == "cam0"
    assert abs(event.occurred_at - 102.0) < 1e-6
    assert 1.5 <= float(event.fields["duration"]) <= 2.0  # type: ignore[arg-type]
    assert float(event.fields["area"]) > 0.05  # type: ignore[arg-type]


def test_static_scene_and_sensor_noise_are_not_motion() -> None:
    rng = np.random.default_rng(1)
    detector = MotionDetector("cam0")
    for i in range(50):
        noisy = np.clip(100 + rng.normal(0, 4, (120, 160)), 0, 255).astype(np.uint8)
        assert detector.feed(noisy, now=i * 0.2) is None


def test_motion_that_never_stops_is_still_reported_periodically() -> None:
    rng = np.random.default_rng(2)
    detector = MotionDetector("cam0")
    events = []
    for i in range(400):  # 80 s of a scene that changes every frame
        frame = rng.integers(0, 255, (60, 80), dtype=np.uint8)
        event = detector.feed(frame, now=i * 0.2)
        if event:
            events.append(event)
    assert len(events) == 2  # at 30 s and 60 s
    assert all(29.5 <= float(e.fields["duration"]) <= 30.1 for e in events)  # type: ignore[arg-type]
