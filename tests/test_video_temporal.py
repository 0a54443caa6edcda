"""Which frames the net sees, the moving average over time, blending between maps."""
from __future__ import annotations

import math

import numpy as np
import pytest

from salicon.video.temporal import FrameSampler, TemporalSmoother, between


def test_every_takes_every_nth_frame():
    sampler = FrameSampler(every=3)
    assert [i for i in range(10) if sampler.take(i, i / 30)] == [0, 3, 6, 9]


def test_fps_takes_the_first_frame_of_each_slot_on_the_clip_clock():
    sampler = FrameSampler(fps=5)
    taken = [i for i in range(60) if sampler.take(i, i / 30)]
    assert taken == list(range(0, 60, 6))
    # a variable frame rate: slots of 0.5 s, whatever the spacing of the frames in them
    vfr = FrameSampler(fps=2)
    times = [0.0, 0.1, 0.45, 0.52, 0.6, 1.7, 1.75, 2.0]
    assert [t for i, t in enumerate(times) if vfr.take(i, t)] == [0.0, 0.52, 1.7, 2.0]


def test_the_choice_is_said_in_words():
    assert [FrameSampler(**k).describe() for k in ({}, {"every": 1}, {"every": 6}, {"fps": 2.5})] == [
        "every frame", "every frame", "one frame in 6", "2.5 maps a second"]


def test_no_choice_takes_every_frame_and_a_rate_above_the_clip_too():
    assert all(FrameSampler().take(i, i / 30) for i in range(10))
    sampler = FrameSampler(fps=120)
    assert all(sampler.take(i, i / 30) for i in range(10))


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": -1}, {"fps": math.inf}, {"every": 0}, {"fps": 2, "every": 2}])
def test_bad_sampling_is_refused(kwargs):
    with pytest.raises(ValueError):
        FrameSampler(**kwargs)


def test_smoothing_a_still_clip_changes_nothing():
    smoother = TemporalSmoother(0.5)
    still = np.random.default_rng(0).random((6, 8)).astype(np.float32)
    for k in range(10):
        np.testing.assert_allclose(smoother(k * 0.1, still), still, atol=1e-6)


def test_smoothing_a_jump_decays_with_the_time_constant():
    tau = 0.4
    smoother = TemporalSmoother(tau)
    a, b = np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)
    smoother(0.0, a)
    for t in np.arange(0.1, 2.0, 0.1):  # the jump happens at the first frame after t = 0
        out = smoother(float(t), b)
        np.testing.assert_allclose(out, 1.0 - math.exp(-t / tau), atol=1e-5)
    # the decay does not depend on how often maps come: one step of 1.9 s gives the same
    coarse = TemporalSmoother(tau)
    coarse(0.0, a)
    np.testing.assert_allclose(coarse(1.9, b), 1.0 - math.exp(-1.9 / tau), atol=1e-5)


def test_smoothing_off_returns_the_map_itself():
    m = np.ones((2, 2), np.float32)
    assert TemporalSmoother(None)(0.0, m) is m
    assert TemporalSmoother(0)(1.0, m) is m
    with pytest.raises(ValueError):
        TemporalSmoother(-1.0)


def test_between_holds_or_blends_by_time():
    m0, m1 = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    assert between((0.0, m0), (1.0, m1), 0.25, interpolate=False) is m0
    np.testing.assert_allclose(between((0.0, m0), (1.0, m1), 0.25, interpolate=True), 0.25)
    np.testing.assert_allclose(between((0.0, m0), None, 0.25, interpolate=True), 0.0)
