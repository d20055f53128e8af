"""The tick-to-order and memory benchmarks run end to end in quick mode.

They never assert a speed or a size (that is what `python -m bench tick memory`
is for): they prove the measurements still run, that every trigger became an
order on both sides (the benchmark raises otherwise), that the simulated day
traded, and that the rows carry the issue's targets.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from bench import BENCHMARKS, bench_memory, bench_tick, tick_frames

pytestmark = pytest.mark.slow


def test_trigger_numbers_survive_the_trip_through_a_quantity():
    assert tick_frames.trigger_number(Decimal("17.00424242")) == 17
    assert tick_frames.trigger_number("3.00424242") == 3
    assert tick_frames.trigger_number("3.0042424") is None  # not the marker
    assert tick_frames.trigger_number(Decimal("0.15")) is None  # an ordinary quantity
    assert tick_frames.trigger_number("-1.00424242") is None


def test_the_tick_benchmark_times_ours_the_baseline_and_the_parts():
    assert "tick" in BENCHMARKS
    rows = bench_tick.run(quick=True)
    by_figure = {row.figure: row for row in rows}
    p50, p99 = rows[0], rows[1]
    assert "p50" in p50.figure and "p99" in p99.figure
    for row in (p50, p99):
        assert row.unit == "ms" and not row.higher_is_better
        assert row.ours.runs == row.baseline.runs == bench_tick.QUICK_REPEATS
        assert row.ours.min > 0 and row.baseline.min > 0
    assert p99.target_value == 2.0 and p99.met is not None
    assert p50.ours.median <= p99.ours.median
    read = next(row for figure, row in by_figure.items() if figure.startswith("feed: frames/s read"))
    assert read.higher_is_better and read.ours.min > 0
    journal = next(row for figure, row in by_figure.items() if "journal" in figure)
    quiet = by_figure["tick to order: p99, no background"]
    assert 0 < journal.ours.median <= quiet.ours.median  # a part of the path, not more than the whole
    assert "one durable commit alone" in journal.note


def test_the_memory_benchmark_measures_the_start_and_a_short_day():
    assert "memory" in BENCHMARKS
    start, growth = bench_memory.run(quick=True)
    assert start.unit == "MiB" and start.target_value == 150 and start.ours.runs == bench_memory.QUICK_START_REPEATS
    assert 10 < start.ours.min  # a Python process with the daemon loaded is never this small
    assert growth.unit == "%" and growth.target_value == 10 and growth.met is not None
    completed = re.search(r"(\d+)/(\d+) executions completed, (\d+) fills", growth.note)
    assert completed is not None, growth.note
    done, submitted, fills = map(int, completed.groups())
    assert submitted == bench_memory.QUICK_EXECUTIONS and done >= 1 and fills > 0
