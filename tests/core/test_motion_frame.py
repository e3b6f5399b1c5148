"""The frames motion detection sees: the sample camera's noise, shrunk grey quarter frames.

The sample camera adds sensor noise of +-2 levels to a still scene; motion
detection looks at a grey quarter-resolution copy (drivers.camera.services.
motion_frame).  A still noisy scene must not be motion, a person stepping in
must be, on exactly the frames the agent's MotionService feeds the detector.
"""

from __future__ import annotations

import numpy as np

from agent.camera.motion import MotionDetector
from drivers.camera.services import motion_frame
from drivers.vision.capture import SampleSource
from drivers.vision.synth import render_scene


def test_sample_noise_is_within_two_levels_of_the_scene_and_changes_every_frame() -> None:
    source = SampleSource(64, 48, fps=5.0, seed=3)
    scene, _ = render_scene([1], np.random.default_rng(3), 64, 48)
    source.read()  # the first frame draws a scene of its own
    source.show(scene)
    first, second = source.read(), source.read()
    for frame in (first, second):
        assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
        diff = frame.astype(np.int16) - scene.astype(np.int16)
        # Every level of -2..2 occurs, nothing beyond (the scene has no 0 or 255 pixels).
        assert set(np.unique(diff).tolist()) == {-2, -1, 0, 1, 2}
    assert not np.array_equal(first, second)


def test_motion_frame_is_a_grey_quarter_frame_averaging_each_block() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :320] = (255, 255, 255)
    # A one-pixel bright dot in a dark 4x4 block counts a sixteenth.
    frame[401, 401] = (160, 160, 160)
    small = motion_frame(frame)
    assert small.shape == (120, 160) and small.dtype == np.uint8
    assert small[60, 10] == 255 and small[60, 150] == 0
    assert small[100, 100] == 10
    assert motion_frame(frame[:, :, 0]).shape == (120, 160)


def test_a_person_stepping_into_the_sample_scene_is_motion_and_a_still_one_is_not() -> None:
    rng = np.random.default_rng(5)
    empty, _ = render_scene([], rng, 640, 480)
    person, _ = render_scene([2], np.random.default_rng(5), 640, 480)
    source = SampleSource(640, 480, fps=5.0)
    detector = MotionDetector("cam0")
    events = []
    for i in range(30):
        source._frame = 1  # no scene of its own (one is drawn every 20 frames)
        source.show(empty if i < 15 else person)
        events += detector.feed(motion_frame(source.read()), now=100 + i * 0.2)
        if i == 14:
            assert events == [], "a still scene with sensor noise was taken for motion"
    assert [e.fields["phase"] for e in events][:1] == ["new"]
