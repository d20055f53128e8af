"""scheduler[<exec-id>]: the actor that carries out one execution.

The algorithm (`actors.algos`) decides; this shell feeds it and does what it
says. It owns one `ChildLedger` (every child sent and what came back), the
market as the algorithm needs it (the quote, the public volume since the
start) and the execution's state:

    PENDING -> RUNNING <-> PAUSED -> COMPLETED | CANCELLED | FAILED
    (INTERRUPTED: not running; an operator resumes or cancels it)

Every transition is journaled, logged (``exec.state``) and published on
``topics.EXEC_STATE``.

What it listens to: quotes of its instrument (conflated), public trades
(lossless: volume since the start), its own order updates and fills (matched
by the client order id prefix of the execution), operator calls made through
its handle, and time (the decision's ``wake_at``).

What it sends: child orders only through the risk sentinel
(``bus.request(topics.RISK_SUBMIT, ...)``: an `Approval`, a `Denial`, or no
answer in time, which leaves the child UNKNOWN until the venue's updates
settle it), and cancels straight to the gateway's inbox. A child is recorded
in the ledger before it is offered to risk and a cancel before it is
published, so the next decision never asks for the same thing twice.

Pausing (operator, or the volatility guard when the mid is too jumpy)
cancels the working children and asks the algorithm nothing until resumed;
the schedule then catches up within its bounds. Cancelling, and finishing,
wait a bounded time for the children's final states. The emergency stop
(`stop`) ends the execution at its next step without sending anything: the
kill procedure cancels every order at the venues itself.

Progress goes out on ``topics.EXEC_PROGRESS`` at a bounded rate; the
checkpoint (``journal.checkpoint``) is written after fills and
periodically, and holds what a restarted daemon needs to resume. The final
report (implementation shortfall and child statistics) is journaled in the
last checkpoint, then logged (``exec.report``).

Times: the parameters hold monotonic times of this process. The journal
holds wall-clock anchors instead (`ExecutionSpec.start_ms` and the end as an
offset from it), which a resumed scheduler maps onto its own clock.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import trio

from actors.algos import (
    Algorithm,
    ChildLedger,
    Decision,
    ExecutionParams,
    Finish,
    MarketState,
    ParameterError,
    amend,
    make_algorithm,
)
from actors.algos.analytics import ExecutionReport, final_report, progress
from actors.algos.ledger import UnknownChild
from actors.algos.volatility import GuardVerdict, VolatilityConfig, VolatilityGuard
from daemon import topics
from daemon.bus import Bus, BusClosed, NoHandler, RequestTimeout
from daemon.logs import describe_error, get_logger
from daemon.messages import (
    Approval,
    CancelOrder,
    Denial,
    ExecutionCheckpoint,
    ExecutionProgress,
    ExecutionStateChanged,
    Fill,
    MarketTrade,
    OrderIntent,
    OrderUpdate,
    Quote,
)
from daemon.model import OrderStatus, client_order_id, plain

log = get_logger("scheduler")

ZERO = Decimal(0)
STATE_VERSION = 1
JOURNAL_TIMEOUT = 5.0  # a state change or checkpoint the journal does not take by then is logged, not retried
SHUTDOWN_CHECKPOINT = 2.0  # bounded, shielded: the last checkpoint when the daemon stops
CRASH_CLEANUP = 3.0
CHECKPOINT_MIN_GAP = 1.0  # fills in a burst share one checkpoint
GUARD_TICK = 1.0  # while paused for volatility, look again this often (the window slides)
UNKNOWN_GRACE = 60.0  # see `_settle_unknown`
FILL_WAIT = 5.0
WIND_DOWN_WAITS = 3  # see `_bound_wind_down`  # at the end, how long to wait for fills the order updates already reported


class ExecState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"

    @property
    def is_final(self) -> bool:
        return self in (ExecState.COMPLETED, ExecState.CANCELLED, ExecState.FAILED)


class ExecutionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An execution as journaled at submission (the journal's ``params``).

    `params` carries times relative to the start: ``start = 0`` and the
    horizon as ``duration``. `start_ms` anchors the start on the wall clock;
    a scheduler maps it onto its own monotonic clock. `decision_price` is the
    mid when the operator submitted (the shortfall's paper price).
    """

    params: ExecutionParams
    start_ms: int
    decision_price: Decimal | None = None
    volatility_pause: bool = True
    estimate: dict[str, Any] = {}
    request: dict[str, Any] = {}


class SchedulerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The `[executions]` settings one scheduler uses (see actors.executions)."""

    risk_timeout: float = 5.0
    cancel_wait: float = 10.0
    progress_interval: float = 1.0
    progress_log_interval: float = 60.0
    checkpoint_interval: float = 30.0
    volatility: VolatilityConfig = VolatilityConfig()


class ExecutionClosed(Exception):
    """A call to an execution whose scheduler is no longer running."""


class CallRefused(Exception):
    """The scheduler refused an operator call; the message says why."""


@dataclass
class _Call:
    """An operator's request to the scheduler, answered from its own loop."""

    kind: str  # pause | resume | cancel | amend
    by: str
    reason: str = ""
    changes: dict[str, Any] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: Exception | None = None

    def answer(self, result: Any = None, error: Exception | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


@dataclass
class Recovery:
    """How a scheduler starts: afresh, or rebuilt from the journal."""

    state: ExecState = ExecState.PENDING
    checkpoint_seq: int = 0  # `next_seq` of the latest checkpoint
    algo_state: dict[str, Any] = field(default_factory=dict)
    from_journal: bool = False
    resume_by: str = ""  # an operator resuming an INTERRUPTED execution
    cancel_by: str = ""  # an operator cancelling an INTERRUPTED execution
    cancel_reason: str = ""


def wall_clock() -> float:
    return time.time()


class Scheduler:
    """One execution: the actor (`run`) and its handle (pause, resume, cancel, amend, stop, snapshot)."""

    def __init__(
        self,
        exec_id: str,
        spec: ExecutionSpec,
        *,
        bus: Bus,
        journal: Any,
        settings: SchedulerSettings,
        recovery: Recovery | None = None,
        wall: Callable[[], float] = wall_clock,
    ) -> None:
        self.exec_id = exec_id
        self.spec = spec
        self.bus = bus
        self.journal = journal
        self.settings = settings
        self.recovery = recovery or Recovery()
        self.wall = wall
        self.prefix = client_order_id(exec_id, 0)[:-1]  # every child's client order id starts so
        self.state = self.recovery.state
        self.pause_cause: str | None = self.recovery.algo_state.get("pause_cause")
        self.reason = ""
        self.params: ExecutionParams = self._params_on_this_clock()
        self.algo: Algorithm = make_algorithm(self.params)
        self.ledger = ChildLedger(exec_id, self.params)
        self.guard = VolatilityGuard(settings.volatility) if spec.volatility_pause else None
        state = self.recovery.algo_state
        self.decision_price: Decimal | None = _dec(state.get("decision_price")) or spec.decision_price
        self.arrival_mid: Decimal | None = _dec(state.get("arrival_mid"))
        self.end_mid: Decimal | None = None
        self.volume: Decimal = _dec(state.get("volume")) or ZERO
        self.volume_notional: Decimal = _dec(state.get("volume_notional")) or ZERO
        self.bid: Decimal | None = None
        self.ask: Decimal | None = None
        self.started_ms: int | None = state.get("started_ms")
        self.ended_ms: int | None = None
        self.note = ""
        self.report: ExecutionReport | None = None
        self.done = trio.Event()
        self.running = False
        self.started = False  # reported ready at least once (a start that failed leaves it False)
        self.error: str | None = None
        self._calls: list[_Call] = []
        self._stop_reason: str | None = None
        self._cancel: _Call | None = None
        self._cancel_deadline: float | None = None
        self._verdict: GuardVerdict | None = None
        self._changed = trio.Event()
        self._wake_at: float | None = None
        self._last_progress = -math.inf
        self._last_progress_log = -math.inf
        self._last_checkpoint = -math.inf
        self._checkpointed = (ZERO, 0)  # (filled, next_seq) at the last checkpoint
        self._final_sent = False
        self._unknown_since: dict[str, float] = {}
        self._winding_since: float | None = None
        if self.recovery.cancel_by:
            self._calls.append(_Call("cancel", self.recovery.cancel_by, self.recovery.cancel_reason))

    # =======================================================================================
    # Clock mapping
    # =======================================================================================

    def _params_on_this_clock(self) -> ExecutionParams:
        """The spec's parameters with start/end on trio's clock; amendments from the checkpoint applied."""
        template = self.spec.params
        state = self.recovery.algo_state
        now_mono, now_wall = trio.current_time(), self.wall()
        start = now_mono + (self.spec.start_ms / 1000.0 - now_wall)
        offset = state.get("end_offset", template.duration)
        limit = template.limit_price
        if "limit_price" in state:
            limit = _dec(state["limit_price"])
        return msgspec.structs.replace(
            template, start=start, end=None if offset is None else start + float(offset), duration=None, limit_price=limit
        )

    def _mono_to_ms(self, t: float) -> int:
        return int((self.wall() + (t - trio.current_time())) * 1000)

    @property
    def end_offset(self) -> float | None:
        end = self.params.end_time
        return None if end is None else end - self.params.start

    # =======================================================================================
    # The handle
    # =======================================================================================

    async def pause(self, by: str, reason: str = "", timeout: float = 10.0) -> dict[str, Any]:
        return await self._ask(_Call("pause", by, reason), timeout)

    async def resume(self, by: str, reason: str = "", timeout: float = 10.0) -> dict[str, Any]:
        return await self._ask(_Call("resume", by, reason), timeout)

    async def cancel(self, by: str, reason: str = "", timeout: float = 10.0) -> dict[str, Any]:
        """Ask for the cancel; the answer comes once the cancels are sent (not once they are confirmed)."""
        return await self._ask(_Call("cancel", by, reason), timeout)

    async def amend(self, by: str, changes: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """`changes`: ``limit_price`` (Decimal or None to remove it) and/or ``end`` (trio time)."""
        return await self._ask(_Call("amend", by, changes=changes), timeout)

    def stop(self, reason: str) -> None:
        """The emergency stop: end at the next step, sending nothing (not even cancels)."""
        if self._stop_reason is None:
            self._stop_reason = reason or "emergency stop"
        self._poke()

    async def _ask(self, call: _Call, timeout: float) -> dict[str, Any]:
        if self.done.is_set() or not self.running:
            raise ExecutionClosed(f"execution {self.exec_id} is {self.state.value}: its scheduler is not running")
        self._calls.append(call)
        self._poke()
        with trio.move_on_after(timeout):
            await call.done.wait()
        if not call.done.is_set():
            raise CallRefused(f"execution {self.exec_id} did not answer within {timeout:g}s; try again")
        if call.error is not None:
            raise call.error
        return call.result if call.result is not None else self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """What `exec show` prints for a running execution."""
        p = self.params
        out = msgspec.to_builtins(self.progress_message(trio.current_time()))
        out.pop("type", None)
        out["id"] = out.pop("exec_id")
        for key in ("quantity", "quote_amount", "filled", "filled_quote"):
            value = getattr(self.ledger, key, None) if key.startswith("filled") else getattr(p, key)
            out[key] = None if value is None else plain(value)
        out.update(
            limit_price=None if p.limit_price is None else plain(p.limit_price),
            urgency=p.urgency.value,
            style=p.child_style.value,
            start_ms=self.spec.start_ms,
            end_ms=None if p.end_time is None else self._mono_to_ms(p.end_time),
            started_ms=self.started_ms,
            pause_cause=self.pause_cause,
            reason=self.reason,
            arrival_mid=_str(self.arrival_mid),
            decision_price=_str(self.decision_price),
            children=msgspec.to_builtins(self.ledger.stats()),
            report=None if self.report is None else msgspec.to_builtins(self.report),
        )
        return out

    # =======================================================================================
    # The actor
    # =======================================================================================

    async def run(self, *, task_status: trio.TaskStatus[Scheduler] = trio.TASK_STATUS_IGNORED) -> None:
        bus, p = self.bus, self.params
        try:
            with (
                bus.subscribe(topics.ORDER_UPDATE, maxsize=4096, name=f"scheduler[{self.exec_id}]") as updates,
                bus.subscribe(topics.FILL, maxsize=4096, name=f"scheduler[{self.exec_id}]") as fills,
                bus.subscribe(topics.TRADE, maxsize=8192, name=f"scheduler[{self.exec_id}]") as trades,
                bus.subscribe_conflated(
                    topics.QUOTE, key=_instrument_key, name=f"scheduler[{self.exec_id}]"
                ) as quotes,
            ):
                # subscribed first, read the journal second: nothing published in between is lost
                if self.recovery.from_journal:
                    await self._rebuild()
                await self._after_recovery()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_updates, updates)
                    nursery.start_soon(self._read_fills, fills)
                    nursery.start_soon(self._read_trades, trades)
                    nursery.start_soon(self._read_quotes, quotes)
                    self.running = self.started = True
                    log.info(
                        "exec.started",
                        exec=self.exec_id,
                        algo=p.kind,
                        venue=p.venue,
                        symbol=p.symbol,
                        side=p.side.value,
                        state=self.state.value,
                        recovered=self.recovery.from_journal or None,
                    )
                    task_status.started(self)
                    await self._main()
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            self.error = describe_error(_leaf(exc))
            await self._crashed(self.error)
            raise
        finally:
            self.running = False
            if not self.state.is_final and self.state is not ExecState.INTERRUPTED:
                with trio.move_on_after(SHUTDOWN_CHECKPOINT, shield=True):
                    await self._checkpoint(trio.current_time())
            for call in self._calls:
                call.answer(error=ExecutionClosed(f"execution {self.exec_id} stopped ({self.state.value})"))
            if self._cancel is not None:
                self._cancel.answer()
            self.done.set()

    async def _crashed(self, error: str) -> None:
        """A bug: cancel what works, and leave the execution INTERRUPTED for an operator."""
        log.error("exec.crashed", exec=self.exec_id, error=error)
        with trio.move_on_after(CRASH_CLEANUP, shield=True):
            try:
                for child in self.ledger.live():
                    await self._send_cancel(child.client_order_id, "the execution's scheduler crashed")
                await self._transition(
                    ExecState.INTERRUPTED,
                    f"scheduler crashed ({error}); its children were cancelled; "
                    f"`tradectl exec resume {self.exec_id}` or `tradectl exec cancel {self.exec_id}`",
                    "scheduler",
                )
            except Exception as cleanup:
                log.error("exec.crash_cleanup_failed", exec=self.exec_id, error=describe_error(cleanup))

    async def _rebuild(self) -> None:
        """Rebuild the ledger from the journal: intents, their latest states, the fills."""
        now = trio.current_time()
        journal = self.journal
        intents: list[OrderIntent] = await journal.intents(self.exec_id)
        for intent in intents:
            # the intent's time is on the previous process's clock: count it as placed now
            self.ledger.adopt(msgspec.structs.replace(intent, ts=0.0), now)
        for intent in intents:
            latest = await journal.order(intent.client_order_id)
            if latest is not None:
                self.ledger.apply_update(latest, now)
        journaled = await journal.fills(exec_id=self.exec_id)
        self.ledger.restore_fills((row.fill for row in journaled), now)
        next_seq = max(self.recovery.checkpoint_seq, await journal.next_child_seq(self.exec_id), self.ledger.next_seq, 1)
        self.ledger.next_seq = next_seq
        self._checkpointed = (self.ledger.filled, next_seq)
        log.info(
            "exec.recovered",
            exec=self.exec_id,
            state=self.state.value,
            children=len(intents),
            live=len(self.ledger.live()),
            filled=self.ledger.filled,
            next_seq=next_seq,
        )

    async def _after_recovery(self) -> None:
        target = ExecState.RUNNING if self.arrival_mid is not None else ExecState.PENDING
        if self.state is ExecState.INTERRUPTED and self.recovery.resume_by:
            self.pause_cause = None
            await self._transition(target, "resumed by the operator", self.recovery.resume_by)
        elif self.state is ExecState.PAUSED and self.pause_cause == "volatility" and self.recovery.from_journal:
            # A new guard has no history: it judges the market again from fresh quotes
            # (and pauses again if it is still too volatile) rather than holding forever.
            self.pause_cause = None
            await self._transition(target, "restarted: the volatility pause is judged again on fresh quotes", "scheduler")
        elif self.state is not ExecState.PAUSED:
            self.pause_cause = None

    # --- readers: update the state, then wake the loop -------------------------------------

    def _poke(self) -> None:
        self._changed.set()

    async def _read_updates(self, sub: Any) -> None:
        async for update in sub:
            if isinstance(update, OrderUpdate) and update.client_order_id.startswith(self.prefix):
                try:
                    self.ledger.apply_update(update, trio.current_time())
                except UnknownChild:
                    log.warning("exec.unknown_child", exec=self.exec_id, cid=update.client_order_id, status=update.status)
                    continue
                self._poke()

    async def _read_fills(self, sub: Any) -> None:
        async for fill in sub:
            if isinstance(fill, Fill) and fill.client_order_id.startswith(self.prefix):
                try:
                    new = self.ledger.apply_fill(fill, trio.current_time())
                except UnknownChild:
                    log.warning("exec.unknown_child", exec=self.exec_id, cid=fill.client_order_id, trade_id=fill.trade_id)
                    continue
                if new:
                    self._poke()

    async def _read_trades(self, sub: Any) -> None:
        venue, symbol = self.params.venue, self.params.symbol
        wants_volume = self.params.kind in ("vwap", "pov")
        async for trade in sub:
            if not isinstance(trade, MarketTrade) or trade.venue != venue or trade.symbol != symbol:
                continue
            if trade.ts < self.params.start or self.state.is_final:
                continue
            self.volume += trade.qty
            self.volume_notional += trade.qty * trade.price
            if wants_volume:
                self._poke()

    async def _read_quotes(self, sub: Any) -> None:
        venue, symbol = self.params.venue, self.params.symbol
        async for quote in sub:
            if not isinstance(quote, Quote) or quote.venue != venue or quote.symbol != symbol:
                continue
            if not (0 < quote.bid < quote.ask):
                log.debug("exec.quote_ignored", exec=self.exec_id, bid=quote.bid, ask=quote.ask)
                continue
            self.bid, self.ask = quote.bid, quote.ask
            if self.guard is not None:
                verdict = self.guard.observe(trio.current_time(), quote.mid)
                if verdict.changed:
                    self._verdict = verdict
            self._poke()

    # --- the loop ------------------------------------------------------------------------

    async def _main(self) -> None:
        while True:
            self._changed = trio.Event()  # before reading: a poke from here on wakes the next wait
            now = trio.current_time()
            await self._handle_calls(now)
            if self._stop_reason is not None:
                await self._end(ExecState.CANCELLED, f"emergency stop: {self._stop_reason}", "kill", None)
                return
            if self._cancel is not None:
                if await self._cancel_step(now):
                    return
            else:
                await self._handle_volatility(now)
                if self.state is ExecState.PAUSED:
                    await self._act(self.algo.cancel_all(self.ledger.view(), f"paused ({self.pause_cause})"), now)
                    self._wake_at = None
                else:
                    await self._run_step(now)
                    if self.state.is_final:
                        return
            await self._housekeeping(trio.current_time())
            await self._sleep(self._deadline())

    def _deadline(self) -> float:
        s = self.settings
        times = [self._wake_at, self._last_progress + s.progress_interval]
        if self.ledger.filled != self._checkpointed[0] or self.ledger.next_seq != self._checkpointed[1]:
            times.append(self._last_checkpoint + CHECKPOINT_MIN_GAP)
        times.append(self._last_checkpoint + s.checkpoint_interval)
        if self.state is ExecState.PAUSED and self.pause_cause == "volatility":
            times.append(trio.current_time() + GUARD_TICK)
        if self._cancel_deadline is not None:
            times.append(self._cancel_deadline)
        if self._unknown_since:
            times.append(min(self._unknown_since.values()) + UNKNOWN_GRACE)
        return min(t for t in times if t is not None)

    async def _sleep(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._changed.wait()

    async def _run_step(self, now: float) -> None:
        p = self.params
        if now < p.start:
            self.note = "waiting for the start time"
            self._wake_at = p.start
            return
        if self.arrival_mid is None:
            mid = self._mid()
            if mid is None:
                self.note = "waiting for a quote"
                self._wake_at = None
                return
            self.arrival_mid = mid
            self.started_ms = int(self.wall() * 1000)
            if self.decision_price is None:
                self.decision_price = mid
        if self.state is ExecState.PENDING:
            await self._transition(ExecState.RUNNING, f"started at mid {self.arrival_mid}", "scheduler")
            if self.guard is not None and self.guard.paused:
                verdict = self.guard.assess(now)
                if verdict.paused:
                    await self._pause("volatility", verdict.reason or "the market is too volatile", "volatility")
                    return
        view = self.ledger.view()
        decision = self.algo.decide(now, self._market(), view)
        await self._act(decision, now)
        if decision.finished is not None:
            await self._finish(decision)
            return
        await self._bound_wind_down(now, view)

    async def _bound_wind_down(self, now: float, view: Any) -> None:
        """Once nothing more will be sent, wait for the children's final states only so long.

        The algorithm ends an execution when no child is live. A cancel the
        venue never confirms would hold it open for ever; after
        `WIND_DOWN_WAITS` times `cancel_wait` it ends anyway, and the gateway
        keeps tracking the children (their fills still reach the journal and
        the positions).
        """
        p = self.params
        end = p.end_time
        if end is not None and p.finishes_at_end:
            end += p.end_overrun
        if (view.filled_quote if p.in_quote else view.filled) >= p.total:
            finish = Finish.FILLED
        elif view.rejects_in_row >= p.max_rejects:
            finish = Finish.FAILED
        elif end is not None and now >= end:
            finish = Finish.ENDED
        else:
            self._winding_since = None
            return
        if self._winding_since is None:
            self._winding_since = now
        limit = self._winding_since + WIND_DOWN_WAITS * self.settings.cancel_wait
        if now < limit:
            self._wake_at = limit if self._wake_at is None else min(self._wake_at, limit)
            return
        live = self.ledger.live()
        log.warning(
            "exec.children_left",
            exec=self.exec_id,
            cids=",".join(c.client_order_id for c in live),
            detail="no final state in time; the execution ends and the gateway keeps tracking them",
        )
        residual = max(p.total - (view.filled_quote if p.in_quote else view.filled), ZERO)
        note = f"ended with {len(live)} children unconfirmed"
        await self._finish(Decision(finished=finish, residual=residual, note=note))

    async def _act(self, decision: Decision, now: float) -> None:
        """Carry out a decision: record each cancel and child in the ledger before it leaves."""
        self.note = decision.note or self.note
        self._wake_at = decision.wake_at
        for cancel in decision.cancel:
            self.ledger.cancel_sent(cancel.client_order_id, now)
            await self._send_cancel(cancel.client_order_id, cancel.reason)
        for place in decision.place:
            if self._must_hold():
                self._poke()  # decide again: the call or stop comes first
                break
            intent = self.ledger.open(place, trio.current_time())
            log.debug(
                "exec.child",
                exec=self.exec_id,
                cid=intent.client_order_id,
                qty=intent.quantity,
                price=intent.price,
                type=intent.order_type.value,
                style=place.style.value,
                reason=place.reason,
            )
            await self._submit(intent)

    def _must_hold(self) -> bool:
        """Something came in that outranks sending more children now."""
        return self._stop_reason is not None or any(c.kind in ("pause", "cancel") for c in self._calls)

    async def _submit(self, intent: OrderIntent) -> None:
        cid = intent.client_order_id
        try:
            reply = await self.bus.request(topics.RISK_SUBMIT, intent, timeout=self.settings.risk_timeout)
        except RequestTimeout:
            # it may still be journaled and sent: it counts in full until an update settles it
            self.ledger.outcome_unknown(cid, trio.current_time())
            self._unknown_since[cid] = trio.current_time()
            log.warning("exec.child_unknown", exec=self.exec_id, cid=cid, detail="no answer from the risk sentinel in time")
            return
        except (NoHandler, BusClosed) as exc:
            self.ledger.denied(cid, f"not sent: {describe_error(exc)}", trio.current_time())
            log.warning("exec.child_denied", exec=self.exec_id, cid=cid, code="RISK_DOWN", reason=describe_error(exc))
            return
        if isinstance(reply, Denial):
            self.ledger.denied(cid, f"{reply.code}: {reply.reason}", trio.current_time())
            log.warning("exec.child_denied", exec=self.exec_id, cid=cid, code=reply.code, reason=reply.reason)
        elif not isinstance(reply, Approval):  # pragma: no cover - the sentinel answers one or the other
            log.error("exec.child_unexpected_reply", exec=self.exec_id, cid=cid, reply=type(reply).__name__)

    async def _send_cancel(self, cid: str, reason: str) -> None:
        p = self.params
        log.debug("exec.child_cancel", exec=self.exec_id, cid=cid, reason=reason)
        await self.bus.publish(topics.orders(p.venue), CancelOrder(venue=p.venue, symbol=p.symbol, client_order_id=cid, reason=reason))

    # --- operator calls ------------------------------------------------------------------

    async def _handle_calls(self, now: float) -> None:
        while self._calls:
            call = self._calls.pop(0)
            try:
                if call.kind == "pause":
                    await self._call_pause(call)
                elif call.kind == "resume":
                    await self._call_resume(call)
                elif call.kind == "cancel":
                    await self._call_cancel(call, now)
                    continue  # answered once the cancels are out
                elif call.kind == "amend":
                    await self._call_amend(call)
                call.answer()
            except (CallRefused, ParameterError) as exc:
                call.answer(error=exc)

    async def _call_pause(self, call: _Call) -> None:
        if self._cancel is not None:
            raise CallRefused(f"execution {self.exec_id} is being cancelled")
        if self.state is ExecState.PAUSED:
            if self.pause_cause != "operator":
                self.pause_cause = "operator"
                log.info("exec.paused", exec=self.exec_id, by=call.by, reason=call.reason or "held by the operator", cause="operator")
            return
        await self._pause("operator", call.reason or "paused by the operator", call.by)

    async def _call_resume(self, call: _Call) -> None:
        if self._cancel is not None:
            raise CallRefused(f"execution {self.exec_id} is being cancelled")
        if self.state is not ExecState.PAUSED:
            raise CallRefused(f"execution {self.exec_id} is {self.state.value}, not PAUSED")
        if self.guard is not None and self.guard.paused:
            log.warning("exec.resume_volatile", exec=self.exec_id, by=call.by, detail="resumed by the operator while the market is still volatile")
        await self._resume(call.reason or "resumed by the operator", call.by)

    async def _call_cancel(self, call: _Call, now: float) -> None:
        if self._cancel is not None:
            call.answer()
            return
        self._cancel = call
        self._cancel_deadline = now + self.settings.cancel_wait
        reason = call.reason or "cancelled by the operator"
        log.info("exec.cancelling", exec=self.exec_id, by=call.by, reason=reason, live=len(self.ledger.live()))
        await self._act(self.algo.cancel_all(self.ledger.view(), reason), now)
        call.answer(self.snapshot())

    async def _call_amend(self, call: _Call) -> None:
        if self._cancel is not None:
            raise CallRefused(f"execution {self.exec_id} is being cancelled")
        kwargs: dict[str, Any] = {}
        if "limit_price" in call.changes:
            kwargs["limit_price"] = call.changes["limit_price"]
        if "end" in call.changes:
            kwargs["end"] = call.changes["end"]
        new = amend(self.params, **kwargs)  # ParameterError names the field
        self.params = new
        self.algo = make_algorithm(new)
        log.info(
            "exec.amended",
            exec=self.exec_id,
            by=call.by,
            limit_price=new.limit_price,
            end_ms=None if new.end_time is None else self._mono_to_ms(new.end_time),
        )
        await self._checkpoint(trio.current_time())

    async def _cancel_step(self, now: float) -> bool:
        """Wait (bounded) for the children to close; True once the execution is CANCELLED."""
        assert self._cancel is not None
        await self._act(self.algo.cancel_all(self.ledger.view(), self._cancel.reason or "cancelled"), now)
        live = self.ledger.live()
        if live and self._cancel_deadline is not None and now < self._cancel_deadline:
            self._wake_at = self._cancel_deadline
            return False
        if live:
            log.warning(
                "exec.children_left",
                exec=self.exec_id,
                cids=",".join(c.client_order_id for c in live),
                detail=f"no final state within {self.settings.cancel_wait:g}s of the cancel; the gateway keeps tracking them",
            )
        reason = self._cancel.reason or f"cancelled by {self._cancel.by or 'the operator'}"
        await self._end(ExecState.CANCELLED, reason, self._cancel.by, None)
        return True

    # --- pause and resume ----------------------------------------------------------------

    async def _handle_volatility(self, now: float) -> None:
        if self.guard is None:
            return
        verdict, self._verdict = self._verdict, None
        if verdict is None and self.state is ExecState.PAUSED and self.pause_cause == "volatility":
            verdict = self.guard.assess(now)  # the window slides even without new quotes
            if not verdict.changed:
                verdict = None
        if verdict is None:
            return
        # Before the start the verdict is only remembered by the guard: `_run_step` looks at it.
        if verdict.paused and self.state is ExecState.RUNNING:
            await self._pause("volatility", verdict.reason, "volatility")
        elif not verdict.paused and self.state is ExecState.PAUSED and self.pause_cause == "volatility":
            await self._resume(verdict.reason, "volatility")

    async def _pause(self, cause: str, reason: str, by: str) -> None:
        self.pause_cause = cause
        emit = log.warning if cause == "volatility" else log.info
        emit("exec.paused", exec=self.exec_id, cause=cause, by=by, reason=reason)
        await self._transition(ExecState.PAUSED, reason, by)
        await self._act(self.algo.cancel_all(self.ledger.view(), f"paused: {reason}"), trio.current_time())
        await self._checkpoint(trio.current_time())

    async def _resume(self, reason: str, by: str) -> None:
        self.pause_cause = None
        log.info("exec.resumed", exec=self.exec_id, by=by, reason=reason)
        target = ExecState.RUNNING if self.arrival_mid is not None else ExecState.PENDING
        await self._transition(target, reason, by)
        await self._checkpoint(trio.current_time())

    # --- the end -------------------------------------------------------------------------

    async def _finish(self, decision: Decision) -> None:
        finish = decision.finished
        assert finish is not None
        if finish is Finish.FAILED:
            await self._end(ExecState.FAILED, decision.note, "scheduler", finish)
            return
        reason = decision.note
        if finish is Finish.ENDED and decision.residual > 0:
            reason = f"{decision.note}; {decision.residual} left unfilled"
        await self._end(ExecState.COMPLETED, reason, "scheduler", finish)

    async def _end(self, state: ExecState, reason: str, by: str, finish: Finish | None) -> None:
        if state is not ExecState.CANCELLED or by != "kill":
            await self._await_fills(trio.current_time() + FILL_WAIT)
        now = trio.current_time()
        self.end_mid = self._mid() or self.end_mid
        self.ended_ms = int(self.wall() * 1000)
        self.report = self._final_report(finish.value if finish is not None else state.value)
        await self._checkpoint(now, final=True)  # the report is durable before the state says final
        await self._transition(state, reason, by)
        if self.report is not None:
            r = self.report
            log.info(
                "exec.report",
                exec=self.exec_id,
                state=state.value,
                filled=_fmt(r.filled),
                fill_rate=round(r.fill_rate, 6),
                avg_price=_fmt(r.avg_price),
                slippage_bps=_round(r.slippage_bps),
                shortfall_bps=_round(r.shortfall.total_bps),
                delay_bps=_round(r.shortfall.delay_bps),
                trading_bps=_round(r.shortfall.trading_bps),
                opportunity_bps=_round(r.shortfall.opportunity_bps),
                fees_bps=_round(r.shortfall.fees_bps),
                duration=round(r.duration, 3),
                children=r.children.sent,
            )
        else:
            log.info("exec.report", exec=self.exec_id, state=state.value, filled=0, detail="no market price was seen: no report")
        await self._publish_progress(now)

    async def _await_fills(self, deadline: float) -> None:
        """An order update may report a fill before its `Fill` arrives: wait (bounded) for the fills,
        so the report prices every fill at its own price."""
        while True:
            missing = [c.client_order_id for c in self.ledger.children.values() if c.reported_filled > c.fill_qty]
            if not missing:
                return
            if trio.current_time() >= deadline:
                log.warning("exec.fills_missing", exec=self.exec_id, cids=",".join(missing[:10]), detail="the report uses the reported average prices")
                return
            self._changed = trio.Event()
            await self._sleep(deadline)

    def _final_report(self, finish: str) -> ExecutionReport | None:
        arrival = self.arrival_mid
        if arrival is None:
            return None
        end_mid = self.end_mid or arrival
        started = (self.started_ms or self.spec.start_ms) / 1000.0
        ended = (self.ended_ms or int(self.wall() * 1000)) / 1000.0
        vwap = self.volume_notional / self.volume if self.volume > 0 else None
        try:
            return final_report(
                params=self.params,
                fills=self.ledger.fills,
                children=self.ledger.stats(),
                decision_price=self.decision_price or arrival,
                arrival_mid=arrival,
                end_mid=end_mid,
                started_at=started,
                ended_at=ended,
                market_volume=self.volume if self.volume > 0 else None,
                market_vwap=vwap,
                finish=finish,
            )
        except (ValueError, ZeroDivisionError) as exc:
            log.error("exec.report_failed", exec=self.exec_id, error=describe_error(exc))
            return None

    # --- journal, bus, logs --------------------------------------------------------------

    async def _transition(self, state: ExecState, reason: str, by: str) -> None:
        previous = self.state
        if state is previous:
            return
        self.state = state
        self.reason = reason
        change = ExecutionStateChanged(exec_id=self.exec_id, state=state.value, previous=previous.value, reason=reason, by=by)
        log.info("exec.state", exec=self.exec_id, state=state.value, previous=previous.value, by=by, reason=reason)
        await self._journal("record_execution_state", change)
        await self.bus.publish(topics.EXEC_STATE, change)

    async def _checkpoint(self, now: float, *, final: bool = False) -> None:
        ledger = self.ledger
        filled = ledger.filled
        avg = ledger.filled_quote / filled if filled > 0 else None
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "state": self.state.value,
            "end_offset": self.end_offset,
            "limit_price": _str(self.params.limit_price),
            "arrival_mid": _str(self.arrival_mid),
            "decision_price": _str(self.decision_price),
            "volume": str(self.volume),
            "volume_notional": str(self.volume_notional),
            "pause_cause": self.pause_cause,
            "started_ms": self.started_ms,
            "filled_quote": str(ledger.filled_quote),
        }
        if final:
            state["end_mid"] = _str(self.end_mid)
            state["ended_ms"] = self.ended_ms
            state["report"] = None if self.report is None else msgspec.to_builtins(self.report)
        checkpoint = ExecutionCheckpoint(
            exec_id=self.exec_id, next_seq=ledger.next_seq, filled_qty=filled, avg_price=avg, algo_state=state
        )
        self._last_checkpoint = now
        self._checkpointed = (filled, ledger.next_seq)
        await self._journal("checkpoint", checkpoint)

    async def _journal(self, method: str, record: Any) -> None:
        if self.journal is None:
            return
        with trio.move_on_after(JOURNAL_TIMEOUT) as scope:
            try:
                await getattr(self.journal, method)(record)
            except Exception as exc:  # the journal's own errors; a dead journal stops risk anyway
                log.error("exec.journal_failed", exec=self.exec_id, record=type(record).__name__, error=describe_error(exc))
        if scope.cancelled_caught:
            log.error("exec.journal_failed", exec=self.exec_id, record=type(record).__name__, error=f"no answer within {JOURNAL_TIMEOUT:g}s")

    async def _settle_unknown(self, now: float) -> None:
        """A child risk never answered for, and that never reached the journal, was never sent.

        The sentinel journals an intent before it forwards it, within seconds;
        an intent still missing from the journal `UNKNOWN_GRACE` seconds after
        the request timed out cannot be at the venue, so it stops counting.
        One that is journaled stays UNKNOWN until the gateway settles it.
        """
        for cid, since in list(self._unknown_since.items()):
            child = self.ledger.children.get(cid)
            if child is None or child.is_final or child.status is not OrderStatus.UNKNOWN:
                del self._unknown_since[cid]
                continue
            if now < since + UNKNOWN_GRACE or self.journal is None:
                continue
            try:
                journaled = await self.journal.intent(cid)
            except Exception as exc:
                log.warning("exec.journal_failed", exec=self.exec_id, record="intent lookup", error=describe_error(exc))
                return
            del self._unknown_since[cid]
            if journaled is None:
                self.ledger.denied(cid, "never journaled by the risk sentinel: it was not sent", now)
                log.warning("exec.child_settled", exec=self.exec_id, cid=cid, outcome="not sent")

    async def _housekeeping(self, now: float) -> None:
        s = self.settings
        if self._unknown_since:
            await self._settle_unknown(now)
        if now - self._last_progress >= s.progress_interval:
            await self._publish_progress(now)
        dirty = self.ledger.filled != self._checkpointed[0] or self.ledger.next_seq != self._checkpointed[1]
        if (dirty and now - self._last_checkpoint >= CHECKPOINT_MIN_GAP) or now - self._last_checkpoint >= s.checkpoint_interval:
            await self._checkpoint(now)

    async def _publish_progress(self, now: float) -> None:
        if self._final_sent:
            return
        msg = self.progress_message(now)
        self._last_progress = now
        self._final_sent = self.state.is_final
        if now - self._last_progress_log >= self.settings.progress_log_interval or self.state.is_final:
            self._last_progress_log = now
            log.info(
                "exec.progress",
                exec=self.exec_id,
                state=msg.state,
                filled=msg.filled,
                filled_pct=round(msg.filled_pct, 2),
                avg_price=_fmt(msg.avg_price),
                schedule_deviation_pct=_round(msg.schedule_deviation_pct),
                slippage_bps=_round(msg.slippage_bps),
                participation=_round(msg.participation, 4),
                working=msg.children_working,
            )
        try:
            await self.bus.publish(topics.EXEC_PROGRESS, msg)
        except BusClosed:
            pass

    def progress_message(self, now: float) -> ExecutionProgress:
        p = self.params
        ledger = self.ledger
        stats = ledger.stats()
        market = self._market()
        schedule = None
        if now >= p.start and market.has_quote and not self.state.is_final:
            schedule = self.algo.schedule_fraction(now, market)
        figures = progress(
            params=p,
            orders=ledger.view(),
            fills=ledger.fills,
            children=stats,
            now=now,
            arrival_mid=self.arrival_mid,
            market_volume=self.volume if self.volume > 0 else None,
            schedule=schedule,
        )
        end = p.end_time
        return ExecutionProgress(
            exec_id=self.exec_id,
            state=self.state.value,
            algo=p.kind,
            venue=p.venue,
            symbol=p.symbol,
            side=p.side,
            quantity=p.quantity,
            quote_amount=p.quote_amount,
            filled=ledger.filled,
            filled_quote=ledger.filled_quote,
            filled_pct=figures.filled_pct,
            avg_price=figures.avg_price,
            schedule_pct=figures.schedule_pct,
            schedule_deviation_pct=figures.schedule_deviation_pct,
            slippage_bps=figures.slippage_bps,
            participation=figures.participation,
            elapsed=figures.elapsed if self.arrival_mid is not None else 0.0,
            remaining=None if end is None or self.state.is_final else max(end - now, 0.0),
            children_sent=stats.sent,
            children_working=stats.live,
            children_filled=stats.filled,
            children_cancelled=stats.cancelled,
            children_rejected=stats.rejected + stats.denied,
            note=self.reason if self.state.is_final else self.note,
        )

    # --- market --------------------------------------------------------------------------

    def _mid(self) -> Decimal | None:
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2

    def _market(self) -> MarketState:
        return MarketState(bid=self.bid, ask=self.ask, volume=self.volume)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside nested single-error groups (trio nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _instrument_key(msg: Any) -> Any:
    return (getattr(msg, "venue", None), getattr(msg, "symbol", None))


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value


__all__ = [
    "CallRefused",
    "ExecState",
    "ExecutionClosed",
    "ExecutionSpec",
    "Recovery",
    "Scheduler",
    "SchedulerSettings",
]
