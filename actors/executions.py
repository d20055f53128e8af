"""The execution manager: submits, supervises, resumes and reports executions.

It is the root's ``executions`` child. Inside it runs the execution
supervisor (one_for_one), whose children are the schedulers, one per running
execution (`actors.scheduler`). A scheduler is TEMPORARY: a crashed one is
never restarted blindly; it cancels its children and leaves its execution
INTERRUPTED, and an operator resumes it from the journal (`exec resume`) or
cancels it. The same holds after a restart of the daemon: unfinished
executions are rebuilt from the journal and resumed, or marked INTERRUPTED
with their working children cancelled, per ``[executions] on_restart``.

Commands: ``exec-submit`` (validates, estimates the cost, and with
``confirm`` starts the execution), ``exec-list``, ``exec-show``,
``exec-pause``, ``exec-resume``, ``exec-cancel``, ``exec-amend``. Progress is
streamed by the core ``watch`` command (``tradectl watch ID``).

The pre-trade estimate (`actors.algos.impact.pre_trade_estimate`) needs the
instrument's daily volatility and daily volume. Both are measured from the
feed over the last ``estimate_window`` seconds (realised variance of the mid
sampled once a second, and the public volume), scaled to a day of 86 400 s.
With less than ``min_estimate_span`` seconds of data the configured defaults
are used instead (``daily_volatility``; ``daily_volume[SYMBOL]`` in base units,
else ``daily_volume_quote`` converted at the mid). The estimate says which
source each figure came from.

`daemon.services["executions"]` is this manager; the emergency stop calls
`stop_all(reason)`.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import re
import secrets
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio

from actors.algos import ChildStyle, ExecutionParams, ParameterError, Urgency, parse_params
from actors.algos.impact import DAY, CostEstimate, pre_trade_estimate
from actors.algos.volatility import VolatilityConfig
from actors.algos.vwap import profile_from_intraday
from actors.scheduler import (
    CallRefused,
    ExecState,
    ExecutionClosed,
    ExecutionSpec,
    Recovery,
    Scheduler,
    SchedulerSettings,
    wall_clock,
)
from daemon import topics
from daemon.config import register_section
from daemon.control import Caller, CommandError
from daemon.journal import JournalConflict, JournalError
from daemon.logs import describe_error, get_logger
from daemon.messages import CancelOrder, ExecutionStateChanged, MarketTrade, Quote
from daemon.model import Instrument, TradingState, plain
from daemon.supervisor import ChildSpec, Restart, Strategy, Supervisor

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.journal import ExecutionRecord

log = get_logger("executions")

ALGOS = ("twap", "vwap", "iceberg", "pov")
ALGO_OPTIONS: dict[str, tuple[str, ...]] = {
    "twap": ("slices", "interval", "catch_up", "run_ahead"),
    "vwap": ("profile", "expected_volume", "max_participation", "interval", "catch_up", "run_ahead"),
    "iceberg": ("display", "refill_delay", "native", "max_parts"),
    "pov": ("rate", "band"),
}
ALL_ALGO_OPTIONS = tuple(dict.fromkeys(o for opts in ALGO_OPTIONS.values() for o in opts))
# ExecutionParams fields whose operator option has another name
OPTION_NAMES = {"limit_price": "limit", "child_style": "style", "quote_amount": "quote-amount"}
CALL_TIMEOUT = 10.0
STOP_WAIT = 30.0  # a scheduler told to stop by the kill has this long (the kill bounds it further)
SAMPLE_EVERY = 1.0  # mids for the volatility estimate, at most one a second
QUOTE_MAX_AGE = 30.0  # an older quote is used only while its feed reports live (a quiet book)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


class ExecutionsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[executions]`` section.

    on_restart: what a restarted daemon does with executions that were
        running: ``resume`` them from the journal, or ``interrupt`` them
        (their working children are cancelled; `exec resume` continues one).
    child_style / urgency: defaults for submissions that do not say.
    volatility_pause: pause executions while the mid is too jumpy
        (thresholds under ``[executions.volatility]``; a submission may opt out).
    progress_interval: at most one progress event per execution this often;
        progress_log_interval: at most one ``exec.progress`` log line this often.
    checkpoint_interval: a checkpoint at least this often (and after fills).
    risk_timeout: a child the risk sentinel has not answered by then is UNKNOWN.
    cancel_wait: how long a cancelled execution waits for its children's final states.
    max_running: executions that may run at once.
    Estimates: impact_model, risk_aversion (Almgren-Chriss lambda), fee_bps,
        the defaults daily_volatility, daily_volume (base units per symbol),
        daily_volume_quote (quote units, for other symbols), estimate_window
        and min_estimate_span (seconds of feed data to measure from).
    intraday_profile: relative market volume in equal parts of the UTC day
        (e.g. 24 hourly weights); VWAP follows it unless given a profile.
    """

    on_restart: Literal["resume", "interrupt"] = "resume"
    child_style: str = "passive"  # passive | mid | cross
    urgency: str = "medium"  # low | medium | high
    volatility_pause: bool = True
    volatility: VolatilityConfig = VolatilityConfig()
    progress_interval: float = 1.0
    progress_log_interval: float = 60.0
    checkpoint_interval: float = 30.0
    risk_timeout: float = 5.0
    cancel_wait: float = 10.0
    max_running: int = 100
    impact_model: Literal["almgren-chriss", "square-root"] = "almgren-chriss"
    risk_aversion: float = 0.0
    fee_bps: float = 10.0
    daily_volatility: float = 0.03
    daily_volume: dict[str, Decimal] = {}
    daily_volume_quote: float = 50_000_000.0
    estimate_window: float = 3600.0
    min_estimate_span: float = 300.0
    intraday_profile: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key in (
            "progress_interval",
            "progress_log_interval",
            "checkpoint_interval",
            "risk_timeout",
            "cancel_wait",
            "estimate_window",
            "daily_volume_quote",
        ):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ValueError(f"{key}: must be a positive number, got {getattr(self, key)}")
        if self.child_style.upper() not in ChildStyle.__members__:
            raise ValueError(f"child_style: {self.child_style!r} is not a style; use passive, mid or cross")
        if self.urgency.upper() not in Urgency.__members__:
            raise ValueError(f"urgency: {self.urgency!r} is not an urgency; use low, medium or high")
        if self.max_running < 1:
            raise ValueError(f"max_running: must be at least 1, got {self.max_running}")
        if not (math.isfinite(self.daily_volatility) and self.daily_volatility > 0):
            raise ValueError(f"daily_volatility: must be a positive fraction (0.03 is 3%), got {self.daily_volatility}")
        if not (0 <= self.fee_bps < 10_000) or self.risk_aversion < 0:
            raise ValueError("fee_bps must be in [0, 10000) and risk_aversion non-negative")
        if not (0 <= self.min_estimate_span <= self.estimate_window):
            raise ValueError(f"min_estimate_span: must be between 0 and estimate_window ({self.estimate_window:g})")
        for symbol, volume in self.daily_volume.items():
            if not volume > 0:
                raise ValueError(f"daily_volume.{symbol}: must be positive, got {volume}")
        if self.intraday_profile and (
            any(not math.isfinite(w) or w < 0 for w in self.intraday_profile) or sum(self.intraday_profile) <= 0
        ):
            raise ValueError("intraday_profile: weights must be non-negative with a positive sum")
        try:
            self.volatility.validate()
        except ValueError as exc:
            raise ValueError(f"volatility.{exc}") from None

    def scheduler_settings(self) -> SchedulerSettings:
        return SchedulerSettings(
            risk_timeout=self.risk_timeout,
            cancel_wait=self.cancel_wait,
            progress_interval=self.progress_interval,
            progress_log_interval=self.progress_log_interval,
            checkpoint_interval=self.checkpoint_interval,
            volatility=self.volatility,
        )


register_section("executions", ExecutionsConfig)


# ---------------------------------------------------------------------------------------
# Market figures for the pre-trade estimate
# ---------------------------------------------------------------------------------------


class MarketStats:
    """Recent mids and public volume of one instrument (pure: times are passed in)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.quote: Quote | None = None
        self.quote_at = -math.inf
        self._mids: collections.deque[tuple[float, float]] = collections.deque()  # (t, log mid)
        self._trades: collections.deque[tuple[float, Decimal]] = collections.deque()
        self._volume = Decimal(0)
        self.first_seen: float | None = None

    def observe_quote(self, quote: Quote, now: float) -> None:
        if not (0 < quote.bid < quote.ask):
            return
        self.quote = quote
        self.quote_at = now
        if self.first_seen is None:
            self.first_seen = now
        if not self._mids or now - self._mids[-1][0] >= SAMPLE_EVERY:
            self._mids.append((now, math.log(float(quote.mid))))
        self._trim(now)

    def observe_trade(self, trade: MarketTrade, now: float) -> None:
        if self.first_seen is None:
            self.first_seen = now
        self._trades.append((now, trade.qty))
        self._volume += trade.qty
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._mids and self._mids[0][0] < horizon:
            self._mids.popleft()
        while self._trades and self._trades[0][0] < horizon:
            self._volume -= self._trades.popleft()[1]

    def _needed(self, min_span: float) -> float:
        """The history needed before measuring: `min_span`, but never more than the window holds."""
        return max(min(min_span, self.window), SAMPLE_EVERY)

    def span(self, now: float) -> float:
        if self.first_seen is None:
            return 0.0
        return min(now - self.first_seen, self.window)

    def daily_volatility(self, now: float, min_span: float) -> float | None:
        """Realised volatility of the sampled mids, scaled to a day; None with too little data."""
        self._trim(now)
        if len(self._mids) < 3 or self.span(now) < self._needed(min_span):
            return None
        mids = list(self._mids)
        variance = sum((b[1] - a[1]) ** 2 for a, b in zip(mids, mids[1:]))
        elapsed = mids[-1][0] - mids[0][0]
        if elapsed <= 0 or variance <= 0:
            return None
        return math.sqrt(variance / elapsed * DAY)

    def daily_volume(self, now: float, min_span: float) -> float | None:
        self._trim(now)
        span = self.span(now)
        if span < self._needed(min_span) or self._volume <= 0:
            return None
        return float(self._volume) / span * DAY


# ---------------------------------------------------------------------------------------
# Operator input: durations and times
# ---------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)", re.I)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float | int, option: str = "duration") -> float:
    """Seconds from ``90``, ``"90"``, ``"45s"``, ``"30m"``, ``"2h"``, ``"1h30m"``, ``"1d"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ParameterError(option, f"{value!r} is not a duration; use e.g. 90s, 30m, 2h or 1h30m") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ParameterError(option, f"must be a positive duration, got {value!r}")
    return seconds


def parse_time(value: str | float | int, now_wall: float, option: str) -> float:
    """Wall-clock seconds from ``"+30m"`` (from now), an ISO time (UTC unless it says),
    ``"HH:MM[:SS]"`` (UTC, the next such time) or a number of UTC epoch milliseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) / 1000.0
    text = str(value).strip()
    if text.startswith("+"):
        return now_wall + parse_duration(text[1:], option)
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
        today = dt.datetime.fromtimestamp(now_wall, dt.UTC)
        parts = [int(x) for x in text.split(":")]
        try:
            at = today.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0, microsecond=0)
        except ValueError:
            raise ParameterError(option, f"{text!r} is not a time of day") from None
        if at.timestamp() <= now_wall:
            at += dt.timedelta(days=1)
        return at.timestamp()
    try:
        at = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ParameterError(
            option, f"{text!r} is not a time; use +30m, 14:30 (UTC) or 2025-06-01T14:30:00Z"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.timestamp()


def option_name(field: str) -> str:
    """The operator's name of an ExecutionParams field (``limit_price`` -> ``limit``)."""
    return OPTION_NAMES.get(field, field.replace("_", "-"))


def new_exec_id() -> str:
    """Short, human-friendly, and valid inside a client order id (8 hex characters)."""
    return secrets.token_hex(4)


# ---------------------------------------------------------------------------------------
# Command arguments
# ---------------------------------------------------------------------------------------


class SubmitArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``exec-submit``: the parent order, how to work it, and whether to start it (`confirm`)."""

    algo: str
    symbol: str
    side: str
    quantity: Decimal | None = None
    quote_amount: Decimal | None = None
    venue: str | None = None
    duration: str | float | None = None
    start: str | float | None = None
    end: str | float | None = None
    limit: Decimal | None = None
    urgency: str | None = None
    style: str | None = None
    post_only: bool | None = None
    collar_bps: float | None = None
    min_child: Decimal | None = None
    max_child: Decimal | None = None
    max_live_children: int | None = None
    replace_after: str | float | None = None
    size_jitter: float | None = None
    time_jitter: float | None = None
    seed: int | None = None
    finish_at_end: bool | None = None
    end_overrun: str | float | None = None
    max_rejects: int | None = None
    # algorithm options (each applies to the algorithms listed in ALGO_OPTIONS)
    slices: int | None = None
    interval: str | float | None = None
    catch_up: float | None = None
    run_ahead: float | None = None
    profile: list[float] | str | None = None
    expected_volume: Decimal | None = None
    max_participation: float | None = None
    display: Decimal | None = None
    refill_delay: str | float | None = None
    native: bool | None = None
    max_parts: int | None = None
    rate: float | None = None
    band: float | None = None
    volatility_pause: bool | None = None
    confirm: bool = True


class ListArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    all: bool = False
    limit: int = 20


class IdArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    reason: str = ""


class AmendArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``limit``: a price, or ``"none"`` to remove it; ``end``: as for exec-submit."""

    id: str
    limit: str | None = None
    end: str | float | None = None


# ---------------------------------------------------------------------------------------
# The manager
# ---------------------------------------------------------------------------------------


class Executions:
    """The execution manager: actor (`run`) and handle (`daemon.services["executions"]`)."""

    def __init__(self, daemon: Daemon, *, wall: Callable[[], float] = wall_clock) -> None:
        self.daemon = daemon
        self.wall = wall
        self.schedulers: dict[str, Scheduler] = {}
        self.stats: dict[tuple[str, str], MarketStats] = {}
        self.supervisor: Supervisor | None = None
        self._nursery: trio.Nursery | None = None
        self.submitted = 0
        self.recovered = 0
        self.interrupted = 0

    # --- helpers ---------------------------------------------------------------------------
    @property
    def config(self) -> ExecutionsConfig:
        return self.daemon.config.section("executions")  # type: ignore[no-any-return]

    @property
    def journal(self) -> Any:
        journal = self.daemon.services.get("journal")
        if journal is None:
            raise CommandError("unavailable", "the journal is not installed: executions cannot be recorded")
        return journal

    def _instruments(self) -> dict[tuple[str, str], Instrument]:
        return self.daemon.services.get("instruments") or {}

    def running(self) -> list[Scheduler]:
        return [s for s in self.schedulers.values() if not s.done.is_set()]

    # --- the actor -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[Executions] = trio.TASK_STATUS_IGNORED) -> None:
        bus = self.daemon.bus
        self.supervisor = Supervisor(
            "executions",
            [],
            strategy=Strategy.ONE_FOR_ONE,
            intensity=self.daemon.config.supervisor.intensity,
            backoff=self.daemon.config.supervisor.backoff,
            registry=self.daemon.registry,
        )
        self.schedulers = {}
        with (
            bus.subscribe_conflated(topics.QUOTE, key=_instrument_key, name="executions") as quotes,
            bus.subscribe(topics.TRADE, maxsize=8192, name="executions") as trades,
        ):
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read_quotes, quotes)
                nursery.start_soon(self._read_trades, trades)
                await nursery.start(self.supervisor.run)
                await self._recover()
                task_status.started(self)
                await trio.sleep_forever()

    async def _read_quotes(self, sub: Any) -> None:
        window = self.config.estimate_window
        async for quote in sub:
            if isinstance(quote, Quote):
                stats = self.stats.setdefault((quote.venue, quote.symbol), MarketStats(window))
                stats.observe_quote(quote, trio.current_time())

    async def _read_trades(self, sub: Any) -> None:
        window = self.config.estimate_window
        async for trade in sub:
            if isinstance(trade, MarketTrade):
                stats = self.stats.setdefault((trade.venue, trade.symbol), MarketStats(window))
                stats.observe_trade(trade, trio.current_time())

    # --- starting schedulers ---------------------------------------------------------------
    async def _start(self, exec_id: str, spec: ExecutionSpec, recovery: Recovery) -> Scheduler:
        assert self.supervisor is not None and self._nursery is not None
        if self.supervisor.has_child(f"scheduler[{exec_id}]"):
            # a finished scheduler not reaped yet (its name is taken until then)
            await self._reap(exec_id)
        scheduler = Scheduler(
            exec_id,
            spec,
            bus=self.daemon.bus,
            journal=self.daemon.services.get("journal"),
            settings=self.config.scheduler_settings(),
            recovery=recovery,
            wall=self.wall,
        )
        self.schedulers[exec_id] = scheduler
        spec_ = ChildSpec(
            f"scheduler[{exec_id}]",
            scheduler.run,
            restart=Restart.TEMPORARY,
            shutdown_timeout=self.config.cancel_wait + 5.0,
        )
        await self.supervisor.start_child(spec_)
        if not scheduler.started:
            detail = scheduler.error or "it did not report ready"
            raise CommandError("failed", f"the scheduler of {exec_id} did not start ({detail}); see the log (exec={exec_id})")
        self._nursery.start_soon(self._reap_when_done, exec_id, scheduler)
        return scheduler

    async def _reap_when_done(self, exec_id: str, scheduler: Scheduler) -> None:
        await scheduler.done.wait()
        if self.schedulers.get(exec_id) is scheduler:
            await self._reap(exec_id)

    async def _reap(self, exec_id: str) -> None:
        """Take a finished scheduler off the supervisor and out of `status`."""
        name = f"scheduler[{exec_id}]"
        if self.supervisor is not None:
            await self.supervisor.terminate_child(name)
        self.daemon.registry.forget(name)

    # --- recovery --------------------------------------------------------------------------
    async def _recover(self) -> None:
        cfg = self.config
        try:
            records = await self.journal.executions(unfinished=True)
        except (JournalError, CommandError) as exc:
            log.error("recovery.failed", part="executions", error=describe_error(exc))
            return
        for record in records:
            if record.state == ExecState.INTERRUPTED.value or record.exec_id in self.schedulers:
                continue
            try:
                spec = self._spec_of(record)
            except ValueError as exc:
                await self._give_up(record, f"its journaled parameters cannot be read: {exc}")
                continue
            if cfg.on_restart == "interrupt":
                await self._interrupt(record, "the daemon restarted and [executions] on_restart = interrupt")
                continue
            try:
                await self._start(record.exec_id, spec, self._recovery_of(record))
            except Exception as exc:
                log.error("exec.resume_failed", exec=record.exec_id, error=describe_error(exc))
                await self._interrupt(record, f"could not be resumed: {describe_error(exc)}")
                continue
            self.recovered += 1
        if records:
            log.info(
                "executions.recovered",
                unfinished=len(records),
                resumed=self.recovered,
                interrupted=self.interrupted,
                on_restart=cfg.on_restart,
            )

    def _spec_of(self, record: ExecutionRecord) -> ExecutionSpec:
        try:
            spec: ExecutionSpec = record.decode_params(ExecutionSpec)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(str(exc)) from None
        fresh = self._instruments().get((record.venue, record.symbol))
        if fresh is not None and fresh != spec.params.instrument:
            spec = msgspec.structs.replace(spec, params=msgspec.structs.replace(spec.params, instrument=fresh))
        return spec

    @staticmethod
    def _recovery_of(record: ExecutionRecord, **extra: Any) -> Recovery:
        checkpoint = record.checkpoint
        return Recovery(
            state=ExecState(record.state),
            checkpoint_seq=checkpoint.next_seq if checkpoint is not None else 0,
            algo_state=dict(checkpoint.algo_state) if checkpoint is not None else {},
            from_journal=True,
            **extra,
        )

    async def _interrupt(self, record: ExecutionRecord, reason: str) -> None:
        """Mark INTERRUPTED and cancel whatever of it may still work at the venue."""
        cancelled = await self._cancel_journaled_children(record, "execution interrupted")
        await self._record_state(record.exec_id, ExecState.INTERRUPTED, record.state, reason, "executions")
        self.interrupted += 1
        log.warning("exec.interrupted", exec=record.exec_id, reason=reason, cancels=cancelled)

    async def _give_up(self, record: ExecutionRecord, reason: str) -> None:
        await self._cancel_journaled_children(record, "execution failed")
        await self._record_state(record.exec_id, ExecState.FAILED, record.state, reason, "executions")

    async def _cancel_journaled_children(self, record: ExecutionRecord, reason: str) -> int:
        journal = self.journal
        count = 0
        for intent in await journal.intents(record.exec_id):
            latest = await journal.order(intent.client_order_id)
            if latest is not None and latest.status.is_final:
                continue
            await self.daemon.bus.publish(
                topics.orders(intent.venue),
                CancelOrder(venue=intent.venue, symbol=intent.symbol, client_order_id=intent.client_order_id, reason=reason),
            )
            count += 1
        return count

    async def _record_state(self, exec_id: str, state: ExecState, previous: str, reason: str, by: str) -> None:
        change = ExecutionStateChanged(exec_id=exec_id, state=state.value, previous=previous, reason=reason, by=by)
        log.info("exec.state", exec=exec_id, state=state.value, previous=previous, by=by, reason=reason)
        try:
            await self.journal.record_execution_state(change)
        except JournalError as exc:
            log.error("exec.journal_failed", exec=exec_id, record="ExecutionStateChanged", error=describe_error(exc))
        await self.daemon.bus.publish(topics.EXEC_STATE, change)

    # --- the emergency stop ----------------------------------------------------------------
    async def stop_all(self, reason: str) -> int:
        """Stop every scheduler at its next step, sending nothing new; returns how many.

        The kill procedure cancels their working children at the venues itself.
        """
        live = self.running()
        for scheduler in live:
            scheduler.stop(reason)
        with trio.move_on_after(STOP_WAIT):
            for scheduler in live:
                await scheduler.done.wait()
        log.warning("exec.stopped_all", reason=reason, executions=len(live))
        return len(live)

    cancel_all = stop_all

    # --- submitting ------------------------------------------------------------------------
    async def submit(self, args: SubmitArgs, by: str) -> dict[str, Any]:
        cfg = self.config
        if self.daemon.trading_state is TradingState.HALTED:
            raise CommandError("refused", "trading is HALTED: no execution can start; `tradectl resume` first")
        instrument = self._instrument(args.venue, args.symbol)
        algo = args.algo.strip().lower()
        if algo not in ALGOS:
            raise CommandError("bad_args", f"algo: unknown algorithm {args.algo!r}; use {', '.join(ALGOS)}")
        stats = self.stats.get((instrument.venue, instrument.symbol))
        quote = stats.quote if stats is not None else None
        if quote is None:
            raise CommandError(
                "unavailable",
                f"no quote for {instrument.symbol} at {instrument.venue} yet: is its feed live? (`tradectl status`); try again",
            )
        age = trio.current_time() - stats.quote_at if stats is not None else math.inf
        if age > QUOTE_MAX_AGE and not self._feed_live(instrument.venue):
            raise CommandError(
                "unavailable",
                f"the last quote for {instrument.symbol} at {instrument.venue} is {age:.0f}s old: its feed looks stale "
                "(`tradectl venues`); try again when it is live",
            )
        exec_id = self._fresh_id()
        now_mono, now_wall = trio.current_time(), self.wall()
        try:
            request, start_wall = self._request(args, algo, instrument, exec_id, now_wall, quote)
            params = parse_params(self._to_monotonic(request, now_mono, now_wall), instrument)
        except ParameterError as exc:
            raise CommandError("bad_args", f"{option_name(exc.param)}: {exc.message}") from None
        estimate = self.estimate(params, instrument, quote, stats)
        summary = _summary(params, algo)
        if not args.confirm:
            return {"id": None, "confirm": False, "state": None, **summary, "estimate": estimate}
        if len(self.running()) >= cfg.max_running:
            raise CommandError(
                "refused", f"{cfg.max_running} executions are running ([executions] max_running); wait or cancel one"
            )
        decision_price = quote.mid
        spec = ExecutionSpec(
            params=_relative(params),
            start_ms=int(start_wall * 1000),
            decision_price=decision_price,
            volatility_pause=cfg.volatility_pause if args.volatility_pause is None else args.volatility_pause,
            estimate=estimate,
            request={k: v for k, v in msgspec.to_builtins(args).items() if v is not None and k != "confirm"},
        )
        quantity = params.quantity
        if quantity is None:
            assert params.quote_amount is not None
            quantity = instrument.round_qty(params.quote_amount / decision_price)
        try:
            await self.journal.record_execution(
                exec_id,
                algo=algo,
                venue=instrument.venue,
                symbol=instrument.symbol,
                side=params.side,
                quantity=quantity,
                params=spec,
                by=by,
                state=ExecState.PENDING.value,
            )
        except JournalConflict:
            raise CommandError("failed", f"execution id {exec_id} is taken; submit again") from None
        except JournalError as exc:
            raise CommandError("unavailable", f"the execution could not be journaled: {describe_error(exc)}") from None
        self.submitted += 1
        log.info(
            "exec.submitted",
            exec=exec_id,
            algo=algo,
            venue=instrument.venue,
            symbol=instrument.symbol,
            side=params.side.value,
            quantity=params.quantity,
            quote_amount=params.quote_amount,
            limit=params.limit_price,
            duration=params.horizon,
            by=by,
            expected_bps=round(estimate["expected_bps"], 2),
        )
        scheduler = await self._start(exec_id, spec, Recovery())
        snapshot = scheduler.snapshot()
        return {
            **summary,
            "id": exec_id,
            "confirm": True,
            "state": snapshot["state"],
            "filled": snapshot["filled"],
            "avg_price": snapshot["avg_price"],
            "start_ms": spec.start_ms,
            "end_ms": None if params.horizon is None else spec.start_ms + int(params.horizon * 1000),
            "estimate": estimate,
        }

    def _feed_live(self, venue: str) -> bool:
        """A live feed with an old quote is a quiet book, not a dead feed."""
        feed = (self.daemon.services.get("feeds") or {}).get(venue)
        state = getattr(getattr(feed, "state", None), "value", None)
        return state == "live"

    def _fresh_id(self) -> str:
        for _ in range(100):
            exec_id = new_exec_id()
            if exec_id not in self.schedulers:
                return exec_id
        raise CommandError("failed", "could not draw a fresh execution id")  # pragma: no cover

    def _instrument(self, venue: str | None, symbol: str) -> Instrument:
        instruments = self._instruments()
        known = sorted(self.daemon.config.venues) or sorted({v for v, _ in instruments})
        if venue is None:
            if not known:
                raise CommandError("unavailable", "no venue is configured: add a [venues.NAME] table")
            if len(known) > 1:
                raise CommandError("bad_args", f"venue: several venues are configured ({', '.join(known)}); pass --venue")
            venue = known[0]
        elif venue not in known:
            raise CommandError("not_found", f"venue: no venue named {venue!r} (configured: {', '.join(known) or 'none'})")
        symbol = symbol.strip().upper()
        instrument = instruments.get((venue, symbol))
        if instrument is None:
            known = sorted(s for v, s in instruments if v == venue)
            hint = f"; known: {', '.join(known[:20])}" if known else "; its gateway has not loaded instruments yet"
            raise CommandError("not_found", f"symbol: {symbol} is not an instrument at {venue}{hint}")
        return instrument

    def _request(
        self, args: SubmitArgs, algo: str, instrument: Instrument, exec_id: str, now_wall: float, quote: Quote
    ) -> tuple[dict[str, Any], float]:
        """The fields of ExecutionParams (times as wall-clock seconds), from the operator's options."""
        cfg = self.config
        side = args.side.strip().upper()
        if side not in ("BUY", "SELL"):
            raise ParameterError("side", f"{args.side!r} is not a side; use buy or sell")
        out: dict[str, Any] = {"side": side}
        if args.quantity is not None and args.quote_amount is not None:
            raise ParameterError("quantity", "give a base quantity or a quote amount, not both")
        if args.quantity is not None:
            out["quantity"] = args.quantity
        if args.quote_amount is not None:
            out["quote_amount"] = args.quote_amount
        start = now_wall if args.start is None else parse_time(args.start, now_wall, "start")
        if start < now_wall - 1.0:
            raise ParameterError("start", "is in the past; leave it out to start now")
        start = max(start, now_wall)
        out["start"] = start
        if args.duration is not None and args.end is not None:
            raise ParameterError("duration", "give either duration or end, not both")
        if args.duration is not None:
            out["duration"] = parse_duration(args.duration, "duration")
        if args.end is not None:
            out["end"] = parse_time(args.end, now_wall, "end")
        if args.limit is not None:
            out["limit_price"] = args.limit
        out["urgency"] = (args.urgency or cfg.urgency).strip().upper()
        out["child_style"] = (args.style or cfg.child_style).strip().upper()
        if out["urgency"] not in Urgency.__members__:
            raise ParameterError("urgency", f"{args.urgency!r}: use low, medium or high")
        if out["child_style"] not in ChildStyle.__members__:
            raise ParameterError("child_style", f"{args.style!r}: use passive, mid or cross")
        for key in ("post_only", "collar_bps", "min_child", "max_child", "max_live_children", "size_jitter", "time_jitter", "finish_at_end", "max_rejects"):
            value = getattr(args, key)
            if value is not None:
                out[key] = value
        for key in ("replace_after", "end_overrun"):
            value = getattr(args, key)
            if value is not None:
                out[key] = parse_duration(value, key)
        out["seed"] = args.seed if args.seed is not None else int(exec_id, 16)
        out["algo"] = self._algo_options(args, algo, start, out)
        return out, start

    def _algo_options(self, args: SubmitArgs, algo: str, start_wall: float, common: dict[str, Any]) -> dict[str, Any]:
        allowed = ALGO_OPTIONS[algo]
        options: dict[str, Any] = {"kind": algo}
        for key in ALL_ALGO_OPTIONS:
            value = getattr(args, key)
            if value is None:
                continue
            if key not in allowed:
                names = ", ".join(option_name(o) for o in allowed)
                raise ParameterError(key, f"does not apply to {algo.upper()} (its options: {names})")
            if key in ("interval", "refill_delay"):
                value = parse_duration(value, key)
            options[key] = value
        if algo == "vwap":
            options["profile"] = self._profile(args.profile, start_wall, common)
        return options

    def _profile(self, given: list[float] | str | None, start_wall: float, common: dict[str, Any]) -> list[float]:
        if isinstance(given, list):
            return given
        name = (given or ("intraday" if self.config.intraday_profile else "flat")).strip().lower()
        if name == "flat":
            return []
        if name != "intraday":
            raise ParameterError("profile", f"{given!r}: give weights (e.g. 1,2,1), flat, or intraday")
        if not self.config.intraday_profile:
            raise ParameterError("profile", "no [executions] intraday_profile is configured; give weights or flat")
        duration = common.get("duration")
        if duration is None and "end" in common:
            duration = common["end"] - start_wall
        if duration is None or duration <= 0:
            return []  # validation names the missing horizon
        return list(profile_from_intraday(self.config.intraday_profile, start_wall, duration))

    @staticmethod
    def _to_monotonic(request: dict[str, Any], now_mono: float, now_wall: float) -> dict[str, Any]:
        out = dict(request)
        out["start"] = now_mono + (request["start"] - now_wall)
        if "end" in out:
            out["end"] = now_mono + (request["end"] - now_wall)
        return out

    def estimate(
        self, params: ExecutionParams, instrument: Instrument, quote: Quote, stats: MarketStats | None
    ) -> dict[str, Any]:
        """The pre-trade cost estimate, with where its market figures came from."""
        cfg = self.config
        now = trio.current_time()
        price = float(quote.mid)
        spread_bps = float((quote.ask - quote.bid) / quote.mid) * 10_000
        volatility = stats.daily_volatility(now, cfg.min_estimate_span) if stats is not None else None
        volatility_source = "feed" if volatility is not None else "config"
        if volatility is None:
            volatility = cfg.daily_volatility
        volume = stats.daily_volume(now, cfg.min_estimate_span) if stats is not None else None
        volume_source = "feed"
        if volume is None:
            configured = cfg.daily_volume.get(instrument.symbol)
            if configured is not None:
                volume, volume_source = float(configured), "config"
            else:
                volume, volume_source = cfg.daily_volume_quote / price, "default"
        model = cfg.impact_model
        try:
            est = pre_trade_estimate(
                params,
                price=price,
                daily_volatility=volatility,
                daily_volume=volume,
                spread_bps=spread_bps,
                fee_bps=cfg.fee_bps,
                model=model,
                risk_aversion=cfg.risk_aversion,
            )
        except ValueError:
            # e.g. Almgren-Chriss with a zero spread or too few slices: the square-root model always works
            est = pre_trade_estimate(
                params,
                price=price,
                daily_volatility=volatility,
                daily_volume=volume,
                spread_bps=spread_bps,
                fee_bps=cfg.fee_bps,
                model="square-root",
            )
        return _estimate_view(est, instrument, volatility, volatility_source, volume, volume_source, spread_bps)

    # --- finding executions ----------------------------------------------------------------
    async def _record(self, exec_id: str) -> ExecutionRecord:
        exec_id = exec_id.strip().lower()
        if not exec_id:
            raise CommandError("bad_args", "id: give an execution id (see `tradectl exec list`)")
        record = await self.journal.execution(exec_id)
        if record is not None:
            return record
        if len(exec_id) >= 3:
            matches = [r for r in await self.journal.executions() if r.exec_id.startswith(exec_id)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise CommandError("bad_args", f"id: {exec_id} matches {len(matches)} executions; give more characters")
        raise CommandError("not_found", f"no execution {exec_id}; see `tradectl exec list`")

    def _live(self, exec_id: str) -> Scheduler | None:
        scheduler = self.schedulers.get(exec_id)
        if scheduler is None or scheduler.done.is_set() or not scheduler.running:
            return None
        return scheduler

    async def show(self, exec_id: str) -> dict[str, Any]:
        record = await self._record(exec_id)
        scheduler = self._live(record.exec_id)
        view = scheduler.snapshot() if scheduler is not None else _record_view(record)
        view.update(
            by=record.by,
            created_ms=record.created_ms,
            estimate=_spec_estimate(record),
            transitions=[
                {
                    "state": e.event.state,
                    "previous": e.event.previous,
                    "reason": e.event.reason,
                    "by": e.event.by,
                    "at_ms": e.recorded_ms,
                }
                for e in await self.journal.execution_transitions(record.exec_id)
            ],
        )
        return view

    async def list_executions(self, args: ListArgs) -> dict[str, Any]:
        records = await self.journal.executions()
        rows = []
        for record in records:
            scheduler = self._live(record.exec_id)
            rows.append(scheduler.snapshot() if scheduler is not None else _record_view(record))
            rows[-1]["created_ms"] = record.created_ms
        if not args.all:
            unfinished = [r for r in rows if not ExecState(r["state"]).is_final]
            finished = [r for r in rows if ExecState(r["state"]).is_final][-max(args.limit, 0) :] if args.limit else []
            keep = {id(r) for r in unfinished + finished}
            rows = [r for r in rows if id(r) in keep]
        columns = ("id", "state", "algo", "venue", "symbol", "side", "quantity", "quote_amount", "filled", "filled_pct", "avg_price", "slippage_bps", "created_ms")
        return {"executions": [{k: r.get(k) for k in columns} for r in rows], "total": len(records)}

    # --- operator calls --------------------------------------------------------------------
    async def call(self, kind: str, args: IdArgs, by: str) -> dict[str, Any]:
        record = await self._record(args.id)
        exec_id = record.exec_id
        scheduler = self._live(exec_id)
        state = ExecState(record.state) if scheduler is None else scheduler.state
        if scheduler is None:
            if state is ExecState.INTERRUPTED and kind in ("resume", "cancel"):
                return await self._wake_interrupted(record, kind, by, args.reason)
            if state.is_final:
                raise CommandError("refused", f"execution {exec_id} is {state.value}: nothing to {kind}")
            raise CommandError("unavailable", f"execution {exec_id} is {state.value} but has no running scheduler; see the log")
        if kind == "resume" and self.daemon.trading_state is TradingState.HALTED:
            raise CommandError("refused", "trading is HALTED: `tradectl resume` first, then resume the execution")
        try:
            if kind == "pause":
                return await scheduler.pause(by, args.reason, CALL_TIMEOUT)
            if kind == "resume":
                return await scheduler.resume(by, args.reason, CALL_TIMEOUT)
            return await scheduler.cancel(by, args.reason, CALL_TIMEOUT)
        except ExecutionClosed as exc:
            raise CommandError("refused", str(exc)) from None
        except CallRefused as exc:
            raise CommandError("refused", str(exc)) from None

    async def _wake_interrupted(self, record: ExecutionRecord, kind: str, by: str, reason: str) -> dict[str, Any]:
        """Resume an INTERRUPTED execution from the journal, or cancel it (its report is written then)."""
        if kind == "resume" and self.daemon.trading_state is TradingState.HALTED:
            raise CommandError("refused", "trading is HALTED: `tradectl resume` first, then resume the execution")
        try:
            spec = self._spec_of(record)
        except ValueError as exc:
            raise CommandError("failed", f"execution {record.exec_id} cannot be rebuilt: {exc}") from None
        extra = {"resume_by": by} if kind == "resume" else {"cancel_by": by, "cancel_reason": reason or f"cancelled by {by}"}
        scheduler = await self._start(record.exec_id, spec, self._recovery_of(record, **extra))
        log.info("exec.woken", exec=record.exec_id, action=kind, by=by)
        if kind == "cancel":
            with trio.move_on_after(self.config.cancel_wait + CALL_TIMEOUT):
                await scheduler.done.wait()
        return scheduler.snapshot()

    async def amend(self, args: AmendArgs, by: str) -> dict[str, Any]:
        record = await self._record(args.id)
        scheduler = self._live(record.exec_id)
        if scheduler is None:
            raise CommandError("refused", f"execution {record.exec_id} is {record.state}: only a running execution can be amended")
        if args.limit is None and args.end is None:
            raise CommandError("bad_args", "give --limit and/or --end")
        changes: dict[str, Any] = {}
        if args.limit is not None:
            text = args.limit.strip().lower()
            if text in ("none", "off", ""):
                changes["limit_price"] = None
            else:
                try:
                    changes["limit_price"] = Decimal(text)
                except InvalidOperation:
                    raise CommandError("bad_args", f"limit: {args.limit!r} is not a price (or 'none' to remove it)") from None
        if args.end is not None:
            now_wall = self.wall()
            try:
                end_wall = parse_time(args.end, now_wall, "end")
            except ParameterError as exc:
                raise CommandError("bad_args", f"end: {exc.message}") from None
            if end_wall <= now_wall:
                raise CommandError("bad_args", "end: must be in the future")
            changes["end"] = trio.current_time() + (end_wall - now_wall)
        try:
            return await scheduler.amend(by, changes, CALL_TIMEOUT)
        except ParameterError as exc:
            raise CommandError("bad_args", f"{option_name(exc.param)}: {exc.message}") from None
        except (ExecutionClosed, CallRefused) as exc:
            raise CommandError("refused", str(exc)) from None

    # --- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        running = self.running()
        by_state: dict[str, int] = {}
        for s in running:
            by_state[s.state.value] = by_state.get(s.state.value, 0) + 1
        return {
            "running": len(running),
            "states": by_state,
            "ids": [s.exec_id for s in running][:20],
            "submitted": self.submitted,
            "recovered": self.recovered,
            "interrupted": self.interrupted,
        }


# ---------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------


def _relative(params: ExecutionParams) -> ExecutionParams:
    """The parameters with times relative to the start, as journaled."""
    return msgspec.structs.replace(params, start=0.0, end=None, duration=params.horizon)


def _summary(params: ExecutionParams, algo: str) -> dict[str, Any]:
    return {
        "algo": algo,
        "venue": params.venue,
        "symbol": params.symbol,
        "side": params.side.value,
        "quantity": None if params.quantity is None else str(params.quantity),
        "quote_amount": None if params.quote_amount is None else str(params.quote_amount),
        "limit_price": None if params.limit_price is None else str(params.limit_price),
        "duration": params.horizon,
        "urgency": params.urgency.value,
        "style": params.child_style.value,
        "base": params.instrument.base,
        "quote": params.instrument.quote,
    }


def _estimate_view(
    est: CostEstimate,
    instrument: Instrument,
    volatility: float,
    volatility_source: str,
    volume: float,
    volume_source: str,
    quoted_spread_bps: float,
) -> dict[str, Any]:
    view = msgspec.to_builtins(est)
    view.pop("trajectory", None)
    view.update(
        currency=instrument.quote,
        daily_volatility=volatility,
        volatility_source=volatility_source,
        daily_volume=volume,
        volume_source=volume_source,
        quoted_spread_bps=quoted_spread_bps,
    )
    return view


def _spec_estimate(record: ExecutionRecord) -> dict[str, Any] | None:
    try:
        raw = msgspec.json.decode(record.params)
    except msgspec.DecodeError:
        return None
    return raw.get("estimate") if isinstance(raw, dict) else None


def _record_view(record: ExecutionRecord) -> dict[str, Any]:
    """What `exec show` / `exec list` say about an execution without a running scheduler."""
    try:
        raw = msgspec.json.decode(record.params)
    except msgspec.DecodeError:
        raw = {}
    params = raw.get("params", {}) if isinstance(raw, dict) else {}
    state = dict(record.checkpoint.algo_state) if record.checkpoint is not None else {}
    report = state.get("report") if isinstance(state.get("report"), dict) else None
    filled = record.checkpoint.filled_qty if record.checkpoint is not None else Decimal(0)
    avg = record.checkpoint.avg_price if record.checkpoint is not None else None
    quote_amount = params.get("quote_amount")
    filled_pct = None
    if quote_amount is not None and state.get("filled_quote") is not None:
        filled_pct = float(Decimal(str(state["filled_quote"])) / Decimal(str(quote_amount))) * 100
    elif params.get("quantity") is not None and Decimal(str(params["quantity"])) > 0:
        filled_pct = float(filled / Decimal(str(params["quantity"]))) * 100
    slippage = report.get("slippage_bps") if report else None
    if slippage is None and avg is not None and state.get("arrival_mid"):
        arrival = float(state["arrival_mid"])
        slippage = record.side.sign * (float(avg) - arrival) / arrival * 10_000
    start_ms = raw.get("start_ms") if isinstance(raw, dict) else None
    offset = state.get("end_offset", params.get("duration"))
    return {
        "id": record.exec_id,
        "state": record.state,
        "algo": record.algo,
        "venue": record.venue,
        "symbol": record.symbol,
        "side": record.side.value,
        "quantity": _plain_text(params.get("quantity")),
        "quote_amount": _plain_text(quote_amount),
        "limit_price": _plain_text(state.get("limit_price", params.get("limit_price"))),
        "filled": plain(filled),
        "filled_pct": filled_pct,
        "avg_price": None if avg is None else float(avg),
        "slippage_bps": slippage,
        "arrival_mid": state.get("arrival_mid"),
        "decision_price": state.get("decision_price", raw.get("decision_price") if isinstance(raw, dict) else None),
        "start_ms": start_ms,
        "end_ms": None if start_ms is None or offset is None else int(start_ms + float(offset) * 1000),
        "updated_ms": record.updated_ms,
        "report": report,
    }


def _instrument_key(msg: Any) -> Any:
    return (getattr(msg, "venue", None), getattr(msg, "symbol", None))


def _plain_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return plain(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


# ---------------------------------------------------------------------------------------
# Commands and installation
# ---------------------------------------------------------------------------------------


def _register_commands(daemon: Daemon, manager: Executions) -> None:
    c = daemon.commands

    async def submit(args: SubmitArgs, caller: Caller) -> dict[str, Any]:
        return await manager.submit(args, caller.user)

    async def list_cmd(args: ListArgs, caller: Caller) -> dict[str, Any]:
        return await manager.list_executions(args)

    async def show(args: IdArgs, caller: Caller) -> dict[str, Any]:
        return await manager.show(args.id)

    def state_call(kind: str) -> Any:
        async def handler(args: IdArgs, caller: Caller) -> dict[str, Any]:
            return await manager.call(kind, args, caller.user)

        return handler

    async def amend(args: AmendArgs, caller: Caller) -> dict[str, Any]:
        return await manager.amend(args, caller.user)

    c.add("exec-submit", submit, SubmitArgs, help="estimate an execution's cost; with confirm, start it", audited=True)
    c.add("exec-list", list_cmd, ListArgs, help="executions: running ones and the latest finished")
    c.add("exec-show", show, IdArgs, help="one execution: progress, report, history")
    c.add("exec-pause", state_call("pause"), IdArgs, help="pause an execution (its working children are cancelled)", audited=True)
    c.add("exec-resume", state_call("resume"), IdArgs, help="resume a paused or interrupted execution", audited=True)
    c.add("exec-cancel", state_call("cancel"), IdArgs, help="cancel an execution and its working children", audited=True)
    c.add("exec-amend", amend, AmendArgs, help="change a running execution's limit price or end time", audited=True)


def install(daemon: Daemon, *, wall: Callable[[], float] = time.time) -> Executions:
    """Add the execution manager (and its supervisor) after the venues, and its commands."""
    manager = Executions(daemon, wall=wall)
    daemon.services["executions"] = manager
    daemon.child_factories.append(
        lambda d: [ChildSpec("executions", manager.run, restart=Restart.PERMANENT, shutdown_timeout=10.0, start_timeout=60.0)]
    )
    daemon.status_extras["executions"] = manager.status
    _register_commands(daemon, manager)
    return manager


__all__ = [
    "ALGOS",
    "ExecutionsConfig",
    "Executions",
    "MarketStats",
    "SubmitArgs",
    "install",
    "new_exec_id",
    "option_name",
    "parse_duration",
    "parse_time",
]
