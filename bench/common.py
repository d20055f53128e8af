"""Timing, statistics and the table row shared by every benchmark.

Absolute numbers on a shared machine drift from one second to the next, so a
benchmark measures its own code and its baseline *in the same run*, and
interleaves them (ours, baseline, ours, baseline, ...) so that a burst of
noise hits both alike. A figure is the median over the repeats, with the min
and max beside it; the ratio is taken per repeat (ours against the baseline
measured right next to it), then summarised the same way.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Stat:
    """Median, min and max of repeated measurements of one quantity."""

    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        if not samples:
            raise ValueError("a statistic needs at least one sample")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


@dataclass(frozen=True)
class Row:
    """One line of the table.

    `ratio` says how many times better ours is than the baseline, whichever
    way "better" points: ours / baseline when higher is better (throughput),
    baseline / ours when lower is better (latency, memory). So a ratio above 1
    is always a win, and `target_ratio` reads the same for every figure.
    `target_value` is an absolute bound on ours (a floor when higher is
    better, a ceiling otherwise). A row without targets is informative only.
    """

    figure: str
    unit: str
    ours: Stat
    baseline: Stat | None = None
    ratio: Stat | None = None
    higher_is_better: bool = True
    target_ratio: float | None = None
    target_value: float | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the medians meet every target; None when the row has none."""
        checks: list[bool] = []
        if self.target_ratio is not None and self.ratio is not None:
            checks.append(self.ratio.median >= self.target_ratio)
        if self.target_value is not None:
            if self.higher_is_better:
                checks.append(self.ours.median >= self.target_value)
            else:
                checks.append(self.ours.median <= self.target_value)
        return all(checks) if checks else None

    @property
    def target(self) -> str:
        """The targets in words, e.g. '>= 1.5x, >= 50000'."""
        parts = []
        if self.target_ratio is not None:
            parts.append(f">= {self.target_ratio:g}x")
        if self.target_value is not None:
            parts.append(f"{'>=' if self.higher_is_better else '<='} {self.target_value:g}")
        return ", ".join(parts)


def compared(
    figure: str,
    unit: str,
    ours: Sequence[float],
    baseline: Sequence[float],
    *,
    higher_is_better: bool = True,
    target_ratio: float | None = None,
    target_value: float | None = None,
    note: str = "",
) -> Row:
    """A row from paired samples: ours[i] and baseline[i] were measured side by side."""
    if len(ours) != len(baseline):
        raise ValueError(f"{figure}: {len(ours)} samples of ours but {len(baseline)} of the baseline; pair them")
    if higher_is_better:
        ratios = [o / b for o, b in zip(ours, baseline)]
    else:
        ratios = [b / o for o, b in zip(ours, baseline)]
    return Row(
        figure=figure,
        unit=unit,
        ours=Stat.of(ours),
        baseline=Stat.of(baseline),
        ratio=Stat.of(ratios),
        higher_is_better=higher_is_better,
        target_ratio=target_ratio,
        target_value=target_value,
        note=note,
    )


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------


def timed_ns(fn: Callable[[], object]) -> int:
    """Wall time of one call in nanoseconds, after a full collection so that
    garbage left by the previous case is not charged to this one."""
    gc.collect()
    started = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - started


def per_second(count: int, elapsed_ns: int) -> float:
    if elapsed_ns <= 0:
        raise ValueError(f"elapsed time must be positive, got {elapsed_ns} ns (timer too coarse?)")
    return count * 1e9 / elapsed_ns


def interleaved(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case once per repeat, in turn; each call returns its own sample."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            samples[name].append(case())
    return samples


def lockstep(
    contenders: dict[str, Callable[[], Callable[[Sequence[T]], object]]],
    items: Sequence[T],
    chunk: int,
    repeats: int,
) -> dict[str, list[int]]:
    """Total ns each contender took to process `items`, once per repeat.

    For pure CPU work the machine's speed drifts within a second on a shared
    host, so a whole pass of ours followed by a whole pass of the baseline can
    land in different weather. Here the contenders take turns on every chunk
    of `chunk` items (the order rotates per chunk), so both see the same
    conditions. `contenders` maps a name to a factory that builds fresh
    state for one repeat and returns the function that handles one chunk.
    """
    if repeats < 1 or chunk < 1:
        raise ValueError(f"repeats and chunk must be at least 1, got {repeats} and {chunk}")
    names = list(contenders)
    chunks = [items[start : start + chunk] for start in range(0, len(items), chunk)]
    totals: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for _ in range(repeats):
        handlers = {name: contenders[name]() for name in names}
        spent = dict.fromkeys(names, 0)
        gc.collect()
        for number, part in enumerate(chunks):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                handle = handlers[name]
                started = clock()
                handle(part)
                spent[name] += clock() - started
        for name in names:
            totals[name].append(spent[name])
    return totals


# ---------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def traced_peak_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    """Run `fn` under tracemalloc; its result and the peak Python allocation
    above what was allocated when it started (tracemalloc slows the code: do
    not time the same call)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, max(peak - before, 0)


@contextlib.contextmanager
def scoped_environ(values: dict[str, str], removed: tuple[str, ...] = ("NOTIFY_SOCKET", "WATCHDOG_USEC")) -> Iterator[None]:
    """Set `values` and drop `removed` in os.environ for the block, then restore both."""
    saved = {key: os.environ.get(key) for key in (*values, *removed)}
    os.environ.update(values)
    for key in removed:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The daemon logs at its usual level (formatting every line costs what it costs), but to /dev/null:
    stdout belongs to the table."""
    from daemon.logs import sink

    saved = sink.stream
    with open(os.devnull, "w") as devnull:
        sink.stream = devnull
        try:
            yield
        finally:
            sink.stream = saved
