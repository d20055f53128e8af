"""The position keeper actor: fills in; positions, balances, PnL and equity out.

A thin shell around `actors.positions_core.PositionKeeper` (DESIGN §1, §7):

- At start, before it reports ready, it replays every fill of the journal in
  journal order and re-applies the balance adoptions it journaled, so the
  positions and balances after a restart are those before it. It subscribes
  to the fills *before* reading the journal: a fill journaled meanwhile is
  seen twice and booked once (fills are unique by venue and trade id).
- topics.FILL (lossless) books fills; topics.QUOTE (conflated) marks
  positions at the mid; topics.BALANCE (lossless) compares the venues'
  balances with the ledger's. A difference beyond the asset's tolerance that
  outlives `balance_grace` is logged (``positions.balance_mismatch``), makes
  health CRITICAL and is published as a `BalanceMismatch` on
  topics.BALANCE_CHECK; the risk sentinel keeps trading HALTED until an
  operator runs ``tradectl ack-balances``, which adopts the venue's balances
  (journaled, so a replay reproduces it) and publishes `BalancesAcknowledged`.
- It publishes a `PositionsSummary` on topics.POSITIONS after fills and
  mark changes (at most once per `publish_interval`) and on every
  `equity_interval`, when it also samples the equity curve (trio time for
  the timer, wall-clock UTC ms for the stamps).
- It answers `PositionsQuery` on topics.POSITIONS_QUERY (for the risk
  sentinel and the executions) and tradectl's ``positions``, ``pnl``,
  ``report``, ``balances`` and ``ack-balances`` on topics.POSITIONS_CONTROL
  (the commands are registered by `actors.positions_commands`; ``fills``
  reads the journal directly: the journal owns that answer).

Instruments come from the gateways, which start after this actor: they fill
``daemon.services["instruments"]`` and announce changes on
topics.INSTRUMENTS. Fills of instruments not known yet wait in the keeper and
are booked as soon as the instrument appears.

Third-asset fees (e.g. BNB) are booked without a conversion rate, live and
in replay alike: the journal keeps no rate per fill, and a replay must rebuild
exactly what was booked. They leave the balance and are listed as
unconverted fees rather than charged to PnL at a guessed price.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from actors.positions_commands import register_commands
from actors.positions_core import (
    ADJUSTMENT_SOURCES,
    SOURCE_ADOPTED,
    SOURCE_BEFORE,
    Adoption,
    FillOutcome,
    PositionKeeper,
    PositionsConfig,
    decimals,
)
from actors.positions_report import ReportView, build_report, pnl_view
from actors.positions_views import (
    AckRequest,
    AckView,
    BalancesRequest,
    BalancesView,
    PnlRequest,
    PositionRow,
    PositionsView,
    PositionsViewRequest,
    ReportRequest,
    fill_time,
)
from daemon import topics
from daemon.bus import Bus, NoHandler
from daemon.config import register_section
from daemon.control import CommandError
from daemon.health import Level
from daemon.journal import Journal, JournalError
from daemon.journal_store import BalanceSnapshot, JournaledFill, wall_ms
from daemon.logs import describe_error, get_logger
from daemon.messages import (
    BalancesAcknowledged,
    BalanceUpdate,
    Fill,
    PositionsQuery,
    PositionsReply,
    PositionsSummary,
    Quote,
)
from daemon.model import Instrument
from daemon.supervisor import ChildSpec, Restart

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.config import Config
    from daemon.health import Health

__all__ = [
    "PositionsActor",
    "PositionsConfig",
    "PositionsHandle",
    "install",
]

register_section("positions", PositionsConfig)

log = get_logger("positions")

NAME = "positions"
REPLAY_PAGE = 5_000  # fills per journal read while replaying
HOUSEKEEPING = 1.0  # seconds between checks for new instruments and due balance differences
QUERY_TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------
# The actor
# ---------------------------------------------------------------------------------------


class PositionsActor:
    """The position keeper. `run` is the supervised worker; it builds its state
    afresh from the journal on every start, so a restart replays the journal again."""

    def __init__(
        self,
        bus: Bus,
        journal: Journal,
        *,
        config: PositionsConfig | None = None,
        instruments: Mapping[tuple[str, str], Instrument] | None = None,
        health: Health | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.bus = bus
        self.journal = journal
        self.config = config or PositionsConfig()
        self.instruments: Mapping[tuple[str, str], Instrument] = instruments if instruments is not None else {}
        self.health = health
        self.clock_ms = clock_ms
        self.keeper: PositionKeeper | None = None
        self.running = False
        self.published = 0
        self._instrument_count = -1
        self._adopt_lock = trio.Lock()
        self._dirty = False
        self._wake = trio.Event()
        self._health_line: tuple[Level, str] | None = None
        self._reconciled: set[str] = set()  # venues whose balances agreed since the start or the last mismatch

    # --- lifecycle -----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[PositionsActor] = trio.TASK_STATUS_IGNORED) -> None:
        keeper = PositionKeeper(self.config)
        self.keeper = keeper
        self._instrument_count = -1
        self._reconciled.clear()
        self._health_line = None
        self._sync_instruments()
        bus = self.bus
        with (
            bus.subscribe(topics.FILL, maxsize=4096, name=NAME) as fills,
            bus.subscribe_conflated(topics.QUOTE, key=lambda q: (q.venue, q.symbol), name=NAME) as quotes,
            bus.subscribe(topics.BALANCE, maxsize=1024, name=NAME) as balances,
            bus.subscribe(topics.INSTRUMENTS, maxsize=256, name=NAME) as instruments,
            bus.serve(topics.POSITIONS_QUERY) as queries,
            bus.serve(topics.POSITIONS_CONTROL) as control,
        ):
            await self._replay(keeper)
            self.running = True
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._until_closed, nursery, self._consume_fills, fills)
                    nursery.start_soon(self._until_closed, nursery, self._consume_quotes, quotes)
                    nursery.start_soon(self._until_closed, nursery, self._consume_balances, balances)
                    nursery.start_soon(self._until_closed, nursery, self._consume_instruments, instruments)
                    nursery.start_soon(self._until_closed, nursery, self._serve_queries, queries)
                    nursery.start_soon(self._until_closed, nursery, self._serve_control, control, nursery)
                    nursery.start_soon(self._clock)
                    self._publish(trio.current_time())
                    task_status.started(self)
            finally:
                self.running = False

    @staticmethod
    async def _until_closed(nursery: trio.Nursery, loop: Callable[..., Any], *args: Any) -> None:
        """Run a consumer loop; when its stream ends (the bus closed), stop the actor."""
        await loop(*args)
        nursery.cancel_scope.cancel()

    async def _replay(self, keeper: PositionKeeper) -> None:
        started = trio.current_time()
        after: int | None = None
        outcomes: dict[FillOutcome, int] = {}
        while True:
            page = await self.journal.fills(after_seq=after, limit=REPLAY_PAGE)
            for row in page:
                outcome, _ = keeper.apply_fill(row.fill)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if outcome is FillOutcome.REFUSED:
                    self._log_refused(keeper)
            if len(page) < REPLAY_PAGE:
                break
            after = page[-1].seq
        adjustments = await self.journal.balance_snapshots(sources=ADJUSTMENT_SOURCES)
        latest = await self.journal.latest_balances()
        adoptions = keeper.restore(adjustments, latest)
        log.info(
            "positions.replayed",
            fills=sum(outcomes.values()),
            booked=outcomes.get(FillOutcome.APPLIED, 0),
            waiting=keeper.pending_count(),
            refused=outcomes.get(FillOutcome.REFUSED, 0),
            adoptions=adoptions,
            open_positions=len(keeper.ledger.positions()),
            seconds=round(trio.current_time() - started, 3),
        )
        self._update_health()

    # --- inputs --------------------------------------------------------------------------
    async def _consume_fills(self, subscription: Any) -> None:
        while True:
            try:
                batch = await subscription.receive_batch()
            except trio.EndOfChannel:
                return
            self._sync_instruments()
            keeper = self._keeper()
            venues = set()
            for fill in batch:
                if not isinstance(fill, Fill):
                    log.error("positions.bad_message", topic=topics.FILL, message=type(fill).__name__)
                    continue
                self._book(keeper, fill)
                venues.add(fill.venue)
            now = trio.current_time()
            for venue in venues:
                keeper.recheck(venue, now)
            self._changed()

    def _book(self, keeper: PositionKeeper, fill: Fill) -> None:
        outcome, applied = keeper.apply_fill(fill)
        if outcome is FillOutcome.APPLIED and applied is not None:
            log.debug(
                "positions.fill_booked",
                venue=fill.venue,
                symbol=fill.symbol,
                cid=fill.client_order_id,
                trade_id=fill.trade_id,
                position=applied.position,
                realised=applied.realised_pnl,
            )
        elif outcome is FillOutcome.PENDING:
            log.warning(
                "positions.fill_waiting",
                venue=fill.venue,
                symbol=fill.symbol,
                trade_id=fill.trade_id,
                detail="instrument not known yet; booked when its venue loads it",
            )
        elif outcome is FillOutcome.DUPLICATE:
            log.debug("positions.fill_duplicate", venue=fill.venue, trade_id=fill.trade_id)
        else:
            self._log_refused(keeper)

    def _log_refused(self, keeper: PositionKeeper) -> None:
        refused = keeper.refused[-1]
        f = refused.fill
        log.error(
            "positions.fill_refused",
            venue=f.venue,
            symbol=f.symbol,
            cid=f.client_order_id,
            trade_id=f.trade_id,
            error=refused.error,
        )

    async def _consume_quotes(self, subscription: Any) -> None:
        while True:
            try:
                batch = await subscription.receive_batch()
            except trio.EndOfChannel:
                return
            keeper = self._keeper()
            for quote in batch:
                if isinstance(quote, Quote) and keeper.on_quote(quote):
                    continue
                log.debug("positions.quote_ignored", venue=getattr(quote, "venue", None), symbol=getattr(quote, "symbol", None))
            self._changed()

    async def _consume_balances(self, subscription: Any) -> None:
        while True:
            try:
                batch = await subscription.receive_batch()
            except trio.EndOfChannel:
                return
            self._sync_instruments()
            updates = [u for u in batch if isinstance(u, BalanceUpdate)]
            if len(updates) != len(batch):
                log.error("positions.bad_message", topic=topics.BALANCE, dropped=len(batch) - len(updates))
            keeper = self._keeper()
            first_seen = keeper.on_balances(updates, trio.current_time())
            for adoption in first_seen:
                await self._adopt_first(adoption)
            await self._declare_due()
            for venue in sorted({u.venue for u in updates} - self._reconciled):
                if keeper.venue_agrees(venue):
                    self._reconciled.add(venue)
                    log.info("positions.reconciled", venue=venue, detail="the venue's balances agree with the ledger")
            self._changed()

    async def _adopt_first(self, proposal: Adoption) -> None:
        """Take a venue's first figure for assets the ledger has never held."""
        keeper = self._keeper()
        async with self._adopt_lock:
            held = keeper.ledger.balances(proposal.venue)
            assets = [b.asset for b in proposal.after if (proposal.venue, b.asset) not in held]
            adoption = keeper.adoption(proposal.venue, by=proposal.by, reason=proposal.reason, assets=assets)
            if adoption is None:
                return
            try:
                await self._journal_adoption(adoption)
            except JournalError as exc:
                log.error("positions.adoption_failed", venue=adoption.venue, error=describe_error(exc))
                return
            keeper.apply_adoption(adoption)
        self._start_curve()
        log.info(
            "positions.balances_adopted",
            venue=adoption.venue,
            assets=",".join(b.asset for b in adoption.after),
            by=adoption.by,
            reason=adoption.reason,
        )

    async def _journal_adoption(self, adoption: Adoption) -> None:
        await self.journal.record_batch(
            [
                BalanceSnapshot(venue=adoption.venue, balances=adoption.before, source=SOURCE_BEFORE),
                BalanceSnapshot(venue=adoption.venue, balances=adoption.after, source=SOURCE_ADOPTED),
            ]
        )

    async def _declare_due(self) -> None:
        for mismatch in self._keeper().due(trio.current_time(), self.clock_ms()):
            detail = "; ".join(
                f"{d.asset} ledger {d.ours} venue {d.venue_total} (difference {d.difference}, tolerance {d.tolerance})"
                for d in mismatch.differences
            )
            log.error(
                "positions.balance_mismatch",
                venue=mismatch.venue,
                assets=",".join(d.asset for d in mismatch.differences),
                detail=detail,
                action="trading stays halted until `tradectl ack-balances`",
            )
            self._reconciled.discard(mismatch.venue)
            self._update_health()
            await self.bus.publish(topics.BALANCE_CHECK, mismatch)

    # --- timers and outputs --------------------------------------------------------------
    def _changed(self) -> None:
        self._dirty = True
        self._wake.set()
        self._update_health()

    async def _clock(self) -> None:
        """Equity samples on the interval, summaries after changes at a bounded rate,
        and the housekeeping: new instruments, balance differences that became due."""
        cfg = self.config
        now = trio.current_time()
        self._sample()
        next_sample = now + cfg.equity_interval
        next_housekeeping = now + HOUSEKEEPING
        last_publish = now
        while True:
            deadline = min(next_sample, next_housekeeping)
            if self._dirty:
                deadline = min(deadline, last_publish + self.config.publish_interval)
            with trio.move_on_at(deadline):
                if self._dirty:
                    await trio.sleep_forever()
                else:
                    await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if now >= next_housekeeping:
                self._sync_instruments(full=True)
                await self._declare_due()
                next_housekeeping = now + HOUSEKEEPING
            if now >= next_sample:
                self._sample()
                self._publish(now)
                last_publish = now
                while next_sample <= now:
                    next_sample += cfg.equity_interval
            elif self._dirty and now >= last_publish + self.config.publish_interval:
                self._publish(now)
                last_publish = now

    def _sample(self) -> None:
        self._keeper().sample_equity(self.clock_ms())

    def _start_curve(self) -> None:
        """The curve begins as soon as there is equity to value, not at the next interval."""
        if not len(self._keeper().ledger.curve):
            self._sample()

    def _publish(self, now: float) -> None:
        self._dirty = False
        if self.bus.closed:
            return
        self.bus.publish_nowait(topics.POSITIONS, self._keeper().summary(self.clock_ms(), now))
        self.published += 1

    def _sync_instruments(self, *, full: bool = False) -> None:
        """Pick up instruments the gateways added to the shared table."""
        mapping = self.instruments
        if not full and len(mapping) == self._instrument_count:
            return
        self._instrument_count = len(mapping)
        self._add_instruments(list(mapping.values()))

    def _add_instruments(self, instruments: list[Instrument]) -> None:
        """Make instruments known; book the fills that waited for them and compare
        their venues' balances, which could not be compared while fills waited."""
        keeper = self.keeper
        if keeper is None:
            return
        waiting_venues = {i.venue for i in instruments if keeper.venue_waits(i.venue)}
        booked = keeper.add_instruments(instruments)
        if not booked:
            return
        log.info("positions.waiting_fills_booked", fills=len(booked), venues=",".join(sorted(waiting_venues)))
        for outcome, _ in booked:
            if outcome is FillOutcome.REFUSED:
                self._log_refused(keeper)
        now = trio.current_time()
        for venue in waiting_venues:
            keeper.recheck(venue, now, all_live=True)
        self._changed()

    async def _consume_instruments(self, subscription: Any) -> None:
        while True:
            try:
                batch = await subscription.receive_batch()
            except trio.EndOfChannel:
                return
            items = [i for msg in batch for i in (msg if isinstance(msg, list | tuple) else [msg])]
            self._add_instruments([i for i in items if isinstance(i, Instrument)])

    def _update_health(self) -> None:
        if self.health is None or self.keeper is None:
            return
        keeper = self.keeper
        level, reasons = Level.HEALTHY, []
        venues = keeper.mismatched_venues()
        if venues:
            level = Level.CRITICAL
            reasons.append(f"balances differ from the ledger at {', '.join(venues)}: run `tradectl balances`, then `tradectl ack-balances`")
        if keeper.pending_count():
            level = max(level, Level.DEGRADED)
            reasons.append(f"{keeper.pending_count()} fills wait for instrument definitions ({', '.join(keeper.pending_keys())})")
        if keeper.refused_count:
            level = max(level, Level.DEGRADED)
            reasons.append(f"{keeper.refused_count} fills refused by the ledger (see positions.fill_refused in the logs)")
        line = (level, "; ".join(reasons))
        if line != self._health_line:
            self._health_line = line
            self.health.report(NAME, level, line[1])

    def _keeper(self) -> PositionKeeper:
        if self.keeper is None:
            raise RuntimeError("the position keeper is not running")
        return self.keeper

    # --- requests ------------------------------------------------------------------------
    async def _serve_queries(self, inbox: Any) -> None:
        async for request in inbox:
            body = request.body
            if isinstance(body, PositionsQuery):
                self._sync_instruments()
                request.reply(self._reply(body))
            else:
                request.fail(TypeError(f"{topics.POSITIONS_QUERY} answers PositionsQuery, not {type(body).__name__}"))

    def _reply(self, query: PositionsQuery) -> PositionsReply:
        keeper = self._keeper()
        return PositionsReply(
            positions=keeper.entries(query.venue, query.symbol, include_flat=query.include_flat),
            summary=keeper.summary(self.clock_ms(), trio.current_time()),
            pending=keeper.pending_keys(),
        )

    async def _serve_control(self, inbox: Any, nursery: trio.Nursery) -> None:
        async for request in inbox:
            nursery.start_soon(self._answer, request)

    async def _answer(self, request: Any) -> None:
        try:
            self._sync_instruments()
            request.reply(await self._control(request.body))
        except Exception as exc:
            request.fail(exc)
        finally:
            if not request.answered:
                request.fail(NoHandler("the position keeper stopped before it answered"))

    async def _control(self, body: Any) -> Any:
        keeper = self._keeper()
        if isinstance(body, PositionsViewRequest):
            return self._positions_view(body)
        if isinstance(body, PnlRequest):
            return pnl_view(keeper.ledger, money_decimals=self.config.money_decimals)
        if isinstance(body, BalancesRequest):
            return BalancesView(
                currency=self.config.currency,
                balance_grace=self.config.balance_grace,
                rows=keeper.balance_rows(body.venue),
                mismatches=keeper.declared(body.venue),
            )
        if isinstance(body, ReportRequest):
            return await self._report(body)
        if isinstance(body, AckRequest):
            return await self._acknowledge(body)
        raise TypeError(f"{topics.POSITIONS_CONTROL} does not answer {type(body).__name__}")

    def _positions_view(self, request: PositionsViewRequest) -> PositionsView:
        keeper = self._keeper()
        rows = []
        for p in keeper.snapshots(request.venue, request.symbol, include_flat=request.include_flat):
            instrument = keeper.ledger.instrument(p.venue, p.symbol)
            rows.append(
                PositionRow(
                    venue=p.venue,
                    symbol=p.symbol,
                    base=p.base,
                    quote=p.quote,
                    side=p.side.value,
                    quantity=p.quantity,
                    avg_entry_price=p.avg_entry_price,
                    mark=p.mark,
                    notional=abs(p.quantity) * p.mark if p.mark is not None else None,
                    unrealised_pnl=p.unrealised_pnl,
                    realised_pnl=p.realised_pnl,
                    fees=p.fees,
                    fills=p.fills,
                    opened_ms=p.opened_ms,
                    last_fill_ms=p.last_fill_ms,
                    price_decimals=decimals(instrument.tick_size) if instrument else 8,
                    qty_decimals=decimals(instrument.step_size) if instrument else 8,
                )
            )
        return PositionsView(
            currency=self.config.currency,
            money_decimals=self.config.money_decimals,
            positions=rows,
            summary=keeper.summary(self.clock_ms(), trio.current_time()),
            pending=keeper.pending_keys(),
        )

    async def _report(self, request: ReportRequest) -> ReportView:
        fills = [
            row
            for row in await _all_fills(self.journal, since_ms=request.since_ms)
            if fill_time(row) <= request.until_ms
        ]
        exec_ids = {row.exec_id for row in fills if row.exec_id}
        executions = {
            record.exec_id: record
            for record in await self.journal.executions()
            if record.exec_id in exec_ids or request.since_ms <= record.created_ms <= request.until_ms
        }
        execution_fills = {
            exec_id: [row.fill for row in await _all_fills(self.journal, exec_id=exec_id)] for exec_id in executions
        }
        return build_report(
            ledger=self._keeper().ledger,
            fills=fills,
            executions=executions,
            execution_fills=execution_fills,
            since_ms=request.since_ms,
            until_ms=request.until_ms,
            money_decimals=self.config.money_decimals,
        )

    async def _acknowledge(self, request: AckRequest) -> AckView:
        keeper = self._keeper()
        if request.venue is not None:
            venues = [request.venue]
        else:
            venues = list(keeper.mismatched_venues())
            if not venues:
                raise CommandError(
                    "not_found",
                    "no venue has a balance mismatch to acknowledge; name one with --venue to adopt its balances anyway",
                )
        done = []
        async with self._adopt_lock:
            for venue in venues:
                if keeper.venue_waits(venue):
                    raise CommandError(
                        "refused",
                        f"fills of {venue} still wait for their instrument definitions ({', '.join(keeper.pending_keys())}); "
                        "its balances cannot be compared until the venue has loaded its instruments",
                    )
                adoption = keeper.adoption(venue, by=request.by, reason=request.reason, live_only=True)
                if adoption is None:
                    raise CommandError(
                        "not_found",
                        f"{venue} has reported no balances since the daemon started; wait for its gateway to connect",
                    )
                try:
                    await self._journal_adoption(adoption)
                except JournalError as exc:
                    raise CommandError("unavailable", f"the journal did not record the adoption ({describe_error(exc)}); nothing changed") from None
                keeper.apply_adoption(adoption)
                keeper.acknowledge(venue)
                self._start_curve()
                message = BalancesAcknowledged(
                    venue=venue, by=request.by, reason=request.reason, adopted=adoption.after, utc_ms=self.clock_ms()
                )
                log.warning(
                    "positions.balances_acknowledged",
                    venue=venue,
                    by=request.by,
                    reason=request.reason,
                    assets=",".join(b.asset for b in adoption.after),
                )
                done.append(message)
                await self.bus.publish(topics.BALANCE_CHECK, message)
        self._changed()
        return AckView(acknowledged=done)

    # --- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        keeper = self.keeper
        if keeper is None:
            return {"running": False}
        equity = keeper.ledger.equity()
        return {
            "running": self.running,
            "method": self.config.method,
            "open_positions": len(keeper.ledger.positions()),
            "fills_booked": keeper.fills_applied,
            "duplicates_ignored": keeper.duplicates,
            "fills_waiting": keeper.pending_count(),
            "fills_refused": keeper.refused_count,
            "equity": f"{equity.value} {equity.currency}" + ("" if equity.complete else f" (no price for {', '.join(equity.missing)})"),
            "balance_mismatches": list(keeper.mismatched_venues()) or None,
            "curve_points": len(keeper.ledger.curve),
        }

    def reload(self, config: PositionsConfig) -> None:
        """Tolerances, grace and intervals apply at once; method, currency and rates need a restart."""
        old = self.config
        fixed = ("method", "currency", "rates", "curve_points")
        changed = [key for key in fixed if getattr(old, key) != getattr(config, key)]
        if changed:
            log.warning("positions.reload_needs_restart", keys=",".join(changed))
            config = msgspec.structs.replace(config, **{key: getattr(old, key) for key in fixed})
        self.config = config
        if self.keeper is not None:
            self.keeper.config = config


async def _all_fills(journal: Journal, **filters: Any) -> list[JournaledFill]:
    """Every fill that matches, paging through the journal."""
    out: list[JournaledFill] = []
    after: int | None = None
    while True:
        page = await journal.fills(after_seq=after, limit=REPLAY_PAGE, **filters)
        out.extend(page)
        if len(page) < REPLAY_PAGE:
            return out
        after = page[-1].seq


# ---------------------------------------------------------------------------------------
# The handle other actors call
# ---------------------------------------------------------------------------------------


class PositionsHandle:
    """``daemon.services["positions"]``: snapshot queries by message passing."""

    def __init__(self, bus: Bus, actor: PositionsActor) -> None:
        self._bus = bus
        self._actor = actor

    async def query(
        self, venue: str | None = None, symbol: str | None = None, *, include_flat: bool = False, timeout: float = QUERY_TIMEOUT
    ) -> PositionsReply:
        """Positions (signed quantities, PnL) and the current summary; raises `NoHandler`
        when the keeper is not running (the risk sentinel then denies every order)."""
        return await self._bus.request(
            topics.POSITIONS_QUERY, PositionsQuery(venue=venue, symbol=symbol, include_flat=include_flat), timeout=timeout
        )

    async def quantity(self, venue: str, symbol: str) -> Decimal:
        reply = await self.query(venue, symbol, include_flat=True)
        return reply.positions[0].quantity if reply.positions else Decimal(0)

    async def summary(self) -> PositionsSummary:
        return (await self.query()).summary

    async def balances(self, venue: str | None = None) -> BalancesView:
        return await self._bus.request(topics.POSITIONS_CONTROL, BalancesRequest(venue=venue), timeout=QUERY_TIMEOUT)

    @property
    def running(self) -> bool:
        return self._actor.running


# ---------------------------------------------------------------------------------------
# Plugging into the daemon
# ---------------------------------------------------------------------------------------


def install(daemon: Daemon) -> None:
    """Add the position keeper (a core actor, after the journal) and its commands."""
    journal = daemon.services.get("journal")
    if journal is None:
        raise RuntimeError("install the journal before the position keeper (daemon/components.py)")
    instruments = daemon.services.setdefault("instruments", {})
    actor = PositionsActor(
        daemon.bus,
        journal,
        config=daemon.config.section("positions"),
        instruments=instruments,
        health=daemon.health,
    )
    handle = PositionsHandle(daemon.bus, actor)
    daemon.services["positions"] = handle
    daemon.child_factories.append(lambda d: [ChildSpec(NAME, actor.run, restart=Restart.PERMANENT, core=True)])
    daemon.status_extras[NAME] = actor.status

    def reload(cfg: Config) -> None:
        actor.reload(cfg.section("positions"))

    daemon.reload_hooks.append(reload)
    register_commands(daemon, journal, instruments)


