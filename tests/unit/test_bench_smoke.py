"""The benchmarks run, do the work they claim, and the runner prints their table.

Quick mode only, with tiny sizes: these tests prove that the code runs and
the numbers come out positive. They never assert a speed (that is what
`python -m bench` is for).
"""

from __future__ import annotations

import json

import pytest

from bench import BENCHMARKS, bench_bus, bench_feed
from bench.__main__ import journal_rows, main, runner_for
from bench.common import Row, Stat, compared, lockstep
from venues.base import BookDiff
from venues.binance import codec


def assert_positive(row: Row) -> None:
    for stat in (row.ours, row.baseline, row.ratio):
        assert stat is not None, row.figure
        assert 0 < stat.min <= stat.median <= stat.max, row.figure


def test_bus_bench_runs_both_shapes():
    rows = bench_bus.run(quick=True)
    assert [row.unit for row in rows] == ["msg/s", "msg/s"]
    assert "pipeline" in rows[1].figure
    for row in rows:
        assert_positive(row)
        assert row.target_ratio == 10


def test_feed_bench_runs_against_both_baselines():
    rows = bench_feed.run(quick=True)
    assert len(rows) == 2
    for row in rows:
        assert_positive(row)
    assert rows[0].target_ratio == 1.5 and rows[0].target_value == 50_000


def test_feed_workload_mixes_new_changed_and_removed_levels():
    snapshot, frames, (best_bid, best_ask) = bench_feed.workload(400, seed=3)
    bids = {price for price, _ in snapshot.bids}
    asks = {price for price, _ in snapshot.asks}
    counts = {"new": 0, "changed": 0, "removed": 0}
    last_id = snapshot.last_update_id
    for frame in frames:
        diff = codec.decode_market_frame(frame)
        assert type(diff) is BookDiff and diff.symbol == "BTCUSDT"
        assert diff.first_id == last_id + 1  # contiguous, as a live stream is
        last_id = diff.last_id
        assert len(diff.bids) + len(diff.asks) == bench_feed.LEVELS_PER_FRAME
        for side, levels in ((bids, diff.bids), (asks, diff.asks)):
            for price, qty in levels:
                assert price % bench_feed.TICK == 0
                if qty == 0:
                    assert price in side  # the generator removes only levels that exist
                    side.remove(price)
                    counts["removed"] += 1
                elif price in side:
                    counts["changed"] += 1
                else:
                    side.add(price)
                    counts["new"] += 1
        assert max(bids) < min(asks), "the generated book crossed"
    total = sum(counts.values())
    for kind, n in counts.items():
        assert 0.15 < n / total < 0.6, f"{kind}: {n} of {total} level updates"
    assert (max(bids), min(asks)) == (best_bid * bench_feed.TICK, best_ask * bench_feed.TICK)
    assert abs(len(bids) - bench_feed.DEPTH) < bench_feed.DEPTH // 5  # the book stays about as deep


def test_feed_bench_refuses_a_baseline_that_skips_work(monkeypatch):
    def ingest_without_removals(self, frames):
        for frame in frames:
            data = json.loads(frame)["data"]
            for price, qty in data["b"]:
                if float(qty):
                    self.bids[float(price)] = float(qty)
            for price, qty in data["a"]:
                if float(qty):
                    self.asks[float(price)] = float(qty)
        best_bid, best_ask = max(self.bids), min(self.asks)
        return (best_bid, self.bids[best_bid]), (best_ask, self.asks[best_ask])

    monkeypatch.setattr(bench_feed.NaiveBook, "ingest", ingest_without_removals)
    with pytest.raises(AssertionError, match="naive ended on"):
        bench_feed.run(quick=True)


def test_lockstep_times_every_contender_on_every_item():
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def factory(name):
        def build():
            return seen[name].extend

        return build

    totals = lockstep({"a": factory("a"), "b": factory("b")}, list(range(10)), chunk=3, repeats=2)
    assert seen == {"a": list(range(10)) * 2, "b": list(range(10)) * 2}
    assert [len(ns) for ns in totals.values()] == [2, 2]
    assert all(ns > 0 for values in totals.values() for ns in values)


def test_ratio_reads_as_times_better_both_ways():
    faster = compared("throughput", "msg/s", [20.0, 30.0], [10.0, 10.0], target_ratio=2.5)
    assert faster.ratio == Stat(2.5, 2.0, 3.0, 2) and faster.met is True
    quicker = compared("latency", "ms", [1.0, 4.0], [4.0, 4.0], higher_is_better=False, target_value=2.0)
    assert quicker.ratio == Stat(2.5, 1.0, 4.0, 2)
    assert quicker.met is False  # median 2.5 ms is above the 2 ms ceiling
    with pytest.raises(ValueError, match="pair them"):
        compared("x", "u", [1.0], [1.0, 2.0])


def test_journal_rows_pair_each_speed_up_with_its_cases(tmp_path, monkeypatch):
    from bench import bench_journal

    monkeypatch.setattr(bench_journal, "BASELINE_FILLS", 4)
    monkeypatch.setattr(bench_journal, "BATCHED_FILLS", 40)
    raw = bench_journal.run(directory=tmp_path, repeats=1)
    rows = journal_rows(raw, bench_journal.SPEEDUPS)
    assert len(rows) == len(bench_journal.SPEEDUPS)
    by_case = {row["case"]: row for row in raw}
    for row, speedup in zip(rows, bench_journal.SPEEDUPS):
        assert_positive(row)
        assert row.ours.median == by_case[speedup[-2]]["median"]
        assert row.baseline.median == by_case[speedup[-1]]["median"]
        assert row.ratio.median == pytest.approx(row.ours.median / row.baseline.median)
        assert row.target_ratio == 5


def test_every_listed_benchmark_has_a_runner():
    for name in BENCHMARKS:
        assert callable(runner_for(name)), name


def test_runner_prints_one_table_for_the_chosen_benchmarks(capsys):
    assert main(["bus", "feed", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "figure" in out and "baseline" in out and "ratio" in out
    assert "bus: 4-hop pipeline" in out and "feed: depth frames" in out
    assert "journal" not in out.split("notes:")[0]


def test_runner_json_output_has_every_row(capsys):
    assert main(["bus", "--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quick"] is True and "python" in report["host"]
    rows = report["rows"]
    assert [row["unit"] for row in rows] == ["msg/s", "msg/s"]
    assert all(row["ours"]["median"] > 0 for row in rows)


def test_runner_refuses_an_unknown_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bsu"])
    assert exit_info.value.code == 2
    assert "unknown benchmark bsu" in capsys.readouterr().err


def test_runner_lists_the_benchmarks(capsys):
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(BENCHMARKS)
