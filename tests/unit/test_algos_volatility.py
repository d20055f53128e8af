"""The volatility guard: pause on a spike, resume only after a calm spell."""

import math

import pytest

from actors.algos.volatility import VolatilityConfig, VolatilityGuard

CONFIG = VolatilityConfig(window=60.0, max_volatility_bps=30.0, max_move_bps=50.0, resume_fraction=0.5,
                          calm_for=20.0, min_samples=3)


def feed(guard, start, stop, mid_at, step=1.0):
    verdicts = []
    t = start
    while t <= stop:
        verdicts.append(guard.observe(t, mid_at(t)))
        t += step
    return verdicts


def test_a_quiet_market_never_pauses():
    guard = VolatilityGuard(CONFIG)
    verdicts = feed(guard, 0, 300, lambda t: 100.0 + 0.001 * math.sin(t))
    assert not any(v.paused for v in verdicts)
    assert verdicts[-1].samples == 61


def test_a_jump_pauses_with_a_reason_and_only_one_change():
    guard = VolatilityGuard(CONFIG)
    feed(guard, 0, 100, lambda t: 100.0)
    verdict = guard.observe(101, 101.0)  # +100 bps in one tick
    assert verdict.paused and verdict.changed
    assert "volatility" in verdict.reason and verdict.volatility_bps == pytest.approx(99.5, abs=0.1)
    assert not guard.observe(102, 101.0).changed


def test_a_steady_drift_pauses_on_the_move():
    guard = VolatilityGuard(VolatilityConfig(window=60.0, max_volatility_bps=None, max_move_bps=50.0))
    verdicts = feed(guard, 0, 120, lambda t: 100.0 * (1 + 0.0001 * t))  # 1 bp a second
    first = next(v for v in verdicts if v.paused)
    assert "moved" in first.reason and first.move_bps > 50.0


def test_hysteresis_keeps_it_paused_between_the_two_levels():
    guard = VolatilityGuard(CONFIG)
    feed(guard, 0, 60, lambda t: 100.0)
    guard.observe(61, 100.5)  # 50 bps: above 30, pauses
    # then a wobble of 6 bps every 5 s: about 21 bps over the window, under the pause level (30)
    # but over the resume level (15), so it stays paused long after the spike left the window
    verdicts = feed(guard, 65, 400, lambda t: 100.5 * (1 + 0.0006 * (int(t / 5) % 2)), step=5.0)
    assert all(v.paused for v in verdicts)
    assert all(15.0 < v.volatility_bps < 30.0 for v in verdicts[12:])  # once the spike has left


def test_resumes_after_calm_for_seconds():
    guard = VolatilityGuard(CONFIG)
    feed(guard, 0, 60, lambda t: 100.0)
    guard.observe(61, 101.0)
    verdicts = feed(guard, 62, 200, lambda t: 101.0)
    resumed = [i for i, v in enumerate(verdicts) if v.changed]
    assert len(resumed) == 1
    when = 62 + resumed[0]
    # the spike leaves the window at 121; then 20 calm seconds
    assert 141 <= when <= 142
    assert not verdicts[-1].paused and "calm" in verdicts[resumed[0]].reason


def test_a_silent_feed_is_not_calm():
    guard = VolatilityGuard(CONFIG)
    feed(guard, 0, 60, lambda t: 100.0)
    guard.observe(61, 101.0)
    assert guard.assess(500.0).paused  # no mids at all in the window
    assert guard.assess(1000.0).paused


def test_window_slides_with_time():
    guard = VolatilityGuard(CONFIG)
    feed(guard, 0, 10, lambda t: 100.0 + (0.1 if t == 5 else 0.0))
    vol, _, samples = guard.measure(10.0)
    assert vol > 0 and samples == 11
    vol, move, samples = guard.measure(100.0)
    assert (vol, move, samples) == (0.0, 0.0, 0)


def test_bad_samples_are_ignored_and_counted():
    guard = VolatilityGuard(CONFIG)
    guard.observe(10.0, 100.0)
    for t, mid in ((11.0, 0.0), (12.0, -5.0), (13.0, float("nan")), (5.0, 200.0)):
        assert not guard.observe(t, mid).paused
    assert guard.ignored == 4
    assert guard.measure(13.0)[2] == 1


@pytest.mark.parametrize(
    "bad",
    [
        dict(window=0.0),
        dict(max_volatility_bps=None, max_move_bps=None),
        dict(max_move_bps=-1.0),
        dict(resume_fraction=1.5),
        dict(calm_for=-1.0),
        dict(min_samples=1),
    ],
)
def test_config_errors_name_the_field(bad):
    with pytest.raises(ValueError) as info:
        VolatilityGuard(VolatilityConfig(**bad))
    assert next(iter(bad)) in str(info.value) or "max_volatility_bps" in str(info.value)
