"""Benchmarks of the daemon's hot paths, each measured side by side with a baseline.

Run them all with ``python -m bench`` (or ``make bench``); name some to run a
subset (``python -m bench bus feed``); ``--quick`` runs tiny sizes once, to
prove that everything still runs (the numbers then mean little).

Adding a benchmark
------------------
Write ``bench/bench_<name>.py`` with::

    def run(quick: bool = False) -> list[bench.common.Row]: ...

and add ``<name>`` to `BENCHMARKS` below; that tuple is the only list of
benchmarks, and its order is the order of the table. The contract:

- Measure ours and the baseline in the same process, interleaved (ours,
  baseline, ours, baseline, ...), `repeats` times, and build each row with
  `bench.common.compared(...)` from the paired samples, so that the ratio is
  taken per repeat and noise on this shared machine hits both sides alike.
  A figure with no baseline (an absolute latency, say) is a `Row` with only
  `ours` and a `target_value`.
- A throughput is higher-is-better; a latency or a size is lower-is-better
  (`higher_is_better=False`), and the ratio is then baseline / ours, so a
  ratio above 1 is always a win.
- Put the targets of the issue on the row (`target_ratio`, `target_value`)
  so the table says whether they hold.
- Check that ours and the baseline did the same work before timing them
  (same result, same count), and raise if not: a fast wrong answer is not a
  figure.
- Full mode may take at most about a minute (the whole run must stay well
  under five on a 2-core machine); quick mode a second or two.
- Never print: the runner owns stdout. No timing assertions anywhere: the
  smoke test only checks that each benchmark runs and gives positive numbers.
"""

BENCHMARKS: tuple[str, ...] = (
    "bus",  # issue figure 1: messages/s through the actor bus
    "feed",  # figure 2: Binance depth frames/s decoded and applied to the book
    "tick",  # figure 3: market-data frame to signed order request, p50/p99 under 10 000 frames/s
    "kill",  # figure 4: tradectl kill to zero open orders, and the overhead above the venues' round trips
    "journal",  # figure 5: fills/s made durable (its run() predates the contract; adapted in __main__)
    "memory",  # figure 6: resident size after start, growth over a simulated day
)
