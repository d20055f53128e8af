"""`python -m bench [NAME ...] [--quick] [--json] [--strict] [--list]`: run benchmarks, print one table.

Each row is one figure: our median, the baseline's median measured in the
same run, the ratio (how many times better ours is; the median of per-repeat
ratios), the min-max spread of ours and of the ratio, and the issue's target
with whether the median meets it. Progress and errors go to stderr, the
table to stdout. The exit status is 0 when every benchmark ran (a missed
target is reported, not fatal, unless --strict), 1 when one failed, 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import timeit
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict

from bench import BENCHMARKS
from bench.common import Row, Stat

JOURNAL_TARGET_RATIO = 5.0


def journal_rows(raw: Sequence[dict], speedups: Sequence[tuple[str, ...]]) -> list[Row]:
    """The journal benchmark's dict rows as table rows.

    It reports each case on its own and then, for each `(…, fast, slow)` in
    its `SPEEDUPS` (in that order), a row of paired per-repeat ratios; one
    table row is made of each such trio.
    """
    cases = {row["case"]: row for row in raw if row["unit"] != "x"}
    ratios = [row for row in raw if row["unit"] == "x"]
    if len(ratios) != len(speedups):
        raise ValueError(f"journal bench gave {len(ratios)} speed-up rows for {len(speedups)} SPEEDUPS entries")
    rows = []
    for pair, ratio in zip(speedups, ratios):
        fast, slow = cases[pair[-2]], cases[pair[-1]]
        rows.append(
            Row(
                figure=f"journal: {fast['case']}",
                unit=fast["unit"],
                ours=_stat(fast),
                baseline=_stat(slow),
                ratio=_stat(ratio),
                target_ratio=JOURNAL_TARGET_RATIO,
                note=f"baseline: {slow['case']}",
            )
        )
    return rows


def _stat(row: dict) -> Stat:
    return Stat(median=row["median"], min=row["min"], max=row["max"], runs=row["runs"])


def _run_journal(quick: bool) -> list[Row]:
    from bench import bench_journal

    repeats = 1 if quick else bench_journal.REPEATS
    return journal_rows(bench_journal.run(repeats=repeats), bench_journal.SPEEDUPS)


# Benchmarks whose run() predates the `run(quick) -> list[Row]` contract.
ADAPTERS: dict[str, Callable[[bool], list[Row]]] = {"journal": _run_journal}


def runner_for(name: str) -> Callable[[bool], list[Row]]:
    if name in ADAPTERS:
        return ADAPTERS[name]
    module = importlib.import_module(f"bench.bench_{name}")
    return module.run


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def number(value: float) -> str:
    """Readable at a glance: thousands separators for big values, 3 significant digits for small ones."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def spread(stat: Stat | None, suffix: str = "") -> str:
    if stat is None:
        return ""
    return f"{number(stat.min)}{suffix} - {number(stat.max)}{suffix}"


def verdict(row: Row) -> str:
    met = row.met
    return "" if met is None else ("ok" if met else "MISS")


def table(rows: Sequence[Row]) -> str:
    header = ("figure", "unit", "ours", "baseline", "ratio", "ours min - max", "ratio min - max", "runs", "target", "")
    lines = [
        (
            row.figure,
            row.unit,
            number(row.ours.median),
            number(row.baseline.median) if row.baseline else "-",
            f"{number(row.ratio.median)}x" if row.ratio else "-",
            spread(row.ours),
            spread(row.ratio, "x"),
            str(row.ours.runs),
            row.target,
            verdict(row),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    numeric = {2, 3, 4, 5, 6, 7}

    def render(cells: Sequence[str]) -> str:
        aligned = (c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(aligned).rstrip()

    out = [render(header), render(["-" * w for w in widths])]
    out += [render(cells) for cells in lines]
    notes = [f"  {row.figure}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def machine() -> str:
    """One line that lets a reader compare absolute numbers across runs and machines."""
    import msgspec
    import trio

    loop_us = min(timeit.repeat("sum(range(1000))", number=500, repeat=5)) / 500 * 1e6
    cpu = _cpu_model() or platform.machine()
    return (
        f"python {platform.python_version()}, trio {trio.__version__}, msgspec {msgspec.__version__}; "
        f"{os.cpu_count()} CPUs ({cpu}); speed probe sum(range(1000)) = {loop_us:.1f} µs"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks and print one table of ours vs baseline.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run, not a measurement")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    _quiet_daemon_logs()
    host = machine()  # probed before the benchmarks heat the machine up
    names = args.names or list(BENCHMARKS)
    rows: list[Row] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            rows += runner_for(name)(args.quick)
        except Exception:
            failed.append(name)
            traceback.print_exc(file=sys.stderr)
            print(f"bench: {name} FAILED (traceback above); the other benchmarks go on", file=sys.stderr)
            continue
        print(f"bench: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started

    if args.json:
        rows_out = [{**asdict(row), "target": row.target, "met": row.met} for row in rows]
        print(json.dumps({"host": host, "quick": args.quick, "seconds": round(total, 1), "rows": rows_out}, indent=2))
    else:
        mode = "quick (smoke run, numbers mean little)" if args.quick else "full"
        print(f"{host}\nmode: {mode}; medians; ratio = how many times better than the baseline, per repeat\n")
        print(table(rows))
        print(f"\n{len(rows)} figures from {len(names) - len(failed)} benchmarks in {total:.1f} s")
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.strict and any(row.met is False for row in rows):
        return 1
    return 0


def _quiet_daemon_logs() -> None:
    """The daemon's own log lines (the journal actor logs at info) go to stderr, warnings only."""
    from daemon import logs

    logs.sink.stream = sys.stderr
    logs.sink.set_level(logs.Level.WARNING)


if __name__ == "__main__":
    sys.exit(main())
