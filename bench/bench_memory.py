"""Memory: the daemon's resident size after start, and how much it grows over a simulated day.

Resident after start. `tradingd run --config config/paper.toml` (the default
paper-trading configuration: the simulated venue with two instruments, every
actor) in a process of its own, with a fresh state directory. The daemon says
READY over the systemd notify protocol (a datagram socket of ours in
``$NOTIFY_SOCKET``, as systemd would pass it), and at that moment its VmRSS is
read from ``/proc/<pid>/status``. The note also gives the size of the same
interpreter with the daemon's modules imported and nothing running, which is
most of it: what the actors hold at start is the rest.

Growth over a day. A whole daemon (every part installed, the simulated venue
in-process as in paper trading) runs in a fresh process under
`trio.testing.MockClock` with autojump, so a day of market passes in about a
minute and a half. Over the day, `EXECUTIONS` executions spread evenly over both
instruments (TWAP crossing the spread, TWAP resting passively, POV at the
mid, 20 minutes each, small sizes, buys and sells in turn) go through the
real path: execution manager, scheduler, risk, journal, gateway, the venue,
fills, positions. The resident size is read after a warm-up of
`WARMUP_HOURS` (the daemon's own windows fill in that time: the execution
manager keeps an hour of mids and trades for its cost estimates) and at the
end; growth is (end - warm) / warm. Every hour the process also records its
resident size and the number of objects the garbage collector tracks, after
a full collection, so a steady climb shows up as a trend (the note gives the
slope over the second half), not just an end point. The process loads
nothing the daemon does not (no pytest, no unittest.mock), so its size at
READY is that of `tradingd run` and the growth is a share of the daemon's
own size, not of a harness.

What the simulation changes, and why. The journal is the real one (same
SQLite store, durable commits, same batching), except that its calls run in
the trio thread instead of a worker thread: autojump moves the clock as soon
as every task waits, and a task waiting on a worker thread counts as
waiting, so with a worker thread the clock would race ahead during every
commit (hours of market would pass inside one fsync) and timeouts would fire
that never fire in production. With a small autojump threshold instead,
every idle moment costs that threshold in real time, and a day has hundreds
of thousands of them. The market moves every `MARKET_STEP` seconds rather
than every second (same trades per day, fewer re-quotes), so that the day fits
in about a minute and a half on a shared machine; log lines are written at warning
level only. Memory a worker thread would hold (its stack, about 8 MiB of
address space, little of it resident) is not in these figures.

``python -m bench.bench_memory [--hours H] [--executions N]`` prints the
hourly samples (resident size, objects, Python allocator blocks, the
journal's size on disk). To see what grows, add ``--diagnose``: the same day
under `tracemalloc`, with the ten source lines and the ten files whose live
allocations grew most between the warm-up and the end (slow: about five
times the normal run).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import Row, Stat, rss_bytes

ROOT = Path(__file__).resolve().parent.parent
PAPER_CONFIG = ROOT / "config" / "paper.toml"
MIB = 1024 * 1024

START_REPEATS = 3
QUICK_START_REPEATS = 1
DAY_HOURS = 24.0
QUICK_HOURS = 1.5
WARMUP_HOURS = 1.0
QUICK_WARMUP_HOURS = 0.5
EXECUTIONS = 50
QUICK_EXECUTIONS = 4
EXECUTION_MINUTES = 20
MARKET_STEP = 10.0  # seconds between market moves (the sim's default is 1)
TARGET_START_MIB = 150.0
TARGET_GROWTH_PCT = 10.0
READY_TIMEOUT = 60.0
DAY_TIMEOUT = 600.0

# The modules `tradingd run` loads for the paper configuration, for the "imported, nothing running" size.
DAEMON_MODULES = (
    "daemon.main",
    "daemon.app",
    "daemon.components",
    "daemon.core_commands",
    "daemon.monitor",
    "daemon.emergency",
    "daemon.plugins",
    "venues.sim.world",
    "venues.sim.adapter",
)


def run(quick: bool = False) -> list[Row]:
    repeats = QUICK_START_REPEATS if quick else START_REPEATS
    hours = QUICK_HOURS if quick else DAY_HOURS
    warmup = QUICK_WARMUP_HOURS if quick else WARMUP_HOURS
    executions = QUICK_EXECUTIONS if quick else EXECUTIONS

    # The day runs in its own process meanwhile: sizes do not depend on how busy the machine is.
    with DayProcess(hours=hours, warmup=warmup, executions=executions) as day_process:
        started = [startup_rss(PAPER_CONFIG) / MIB for _ in range(repeats)]
        imported = imported_rss() / MIB
        day = day_process.result()
    check_day(day, executions)

    warm, end = day["warm_rss"] / MIB, day["end_rss"] / MIB
    ready = day["ready_rss"] / MIB
    growth = (end - warm) / warm * 100
    done = day["states"].get("COMPLETED", 0)
    middle = min(day["samples"], key=lambda sample: abs(sample["hour"] - hours / 2))
    last = day["samples"][-1]
    trend = (last["rss"] - middle["rss"]) / MIB / max(last["hour"] - middle["hour"], 1e-9)
    return [
        Row(
            figure="memory: resident after start (tradingd run, paper config)",
            unit="MiB",
            ours=Stat.of(started),
            higher_is_better=False,
            target_value=TARGET_START_MIB,
            note=(
                f"VmRSS at READY=1; the interpreter with the daemon's modules imported and nothing "
                f"running: {imported:.1f} MiB"
            ),
        ),
        Row(
            figure=f"memory: growth over a simulated {hours:g} h (2 instruments, {executions} executions)",
            unit="%",
            ours=Stat.of([growth]),
            higher_is_better=False,
            target_value=TARGET_GROWTH_PCT,
            note=(
                f"RSS {warm:.1f} MiB after {warmup:g} h of warm-up -> {end:.1f} MiB at {hours:g} h "
                f"({ready:.1f} MiB at READY; {trend:+.2f} MiB/h over the last {last['hour'] - middle['hour']:g} h); "
                f"objects tracked by gc {day['warm_objects']:,} -> "
                f"{day['end_objects']:,}; {done}/{executions} executions completed, {day['fills']} fills; "
                f"MockClock, market step {MARKET_STEP:g} s, {day['seconds']:.0f} s of real time"
            ),
        ),
    ]


def check_day(day: dict[str, Any], executions: int) -> None:
    """A day that did not trade measured nothing: say what went wrong."""
    if day["submitted"] != executions:
        refusals = day["refusals"][:3]
        raise RuntimeError(f"only {day['submitted']} of {executions} executions were accepted: {refusals}")
    unfinished = {s: n for s, n in day["states"].items() if s not in ("COMPLETED", "CANCELLED", "FAILED")}
    if unfinished:
        raise RuntimeError(f"executions still unfinished at the end of the day: {unfinished}")
    if day["fills"] == 0:
        raise RuntimeError("the simulated day had no fill: the executions did not trade")


# ---------------------------------------------------------------------------------------
# Resident size after start: `tradingd run` in a process of its own
# ---------------------------------------------------------------------------------------


def startup_rss(config: Path) -> int:
    """VmRSS of `tradingd run --config CONFIG` (bytes) when it reports READY."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, _notify_socket(Path(tmp)) as (notify, address):
        env = _child_env(tmp) | {"NOTIFY_SOCKET": address}
        with open(Path(tmp) / "daemon.err", "wb") as errors:
            process = subprocess.Popen(
                [sys.executable, "-m", "daemon.main", "run", "--config", str(config)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors,
            )  # fmt: skip
        try:
            _wait_ready(notify, process, Path(tmp) / "daemon.err")
            rss = _vm_rss(process.pid)
        finally:
            _stop(process)
        if process.returncode != 0:
            raise RuntimeError(f"tradingd exited with {process.returncode} after SIGTERM; see its log")
        return rss


def imported_rss() -> int:
    """Resident size of a fresh interpreter that imported the daemon's modules and runs nothing."""
    code = (
        "import importlib, sys\n"
        f"for name in {DAEMON_MODULES!r}: importlib.import_module(name)\n"
        "from bench.common import rss_bytes\n"
        "print(rss_bytes())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_child_env(None), capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        raise RuntimeError(f"importing the daemon's modules failed: {out.stderr[-500:]}")
    return int(out.stdout.strip())


@contextlib.contextmanager
def _notify_socket(directory: Path) -> Iterator[tuple[socket.socket, str]]:
    path = directory / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        yield sock, str(path)
    finally:
        sock.close()


def _wait_ready(notify: socket.socket, process: subprocess.Popen[bytes], errors: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"tradingd did not report READY within {READY_TIMEOUT:g} s")
        if process.poll() is not None:
            tail = errors.read_text(errors="replace")[-500:]
            raise RuntimeError(f"tradingd exited with {process.returncode} before READY: {tail}")
        notify.settimeout(min(left, 0.5))
        try:
            message = notify.recv(4096).decode(errors="replace")
        except TimeoutError:
            continue
        if "READY=1" in message.splitlines():
            return


def _vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB (KiB)
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _child_env(tmp: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"):
        env.pop(key, None)
    if tmp is not None:
        env["STATE_DIRECTORY"] = os.path.join(tmp, "state")
        env["RUNTIME_DIRECTORY"] = os.path.join(tmp, "run")
    return env


# ---------------------------------------------------------------------------------------
# Growth over a day: a whole daemon under MockClock, in a fresh process
# ---------------------------------------------------------------------------------------


class DayProcess:
    """`simulate_day` in a fresh interpreter (so no earlier benchmark's memory counts), as a context manager."""

    def __init__(self, *, hours: float, warmup: float, executions: int, diagnose: bool = False) -> None:
        self.args = ["--hours", str(hours), "--warmup", str(warmup), "--executions", str(executions), "--json"]
        if diagnose:
            self.args.append("--diagnose")
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-memory-day-")
        self.errors = Path(self._tmp.name) / "day.err"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DayProcess:
        with open(self.errors, "wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_memory", *self.args],
                cwd=ROOT, env=_child_env(self._tmp.name), stdout=subprocess.PIPE, stderr=errors,
            )  # fmt: skip
        return self

    def result(self) -> dict[str, Any]:
        assert self.process is not None
        try:
            out, _ = self.process.communicate(timeout=DAY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the simulated day did not finish within {DAY_TIMEOUT:g} s") from None
        if self.process.returncode != 0:
            tail = self.errors.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the simulated day failed (exit {self.process.returncode}): {tail}")
        return json.loads(out)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._tmp.cleanup()


def day_config(market_step: float = MARKET_STEP) -> str:
    """The paper configuration (same risk limits, same venue) with quiet logs and the day's market step."""
    return f"""
[log]
level = "warning"

[risk]
price_collar_bps = 500
max_order_notional = "50000"
max_position = "5"

[venues.sim]
type = "sim"
seed = 1
market_step = {market_step}
"""


def execution_plan(number: int) -> dict[str, Any]:
    """The `exec-submit` arguments of execution `number`: both instruments, three styles, buys and sells in turn."""
    symbol = ("BTCUSDT", "ETHUSDT")[number % 2]
    side = ("BUY", "SELL")[(number // 2) % 2]
    quantity = {"BTCUSDT": "0.02", "ETHUSDT": "0.4"}[symbol]
    common = {"symbol": symbol, "side": side, "quantity": quantity, "duration": f"{EXECUTION_MINUTES}m"}
    kind = number % 3
    if kind == 0:
        return common | {"algo": "twap", "style": "cross", "interval": "1m"}
    if kind == 1:
        return common | {"algo": "twap", "style": "passive", "interval": "2m"}
    return common | {"algo": "pov", "style": "mid", "rate": 0.1}


class _InlineThreads(types.ModuleType):
    """`trio` for the journal module, except that `to_thread.run_sync` calls the function
    in the trio thread (see the module docstring: worker threads and autojump do not mix)."""

    def __init__(self) -> None:
        super().__init__("trio")
        self.to_thread = types.SimpleNamespace(run_sync=_run_inline)

    def __getattr__(self, name: str) -> Any:
        import trio

        return getattr(trio, name)


async def _run_inline(fn: Any, *args: Any, limiter: Any = None, abandon_on_cancel: bool = False) -> Any:
    import trio

    await trio.lowlevel.checkpoint()
    return fn(*args)


def simulate_day(*, hours: float, warmup: float, executions: int, diagnose: bool = False) -> dict[str, Any]:
    """The day, in this process: a dict of what was measured (sizes in bytes)."""
    import trio

    # The class `trio.testing` exports; importing `trio.testing` itself would load pytest,
    # about 9 MiB that are not the daemon's and would dilute the growth.
    from trio._core._mock_clock import MockClock

    import daemon.journal
    from daemon.logs import sink

    if diagnose:
        tracemalloc.start(1)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-day-") as tmp, open(os.devnull, "w") as devnull:
        os.environ.update(STATE_DIRECTORY=os.path.join(tmp, "state"), RUNTIME_DIRECTORY=os.path.join(tmp, "run"))
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):
            os.environ.pop(key, None)
        sink.stream = devnull
        clock = MockClock(autojump_threshold=0)
        started = time.perf_counter()
        daemon.journal.trio = _InlineThreads()  # type: ignore[attr-defined]
        try:
            trio.run(_day, Path(tmp), hours, warmup, executions, diagnose, result, clock=clock)
        finally:
            daemon.journal.trio = trio  # type: ignore[attr-defined]
        result["seconds"] = time.perf_counter() - started
    return result


async def _day(
    directory: Path, hours: float, warmup: float, executions: int, diagnose: bool, out: dict[str, Any]
) -> None:
    import trio

    from daemon import components
    from daemon.app import Daemon
    from daemon.config import parse

    d = Daemon(parse(day_config(), "bench-memory.toml"), socket_path=directory / "run" / "control.sock")
    components.install(d)
    finished = trio.Event()

    async def run_daemon() -> None:
        try:
            await d.run()
        finally:
            finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_daemon)
        with trio.fail_after(600):
            await d.ready.wait()
        out["ready_rss"] = _settled_rss()
        fills = await nursery.start(_count_fills, d)
        begin = trio.current_time()
        spacing = hours * 3600 / executions
        marks = sorted({warmup, *(float(h) for h in range(1, int(hours) + 1)), hours})
        events = [(begin + 60 + n * spacing, "submit", n) for n in range(executions)]
        events += [(begin + h * 3600, "sample", h) for h in marks]
        samples: list[dict[str, Any]] = []
        refusals: list[str] = []
        warm_snapshot = None
        for at, what, arg in sorted(events):
            await trio.sleep_until(at)
            if what == "submit":
                refusal = await _submit(d, arg)
                if refusal:
                    refusals.append(refusal)
                continue
            samples.append(_sample(arg, directory / "state", diagnose))
            if arg == warmup:
                out["warm_rss"], out["warm_objects"] = samples[-1]["rss"], samples[-1]["objects"]
                if diagnose:
                    warm_snapshot = tracemalloc.take_snapshot()
        out["end_rss"], out["end_objects"] = samples[-1]["rss"], samples[-1]["objects"]
        if warm_snapshot is not None:
            end_snapshot = tracemalloc.take_snapshot()
            out["growers"] = _growers(warm_snapshot, end_snapshot, "lineno") + _growers(
                warm_snapshot, end_snapshot, "filename"
            )
        states: dict[str, int] = {}
        for record in await d.services["journal"].executions():
            states[record.state] = states.get(record.state, 0) + 1
        out.update(
            samples=samples, fills=fills[0], submitted=executions - len(refusals), refusals=refusals, states=states
        )
        d.request_stop("benchmark finished")
        with trio.move_on_after(60):
            await finished.wait()
        nursery.cancel_scope.cancel()


async def _count_fills(d: Any, *, task_status: Any) -> None:
    """Count the fills published on the bus; hands out a one-item list holding the count."""
    from daemon import topics

    count = [0]
    with d.bus.subscribe(topics.FILL, maxsize=4096, name="bench-memory") as fills:
        task_status.started(count)
        async for _ in fills:
            count[0] += 1


async def _submit(d: Any, number: int) -> str | None:
    """Start execution `number` as `tradectl exec` would (the manager's submit); why not, if it was refused."""
    import trio

    from actors.executions import SubmitArgs
    from daemon.control import CommandError

    args = SubmitArgs(**execution_plan(number))
    for _ in range(30):  # the first one may come before the first quote
        try:
            await d.services["executions"].submit(args, by="bench")
            return None
        except CommandError as exc:
            if exc.code != "unavailable":
                return str(exc)
            await trio.sleep(1)
    return "no quote to start from after 30 s"


def _sample(hour: float, state: Path, diagnose: bool) -> dict[str, Any]:
    """Sizes now, after a full collection."""
    rss = _settled_rss()
    return {
        "hour": hour,
        "rss": rss,
        "objects": len(gc.get_objects()),
        "python_blocks": sys.getallocatedblocks(),
        "journal_bytes": _journal_bytes(state),
        "traced": tracemalloc.get_traced_memory()[0] if diagnose else None,
    }


def _journal_bytes(directory: Path) -> int:
    """The journal's files on disk (the database, its WAL and shared-memory index)."""
    return sum(f.stat().st_size for f in directory.glob("journal.sqlite*"))


def _settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def _growers(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, key: str, top: int = 10) -> list[str]:
    """The `top` source lines (or files) whose live allocations grew most from `before` to `after`."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
    ]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), key)
    return [f"by {key}: {stat}" for stat in diff[:top]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=DAY_HOURS, help="simulated hours (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=WARMUP_HOURS, help="hours before the first measurement")
    parser.add_argument("--executions", type=int, default=EXECUTIONS)
    parser.add_argument("--diagnose", action="store_true", help="trace allocations; list the lines that grew most")
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON (used by the benchmark)")
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.hours:
        parser.error("--warmup must be positive and shorter than --hours")
    day = simulate_day(hours=args.hours, warmup=args.warmup, executions=args.executions, diagnose=args.diagnose)
    if args.json:
        print(json.dumps(day))
        return 0
    warm, end = day["warm_rss"] / MIB, day["end_rss"] / MIB
    print(f"RSS at READY {day['ready_rss'] / MIB:.1f} MiB, after warm-up {warm:.1f} MiB, at the end {end:.1f} MiB")
    print(f"growth {(end - warm) / warm * 100:+.1f} %; executions {day['states']}; fills {day['fills']}; ", end="")
    print(f"{day['seconds']:.0f} s")
    for sample in day["samples"]:
        traced = "" if sample["traced"] is None else f"  traced {sample['traced'] / MIB:6.2f} MiB"
        print(
            f"  {sample['hour']:>5g} h  {sample['rss'] / MIB:7.1f} MiB  {sample['objects']:>9,} objects  "
            f"{sample['python_blocks']:>9,} blocks  journal {sample['journal_bytes'] / MIB:5.1f} MiB{traced}"
        )
    for line in day.get("growers", []):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
