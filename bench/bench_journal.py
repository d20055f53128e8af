"""How many fills per second the journal makes durable: one transaction per fill vs group commit.

Every commit of the journal fsyncs its write-ahead log (``synchronous=FULL``),
so a transaction per fill pays one fsync per fill. Group commit pays one per
batch. Both are measured in the same run on the same disk (the directory the
journal lives in), at two levels:

- the store: `JournalStore.apply` with one fill vs a batch of fills;
- the actor: one caller awaiting each fill in turn (each commit holds one
  fill) vs many concurrent callers, whose requests the actor drains into one
  transaction.

Each case runs `REPEATS` times, interleaved so that a burst of noise from the
machine hits every case alike; rows give the median, min and max.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from itertools import count
from pathlib import Path

import trio

from daemon.journal import Journal, journal_path
from daemon.journal_store import JournalStore
from daemon.messages import Fill
from daemon.model import Side

REPEATS = 5
BASELINE_FILLS = 200  # one fsync each: keep it short
BATCHED_FILLS = 5000
BATCH = 100
CONCURRENT_CALLERS = 64


def _fills(trade_ids: count) -> Callable[[], Fill]:
    def make() -> Fill:
        trade_id = next(trade_ids)
        return Fill(
            venue="sim",
            symbol="BTCUSDT",
            client_order_id=f"td-bench-{trade_id // 10}",
            trade_id=str(trade_id),
            side=Side.BUY,
            price=Decimal("64000.10"),
            qty=Decimal("0.001"),
            fee=Decimal("0.064"),
            fee_asset="USDT",
            is_maker=True,
            venue_ms=1_700_000_000_000 + trade_id,
        )

    return make


def _store_one_per_transaction(path: Path, next_fill: Callable[[], Fill]) -> float:
    with JournalStore.open(path) as store:
        fills = [next_fill() for _ in range(BASELINE_FILLS)]
        started = time.perf_counter()
        for fill in fills:
            store.apply([fill])
        return len(fills) / (time.perf_counter() - started)


def _store_group_commit(path: Path, next_fill: Callable[[], Fill]) -> float:
    with JournalStore.open(path) as store:
        fills = [next_fill() for _ in range(BATCHED_FILLS)]
        started = time.perf_counter()
        for start in range(0, len(fills), BATCH):
            store.apply(fills[start : start + BATCH])
        return len(fills) / (time.perf_counter() - started)


async def _actor(path: Path, next_fill: Callable[[], Fill], callers: int, total: int) -> float:
    journal = Journal(path)
    fills = [next_fill() for _ in range(total)]
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        started = time.perf_counter()
        async with trio.open_nursery() as writers:
            for part in range(callers):
                writers.start_soon(_record_each, journal, fills[part::callers])
        elapsed = time.perf_counter() - started
        journal.stop()
    return total / elapsed


async def _record_each(journal: Journal, fills: list[Fill]) -> None:
    for fill in fills:
        if not await journal.record_fill(fill):
            raise AssertionError(f"fill {fill.trade_id} was reported as a duplicate")


def _actor_one_caller(path: Path, next_fill: Callable[[], Fill]) -> float:
    return trio.run(_actor, path, next_fill, 1, BASELINE_FILLS)


def _actor_concurrent_callers(path: Path, next_fill: Callable[[], Fill]) -> float:
    return trio.run(_actor, path, next_fill, CONCURRENT_CALLERS, BATCHED_FILLS)


CASES: dict[str, Callable[[Path, Callable[[], Fill]], float]] = {
    "store: one transaction per fill": _store_one_per_transaction,
    f"store: group commit, {BATCH} fills per transaction": _store_group_commit,
    "actor: one caller awaiting each fill": _actor_one_caller,
    f"actor: {CONCURRENT_CALLERS} concurrent callers (group commit)": _actor_concurrent_callers,
}
SPEEDUPS = (
    (
        "speed-up, store: group commit vs one transaction per fill",
        f"store: group commit, {BATCH} fills per transaction",
        "store: one transaction per fill",
    ),
    (
        "speed-up, actor: concurrent callers vs one caller",
        f"actor: {CONCURRENT_CALLERS} concurrent callers (group commit)",
        "actor: one caller awaiting each fill",
    ),
)


def run(directory: str | Path | None = None, repeats: int = REPEATS) -> list[dict]:
    """Measure and return one row per case plus one per speed-up.

    Rows: ``{"bench", "case", "unit", "median", "min", "max", "runs"}``.
    `directory` is where the scratch journals go (default: next to the real
    journal, so the fsyncs are the ones the daemon will pay).
    """
    base = Path(directory) if directory is not None else journal_path().parent
    base.mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    trade_ids = count()
    next_fill = _fills(trade_ids)
    with tempfile.TemporaryDirectory(prefix="bench-journal-", dir=base) as scratch:
        for repeat in range(repeats):
            for number, (case, measure) in enumerate(CASES.items()):
                path = Path(scratch) / f"journal-{repeat}-{number}.sqlite"
                samples[case].append(measure(path, next_fill))
    rows = [_row(case, "fills/s", values) for case, values in samples.items()]
    for name, fast, slow in SPEEDUPS:
        ratios = [f / s for f, s in zip(samples[fast], samples[slow])]  # paired: same repeat
        rows.append(_row(name, "x", ratios))
    return rows


def _row(case: str, unit: str, values: list[float]) -> dict:
    return {
        "bench": "journal",
        "case": case,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


if __name__ == "__main__":
    from daemon import logs

    logs.sink.set_level(logs.Level.WARNING)
    for row in run():
        print(
            f"{row['case']:<62} {row['median']:>10.1f} {row['unit']:<7} "
            f"(min {row['min']:.1f}, max {row['max']:.1f}, {row['runs']} runs)"
        )
