"""The kill benchmark runs end to end in quick mode: venues in their own processes, the daemon, both sides.

It never asserts a speed (that is what `python -m bench kill` is for); it proves the
measurement still runs, checks what it checks (every order gone at every venue, for
ours and for the baseline) and reports the overhead row against its target.
"""

from __future__ import annotations

import pytest

from bench import BENCHMARKS, bench_kill

pytestmark = pytest.mark.slow


def test_the_kill_benchmark_measures_ours_and_the_venues_round_trips():
    assert "kill" in BENCHMARKS
    latency, overhead = bench_kill.run(quick=True)
    assert (latency.unit, overhead.unit) == ("ms", "ms")
    assert latency.ours.runs == latency.baseline.runs == overhead.ours.runs == bench_kill.QUICK_REPEATS
    assert latency.ours.min > 0 and latency.baseline.min > 0
    assert not latency.higher_is_better and not overhead.higher_is_better
    assert overhead.ours.median == pytest.approx(latency.ours.median - latency.baseline.median)
    assert overhead.target_value == 20 and overhead.met is not None
