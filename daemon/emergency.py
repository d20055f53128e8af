"""The emergency stop (DESIGN §6): halt, stop executions, cancel everything everywhere, report.

One procedure for every trigger: `tradectl kill`, a breaker whose action is
"kill", a second SIGINT, `shutdown --cancel-orders` and the root supervisor
giving up (the last three through `Daemon.emergency_stop`, which calls `hook`).

1. HALTED, synchronously, before the procedure's first checkpoint: from this
   instant the risk sentinel refuses every new order (cancels still pass).
2. `executions.stop_all(reason)`: schedulers stop at their next checkpoint
   without sending anything new. The wait is bounded; HALTED already keeps
   whatever they still try from leaving.
3. Every gateway's `cancel_all_and_verify(deadline)` runs in parallel inside
   a scope that is shielded *and* bounded: a kill that is itself cancelled
   (the client went away, the daemon is stopping) still cancels everything,
   yet never waits past the deadline. A gateway that raises or overruns gets
   a report with the error and no verified count.
4. With `flatten`: REDUCING, one reduce-only market IOC order per open
   position through the normal risk path (never around it), a bounded wait
   for the outcome, then HALTED again, whatever happens in between.
5. `kill.done` is logged with the totals, the `KillReport` journaled, and
   `STATUS=` tells systemd.

The daemon then stays up, HALTED, until `tradectl resume`.

What a gateway provides (`daemon.services["gateways"][venue]`)::

    async def cancel_all_and_verify(self, deadline: float) -> VenueCancelReport

`deadline` is absolute, on trio's clock. It cancels every open order of ours
at the venue, confirms with an open-orders query, retries until none remain or
the deadline passes, and must work even when the gateway's actor has stopped
(the root supervisor giving up stops every actor before the kill runs).
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from daemon import topics
from daemon.bus import BusClosed, NoHandler, RequestTimeout
from daemon.logs import describe_error, get_logger
from daemon.messages import Approval, Denial, FlattenReport, KillReport, OrderIntent, OrderUpdate, VenueCancelReport
from daemon.model import OrderType, Side, TimeInForce, TradingState, client_order_id

if TYPE_CHECKING:
    from actors.risk import RiskActor
    from daemon.app import Daemon

log = get_logger("kill")

GRACE = 0.5  # a gateway may overrun the deadline by this much to hand in its report
EXECUTIONS_SHARE = 0.25  # of the deadline, at most EXECUTIONS_MAX seconds, for schedulers to stop
EXECUTIONS_MAX = 2.0
JOURNAL_WAIT = 2.0
SETTLE_MAX = 2.0  # flatten: wait this long for cancelled orders to leave the risk book
POLL = 0.05
MAX_IDS_LOGGED = 20


class CancelsEverything(Protocol):
    async def cancel_all_and_verify(self, deadline: float) -> VenueCancelReport: ...


class EmergencyStop:
    """The kill procedure; `daemon.services["emergency"]`.

    `run` may be called concurrently: every call halts at once, and the
    procedures then run one after the other (cancel-all is idempotent, so a
    second kill simply verifies again).
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._lock = trio.Lock()
        self._ids = itertools.count()
        self.running = False
        self.last_report: KillReport | None = None

    async def hook(self, reason: str) -> KillReport:
        """For `daemon.emergency_hooks`: the kill asked for by the process itself."""
        return await self.run(reason, by="daemon")

    async def run(
        self, reason: str, *, by: str, flatten: bool = False, deadline: float | None = None
    ) -> KillReport:
        """Run the procedure; `deadline` (seconds) defaults to `[daemon] kill_deadline`."""
        reason = reason.strip() or "emergency stop"
        by = by.strip() or "daemon"
        self._halt(by, reason)
        async with self._lock:
            return await self._run(reason, by, flatten, deadline or self.daemon.config.daemon.kill_deadline)

    # --- the procedure ------------------------------------------------------------------
    async def _run(self, reason: str, by: str, flatten: bool, deadline: float) -> KillReport:
        started = trio.current_time()
        deadline_at = started + deadline
        gateways: dict[str, CancelsEverything] = dict(self.daemon.services.get("gateways") or {})
        log.warning(
            "kill.started",
            reason=reason,
            by=by,
            flatten=flatten,
            venues=",".join(sorted(gateways)) or None,
            deadline=deadline,
        )
        self.running = True
        results: dict[str, VenueCancelReport] = {}
        stopped = 0
        flattened: tuple[FlattenReport, ...] = ()
        report: KillReport | None = None
        try:
            with trio.move_on_at(deadline_at + 2 * GRACE, shield=True):
                stopped = await self._stop_executions(reason, started + min(EXECUTIONS_MAX, deadline * EXECUTIONS_SHARE))
                await self._cancel_everywhere(gateways, deadline_at, results)
            if flatten:
                flattened = await self._flatten(by, reason, deadline)
        finally:
            self.running = False
            venues = tuple(
                results.get(venue)
                or VenueCancelReport(venue=venue, cancelled=0, error="no report: the kill's deadline passed")
                for venue in sorted(gateways)
            )
            report = KillReport(
                reason=reason,
                by=by,
                venues=venues,
                executions_stopped=stopped,
                flattened=flattened,
                elapsed=round(trio.current_time() - started, 6),
                complete=all(v.verified and not v.still_open and not v.error for v in venues),
            )
            self.last_report = report
            self._announce(report)
            with trio.move_on_after(JOURNAL_WAIT, shield=True):
                await self._journal(report)
        return report

    def _halt(self, by: str, reason: str) -> None:
        risk: RiskActor | None = self.daemon.services.get("risk")
        if risk is None:
            self.daemon.trading_state = TradingState.HALTED
            return
        risk.halt(by, f"kill: {reason}")
        risk.mark_emergency(reason)

    async def _stop_executions(self, reason: str, until: float) -> int:
        executions = self.daemon.services.get("executions")
        stop = getattr(executions, "stop_all", None)
        if stop is None:
            return 0
        result: Any = None
        with trio.move_on_at(until) as scope:
            try:
                result = stop(reason)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                log.error("kill.executions_failed", error=describe_error(exc))
                return 0
        if scope.cancelled_caught:
            log.warning("kill.executions_slow", detail="schedulers still stopping; HALTED keeps their orders in")
            return 0
        if isinstance(result, bool) or result is None:
            return 0
        if isinstance(result, int):
            return result
        try:
            return len(result)
        except TypeError:
            return 0

    async def _cancel_everywhere(
        self, gateways: Mapping[str, CancelsEverything], deadline_at: float, results: dict[str, VenueCancelReport]
    ) -> None:
        async with trio.open_nursery() as nursery:
            for venue, gateway in gateways.items():
                nursery.start_soon(self._cancel_one, venue, gateway, deadline_at, results)

    async def _cancel_one(
        self, venue: str, gateway: CancelsEverything, deadline_at: float, results: dict[str, VenueCancelReport]
    ) -> None:
        started = trio.current_time()
        report: Any = None
        error = ""
        with trio.move_on_at(deadline_at + GRACE):
            try:
                report = await gateway.cancel_all_and_verify(deadline_at)
            except Exception as exc:
                error = describe_error(exc)
        elapsed = round(trio.current_time() - started, 6)
        if isinstance(report, VenueCancelReport):
            if report.venue != venue:
                report = msgspec.structs.replace(report, venue=venue)
        else:
            if not error:
                error = (
                    f"the gateway returned {type(report).__name__}, not a report"
                    if report is not None
                    else f"no answer within the deadline ({deadline_at - started:.3g} s)"
                )
            report = VenueCancelReport(venue=venue, cancelled=0, elapsed=elapsed, verified=False, error=error)
        results[venue] = report

    # --- flatten ------------------------------------------------------------------------
    async def _flatten(self, by: str, reason: str, budget: float) -> tuple[FlattenReport, ...]:
        """Close every position through REDUCING, then halt again whatever happened."""
        risk: RiskActor | None = self.daemon.services.get("risk")
        if risk is None:
            log.error("kill.flatten_unavailable", detail="no risk sentinel: positions are left open")
            return ()
        book = risk.sentinel.book
        positions = sorted((key, qty) for key, qty in book.positions.items() if qty != 0)
        if not positions:
            return ()
        until = trio.current_time() + budget
        risk.reduce(by, f"kill: flattening positions ({reason})")
        try:
            await self._settle(risk, [key for key, _ in positions], min(until, trio.current_time() + SETTLE_MAX))
            return await self._send_and_wait(risk, positions, until)
        finally:
            risk.halt(by, f"kill: flatten finished ({reason})")

    async def _settle(self, risk: RiskActor, keys: list[tuple[str, str]], until: float) -> None:
        """Give the cancels a moment to reach the risk book, so the flatten can be sized to the whole position."""
        book = risk.sentinel.book
        with trio.move_on_at(until):
            while any(book.open_order_count(key) for key in keys):
                await trio.sleep(POLL)

    async def _send_and_wait(
        self, risk: RiskActor, positions: list[tuple[tuple[str, str], Decimal]], until: float
    ) -> tuple[FlattenReport, ...]:
        bus = self.daemon.bus
        book = risk.sentinel.book
        exec_id = f"k{time.time_ns() // 1_000_000:x}{next(self._ids)}"
        outcomes: dict[tuple[str, str], FlattenReport] = {}
        orders: dict[str, tuple[tuple[str, str], Decimal, Decimal]] = {}  # cid -> (key, position, qty)
        with bus.subscribe(topics.ORDER_UPDATE, maxsize=4096, name="kill.flatten") as updates:
            for seq, (key, position) in enumerate(positions):
                venue, symbol = key
                side = Side.SELL if position > 0 else Side.BUY
                qty = abs(position) - book.pending(key, side)  # never past flat, even with orders still counted
                inst = book.instruments.get(key) or (self.daemon.services.get("instruments") or {}).get(key)
                if inst is not None:
                    qty = inst.round_qty(qty)
                base = FlattenReport(venue=venue, symbol=symbol, quantity=position)
                if qty <= 0 or (inst is not None and inst.min_qty and qty < inst.min_qty):
                    outcomes[key] = msgspec.structs.replace(
                        base, outcome=f"left open: {abs(position)} is below what the venue accepts, or still working"
                    )
                    continue
                cid = client_order_id(exec_id, seq)
                intent = OrderIntent(
                    client_order_id=cid, exec_id=exec_id, seq=seq, venue=venue, symbol=symbol, side=side,
                    order_type=OrderType.MARKET, quantity=qty, time_in_force=TimeInForce.IOC, reduce_only=True,
                    ts=trio.current_time(),
                )  # fmt: skip
                outcomes[key] = msgspec.structs.replace(base, client_order_id=cid)
                answer = await self._submit(intent, until)
                if isinstance(answer, Approval):
                    orders[cid] = (key, position, qty)
                    log.warning("kill.flatten_sent", venue=venue, symbol=symbol, cid=cid, side=side, qty=qty)
                else:
                    outcomes[key] = msgspec.structs.replace(outcomes[key], outcome=answer)
                    log.error("kill.flatten_refused", venue=venue, symbol=symbol, cid=cid, outcome=answer)
            latest = await self._wait_final(updates, set(orders), until)
        for cid, (key, _, qty) in orders.items():
            outcomes[key] = msgspec.structs.replace(outcomes[key], outcome=_outcome(latest.get(cid), qty))
        return tuple(outcomes[key] for key, _ in positions)

    async def _submit(self, intent: OrderIntent, until: float) -> Approval | str:
        timeout = max(until - trio.current_time(), 0.001)
        try:
            answer = await self.daemon.bus.request(topics.RISK_SUBMIT, intent, timeout=timeout)
        except NoHandler:
            return "not sent: the risk sentinel is not running"
        except RequestTimeout:
            return "no answer from the risk sentinel in time: look the order up before acting"
        except BusClosed:
            return "not sent: the daemon is stopping"
        if isinstance(answer, Denial):
            return f"denied {answer.code}: {answer.reason}"
        return answer

    async def _wait_final(self, updates: Any, pending: set[str], until: float) -> dict[str, OrderUpdate]:
        latest: dict[str, OrderUpdate] = {}
        wanted = set(pending)
        with trio.move_on_at(until):
            while pending:
                for update in await updates.receive_batch():
                    if isinstance(update, OrderUpdate) and update.client_order_id in wanted:
                        latest[update.client_order_id] = update
                        if update.status.is_final:
                            pending.discard(update.client_order_id)
        return latest

    # --- reporting ----------------------------------------------------------------------
    def _announce(self, report: KillReport) -> None:
        for v in report.venues:
            clean = v.verified and not v.still_open and not v.error
            (log.info if clean else log.error)(
                "kill.venue",
                venue=v.venue,
                cancelled=v.cancelled,
                still_open=_open_count(v),
                open_ids=",".join(v.still_open[:MAX_IDS_LOGGED]) or None,
                attempts=v.attempts,
                verified=v.verified,
                elapsed=round(v.elapsed, 3),
                error=v.error or None,
            )
        cancelled = sum(v.cancelled for v in report.venues)
        unverified = [v.venue for v in report.venues if not v.verified]
        still_open = sum(len(v.still_open) for v in report.venues)
        (log.warning if report.complete else log.critical)(
            "kill.done",
            reason=report.reason,
            by=report.by,
            venues=len(report.venues),
            cancelled=cancelled,
            still_open=still_open,
            unverified=",".join(unverified) or None,
            executions=report.executions_stopped,
            flattened=len(report.flattened) or None,
            complete=report.complete,
            elapsed=round(report.elapsed, 3),
        )
        summary = f"{cancelled} cancelled, {still_open} still open" + (
            f", unverified at {','.join(unverified)}" if unverified else ""
        )
        self.daemon.notifier.status(f"HALTED by kill ({report.reason}): {summary}")

    async def _journal(self, report: KillReport) -> None:
        risk: RiskActor | None = self.daemon.services.get("risk")
        journal = risk.journal_if_running() if risk is not None else self.daemon.services.get("journal")
        if journal is None:
            log.error("kill.not_journaled", detail="the journal is not running; this log line is the record")
            return
        try:
            await journal.record_risk_event(report)
        except Exception as exc:
            log.error("kill.not_journaled", error=describe_error(exc))


def _open_count(report: VenueCancelReport) -> int | str:
    """Orders a venue still showed: the ids it listed, none if it confirmed zero, else unknown."""
    if report.still_open:
        return len(report.still_open)
    return 0 if report.verified else "unknown"


def _outcome(update: OrderUpdate | None, qty: Decimal) -> str:
    if update is None:
        return "sent; no answer from the venue before the deadline: check `tradectl orders`"
    if not update.status.is_final:
        return f"{update.status} when the deadline passed: filled {update.filled_qty} of {qty} so far"
    if update.filled_qty >= qty:
        return f"filled {update.filled_qty}" + (f" at {update.avg_price}" if update.avg_price is not None else "")
    detail = f": {update.reason}" if update.reason else ""
    return f"{update.status}, filled {update.filled_qty} of {qty}{detail}"


def install(daemon: Daemon) -> EmergencyStop:
    """Register the procedure as the daemon's emergency stop."""
    stop = EmergencyStop(daemon)
    daemon.services["emergency"] = stop
    daemon.emergency_hooks.append(stop.hook)
    return stop
