"""The risk sentinel actor: every order passes here, and the trading state lives here.

The checks, breakers and trading state are the pure `RiskSentinel`
(actors/risk_checks.py); this module is the shell that feeds it and carries
out what it decides:

- It serves `topics.RISK_SUBMIT`. An approved intent is journaled (durable
  before it leaves), handed to the gateway's inbox `topics.orders(venue)`,
  and answered with the `Approval`. A refused one is answered with the
  `Denial`, logged (`risk.denied`), published on `topics.ORDER_DENIED` and
  journaled.
- Fail-safe: while the journal, the position keeper or the venue's gateway is
  not running, nothing is approved (JOURNAL_DOWN, POSITIONS_DOWN,
  GATEWAY_DOWN), so nothing can reach a venue unaccounted for.
- It feeds the sentinel quotes (conflated), fills, order updates, venue and
  feed status, equity from the position keeper, and a tick every second.
- Every state change and breaker trip is logged the moment it happens
  (`risk.state`, `risk.tripped`) and shows in `daemon.trading_state` and
  health; two background tasks then publish and journal it, in order, and the
  journal task retries until the journal takes it. A trip that asks for a
  kill runs the emergency stop (daemon/emergency.py).

The sentinel belongs to the handle (`daemon.services["risk"]`), not to one run
of the actor: a restarted actor keeps the trading state and latched trips (a
crash must never un-halt) and re-reads positions and open orders. Operator
commands change the state synchronously, so a `halt` refuses the very next
order, before anything is journaled. A daemon that stopped HALTED or
REDUCING starts in that state again: the journal's last word stands until an
operator resumes.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import trio

from actors.risk_checks import DUPLICATE_ORDER_ID, TRADING_HALTED, RiskSentinel
from actors.risk_limits import LimitError, RiskLimits, get_limit, set_limit
from actors.risk_state import StateEvent
from daemon import topics
from daemon.bus import BusClosed, NoHandler, RequestTimeout
from daemon.config import Config, register_section
from daemon.control import Caller, CommandError
from daemon.health import Level
from daemon.journal import JournalBatchError, JournalClosed, JournalConflict, JournalError, JournalUnavailable
from daemon.logs import describe_error, get_logger
from daemon.messages import (
    Approval,
    BalanceMismatch,
    BalancesAcknowledged,
    BreakerTripped,
    Denial,
    FeedStatus,
    Fill,
    OrderIntent,
    OrderUpdate,
    PositionsQuery,
    PositionsReply,
    PositionsSummary,
    Quote,
    RiskLimitChanged,
    SupervisorGaveUp,
    TradingStateChanged,
    VenueStatus,
)
from daemon.model import Instrument, OrderStatus, TradingState
from daemon.supervisor import ChildSpec, Restart

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.emergency import EmergencyStop

register_section("risk", RiskLimits)

log = get_logger("risk")

# --- denial codes of the actor's own fail-safe (the checks' codes live in risk_checks) ---
JOURNAL_DOWN = "JOURNAL_DOWN"
POSITIONS_DOWN = "POSITIONS_DOWN"
GATEWAY_DOWN = "GATEWAY_DOWN"
GATEWAY_BUSY = "GATEWAY_BUSY"  # the venue's order queue is full: refuse rather than stall every venue

BALANCE_MISMATCH = "balance_mismatch"  # the breaker name a position keeper's mismatch trips

TICK_SECONDS = 1.0
JOURNAL_TIMEOUT = 2.0  # an intent not durable by then is refused, never sent
JOURNAL_RETRY_SECONDS = 0.5
POSITIONS_QUERY_TIMEOUT = 5.0
SUBMIT_INBOX = 256
MAX_QUEUED_DENIALS = 10_000  # while the journal is away; state changes are never dropped
RECENT_DENIALS = 20
EXIT_DELAY = 0.2  # `kill --exit`: time for the report to reach the client before the stop

T = TypeVar("T")


class _Outbox(Generic[T]):
    """A FIFO that synchronous code fills and one task drains.

    An item leaves only once the task has handled it (`done`), so a task that
    is cancelled mid-way (the actor restarting) leaves it for the next run.
    """

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._lot = trio.lowlevel.ParkingLot()

    def put(self, item: T) -> None:
        self._items.append(item)
        self._lot.unpark_all()

    async def first(self) -> T:
        while not self._items:
            await self._lot.park()
        return self._items[0]

    def done(self) -> None:
        self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class RiskActor:
    """The risk sentinel actor and its handle, `daemon.services["risk"]`.

    Other parts call: `state`, `state_for(venue)`, `halt` / `reduce` /
    `resume` (synchronous: effective at once), `await set_limit(...)`,
    `snapshot()`. `run` is the actor itself, started by the root supervisor.
    """

    def __init__(self, daemon: Daemon, limits: RiskLimits | None = None) -> None:
        self.daemon = daemon
        self._file_limits: RiskLimits = limits if limits is not None else daemon.config.section("risk")
        self.sentinel = RiskSentinel(self._file_limits)
        self._to_journal: _Outbox[Any] = _Outbox()
        self._to_publish: _Outbox[tuple[str, Any]] = _Outbox()
        self._nursery: trio.Nursery | None = None
        self._restored = False
        self._emergency: str | None = None  # the reason of the kill that halted trading
        self._last_change: dict[str, Any] | None = None
        self._balance_mismatches: dict[str, str] = {}
        self._recent_denials: deque[dict[str, Any]] = deque(maxlen=RECENT_DENIALS)
        self.denials_not_journaled = 0
        self._journal_failing = False

    # --- reading ------------------------------------------------------------------------
    @property
    def limits(self) -> RiskLimits:
        return self.sentinel.limits

    @property
    def state(self) -> TradingState:
        return self.sentinel.state

    def state_for(self, venue: str) -> TradingState:
        return self.sentinel.state_for(venue)

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def snapshot(self) -> dict[str, Any]:
        """What `tradectl risk` shows: the sentinel's snapshot plus who changed the state and why."""
        now = trio.current_time()
        data: dict[str, Any] = msgspec.to_builtins(self.sentinel.snapshot(now))
        data["last_change"] = self._last_change
        data["emergency"] = self._emergency
        data["balance_mismatches"] = dict(self._balance_mismatches)
        data["recent_denials"] = [
            {k: v for k, v in d.items() if k != "at"} | {"age_seconds": round(max(0.0, now - d["at"]), 3)}
            for d in self._recent_denials
        ]
        data["actor_running"] = self.running
        return data

    def status(self) -> dict[str, Any]:
        """The `risk` section of `tradectl status`."""
        s = self.sentinel
        return {
            "state": s.state.value,
            "venues_reducing": sorted(s.states.venue_states),
            "trips": [t.breaker + (f"@{t.venue}" if t.venue else "") for t in s.trips],
            "open_orders": s.book.open_order_count(),
            "approvals": s.approvals,
            "denials": sum(s.denials.values()),
            "denials_not_journaled": self.denials_not_journaled or None,
            "journal_backlog": len(self._to_journal) or None,
        }

    # --- operator commands --------------------------------------------------------------
    def halt(self, by: str, reason: str) -> list[StateEvent]:
        """HALTED from this instant: every new order is refused, cancels still pass."""
        return self._apply(self.sentinel.halt(by, reason))

    def reduce(self, by: str, reason: str, venue: str | None = None) -> list[StateEvent]:
        """Only orders that reduce a position pass, globally or at one venue."""
        return self._apply(self.sentinel.reduce(by, reason, venue))

    def resume(self, by: str, reason: str, venue: str | None = None) -> list[StateEvent]:
        """ACTIVE again, clearing latched trips.

        Refused globally while a venue's balances disagree with the ledger: the
        operator adopts or fixes them first (`tradectl ack-balances`).
        """
        if venue is None and self._balance_mismatches:
            names = ", ".join(sorted(self._balance_mismatches))
            raise ValueError(
                f"balances at {names} differ from the ledger; check them and run `tradectl ack-balances` "
                "before resuming"
            )
        events = self._apply(self.sentinel.resume(by, reason, venue))
        if venue is None:
            self._emergency = None
            self._report_health()
        return events

    async def set_limit(self, key: str, value: str, *, by: str, reason: str = "") -> RiskLimitChanged:
        """Change one limit at run time: validated like the config file, journaled first, then applied.

        Raises `LimitError` for a bad key or value, `JournalError` when the
        change cannot be journaled (it is then not applied).
        """
        new = set_limit(self.limits, key, value)
        previous = get_limit(self.limits, key)
        change = RiskLimitChanged(
            limit=key.strip(),
            value=_text(get_limit(new, key)),
            by=by,
            previous=_text(previous),
            reason=reason,
        )
        journal = self.journal_if_running()
        if journal is None:
            raise JournalClosed("the journal is not running: limit changes must be journaled; try again when it is back")
        await journal.record_risk_event(change)
        self.sentinel.replace_limits(new)
        log.warning(
            "risk.limit_changed", key=change.limit, value=change.value, previous=change.previous, by=by, reason=reason
        )
        self._to_publish.put((topics.RISK_STATE, change))
        return change

    def on_reload(self, cfg: Config) -> None:
        """SIGHUP: a changed `[risk]` section replaces the limits (changes made live are kept otherwise)."""
        new: RiskLimits = cfg.section("risk")
        if new == self._file_limits:
            return
        changed = _changed_keys(self._file_limits, new)
        before = self.limits
        self._file_limits = new
        self.sentinel.replace_limits(new)
        log.warning("risk.limits_reloaded", changed=",".join(changed) or "-", config=cfg.source)
        for key in changed:
            change = RiskLimitChanged(
                limit=key,
                value=_text(_lookup(new, key)),
                by="config reload",
                previous=_text(_lookup(before, key)),
                reason=f"[risk] changed in {cfg.source}",
            )
            log.info("risk.limit_changed", key=key, value=change.value, previous=change.previous, by=change.by)
            self._to_journal.put(change)
            self._to_publish.put((topics.RISK_STATE, change))

    def mark_emergency(self, reason: str) -> None:
        """The emergency stop halted trading: health is CRITICAL until `resume`."""
        self._emergency = reason
        self._report_health()

    def later(self, delay: float, fn: Callable[[], Any]) -> None:
        """Call `fn` after `delay` seconds in the actor's nursery (now, if the actor is not running)."""
        if self._nursery is None:
            fn()
            return

        async def call() -> None:
            await trio.sleep(delay)
            fn()

        self._nursery.start_soon(call)

    # --- state events -------------------------------------------------------------------
    def _apply(self, events: list[StateEvent]) -> list[StateEvent]:
        """Make the sentinel's decisions visible at once, then queue them for the bus and the journal."""
        for event in events:
            if isinstance(event, TradingStateChanged):
                log.warning(
                    "risk.state",
                    state=event.state,
                    previous=event.previous,
                    venue=event.venue,
                    by=event.by,
                    reason=event.reason,
                )
                if event.venue is None:
                    self.daemon.trading_state = event.state
                    self._last_change = {
                        "state": event.state.value,
                        "previous": event.previous.value,
                        "by": event.by,
                        "reason": event.reason,
                        "utc_ms": _wall_ms(),
                    }
                self._to_publish.put((topics.RISK_STATE, event))
            else:
                log.error(
                    "risk.tripped",
                    breaker=event.breaker,
                    action=event.action,
                    venue=event.venue,
                    kill=event.kill,
                    detail=event.detail,
                )
                self._to_publish.put((topics.RISK_BREAKER, event))
            self._to_journal.put(event)
        if events:
            self._report_health()
            for event in events:
                if isinstance(event, BreakerTripped) and event.kill:
                    self._start_kill(event)
        return events

    def _report_health(self) -> None:
        s = self.sentinel
        change = self._last_change or {}
        why = f"{change.get('by', '?')}: {change.get('reason', '')}".strip()
        if s.state is TradingState.HALTED:
            by_breaker = any(t.action is TradingState.HALTED for t in s.trips)
            level = Level.CRITICAL if by_breaker or self._emergency else Level.DEGRADED
            self.daemon.health.report("risk", level, f"trading HALTED ({why})")
        elif s.state is TradingState.REDUCING:
            self.daemon.health.report("risk", Level.DEGRADED, f"trading REDUCING ({why})")
        elif s.states.venue_states:
            venues = ", ".join(sorted(s.states.venue_states))
            self.daemon.health.report("risk", Level.DEGRADED, f"REDUCING at {venues}")
        else:
            self.daemon.health.clear("risk")

    def _start_kill(self, trip: BreakerTripped) -> None:
        emergency: EmergencyStop | None = self.daemon.services.get("emergency")
        reason = f"breaker {trip.breaker}: {trip.detail}"
        if emergency is None or self._nursery is None:
            log.critical("kill.unavailable", reason=reason, detail="no emergency stop installed or risk not running")
            return

        async def run_kill() -> None:
            try:
                await emergency.run(reason, by=f"breaker:{trip.breaker}")
            except Exception as exc:
                log.critical("kill.failed", reason=reason, error=describe_error(exc))

        self._nursery.start_soon(run_kill)

    # --- the actor ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        bus = self.daemon.bus
        with contextlib.ExitStack() as stack:
            requests = stack.enter_context(bus.serve(topics.RISK_SUBMIT, maxsize=SUBMIT_INBOX))
            feeds: list[tuple[Any, Callable[[Any], None]]] = [
                (bus.subscribe_conflated(topics.QUOTE, key=_instrument_key, name="risk"), self._on_quote),
                (bus.subscribe(topics.FILL, maxsize=4096, name="risk"), self._on_fill),
                (bus.subscribe(topics.ORDER_UPDATE, maxsize=4096, name="risk"), self._on_order_update),
                (bus.subscribe_conflated(topics.FEED_STATUS, key=_venue_key, name="risk"), self._on_feed_status),
                (bus.subscribe(topics.VENUE_STATUS, maxsize=256, name="risk"), self._on_venue_status),
                (bus.subscribe_conflated(topics.POSITIONS, key=_type_key, name="risk"), self._on_positions),
                (bus.subscribe(topics.BALANCE_CHECK, maxsize=256, name="risk"), self._on_balance_check),
                (bus.subscribe(topics.INSTRUMENTS, maxsize=256, name="risk"), self._on_instruments),
                (bus.subscribe(topics.LIFECYCLE, maxsize=256, name="risk"), self._on_lifecycle),
            ]
            for sub, _ in feeds:
                stack.enter_context(sub)
            await self._load()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._serve_submits, requests)
                    for sub, handler in feeds:
                        nursery.start_soon(self._consume, sub, handler)
                    nursery.start_soon(self._tick)
                    nursery.start_soon(self._publish_events)
                    nursery.start_soon(self._journal_events)
                    self._report_health()
                    log.info(
                        "risk.ready",
                        state=self.state,
                        instruments=len(self.sentinel.book.instruments),
                        open_orders=self.sentinel.book.open_order_count(),
                    )
                    task_status.started()
            finally:
                self._nursery = None

    # --- start-up -----------------------------------------------------------------------
    async def _load(self) -> None:
        """Instruments, positions, working orders and (once per process) the journaled trading state."""
        self._load_instruments(self.daemon.services.get("instruments") or {})
        await self._load_positions()
        journal = self.journal_if_running()
        if journal is None:
            log.warning("risk.no_journal", detail="open orders and the trading state cannot be read: orders are refused")
            return
        await self._load_orders(journal)
        if not self._restored:
            await self._restore_state(journal)
            self._restored = True

    def _load_instruments(self, table: Any) -> None:
        instruments = list(table.values()) if isinstance(table, dict) else list(table)
        self.sentinel.add_instruments(i for i in instruments if isinstance(i, Instrument))

    async def _load_positions(self) -> None:
        bus = self.daemon.bus
        if not bus.serving(topics.POSITIONS_QUERY):
            return
        try:
            reply = await bus.request(topics.POSITIONS_QUERY, PositionsQuery(), timeout=POSITIONS_QUERY_TIMEOUT)
        except (NoHandler, RequestTimeout) as exc:
            log.warning("risk.positions_unavailable", error=describe_error(exc))
            return
        if not isinstance(reply, PositionsReply):
            log.warning("risk.positions_unavailable", error=f"unexpected reply {type(reply).__name__}")
            return
        for entry in reply.positions:
            self.sentinel.set_position(entry.venue, entry.symbol, entry.quantity)
        log.info("risk.positions_loaded", positions=len(reply.positions), pending=",".join(reply.pending) or None)

    async def _load_orders(self, journal: Any) -> None:
        """Count every order the journal says may still be working, and drop ones that ended meanwhile."""
        now = trio.current_time()
        open_orders = await journal.open_orders()
        unacknowledged = await journal.intents_without_ack()
        known: set[str] = set()
        for update in open_orders:
            known.add(update.client_order_id)
            self.sentinel.on_order_update(update, now)
        for intent in unacknowledged:
            known.add(intent.client_order_id)
            if intent.client_order_id not in self.sentinel.book.orders:
                self.sentinel.on_order_update(_pending_update(intent), now)
        # Orders this sentinel still counts from an earlier run of the actor: settle them from the journal.
        for cid in [o.client_order_id for o in self.sentinel.book.open_orders() if o.client_order_id not in known]:
            latest = await journal.order(cid)
            if latest is not None:
                self.sentinel.on_order_update(latest, now)
            else:
                self.sentinel.forget_order(cid)
        log.info("risk.orders_loaded", open_orders=self.sentinel.book.open_order_count())

    async def _restore_state(self, journal: Any) -> None:
        last = await _last_global_state(journal)
        if last is None or last.state is TradingState.ACTIVE:
            return
        reason = f"restored from the journal: {last.reason} (by {last.by})"
        if last.state is TradingState.HALTED:
            self.halt("journal", reason)
        else:
            self.reduce("journal", reason)

    # --- order flow ---------------------------------------------------------------------
    async def _serve_submits(self, requests: Any) -> None:
        while True:
            try:
                batch = await requests.receive_batch()
            except trio.EndOfChannel:
                return
            await self._handle_submits(batch)

    async def _handle_submits(self, batch: list[Any]) -> None:
        """Check a batch in order, journal the approved intents in one transaction, then hand them on."""
        now = trio.current_time()
        failsafe = self._failsafe()
        approved: list[tuple[Any, OrderIntent]] = []
        for request in batch:
            intent = request.body
            if not isinstance(intent, OrderIntent):
                request.fail(TypeError(f"{topics.RISK_SUBMIT} takes an OrderIntent, not {type(intent).__name__}"))
                continue
            verdict = self._verdict(intent, now, failsafe)
            if isinstance(verdict, Denial):
                self._deny(request, verdict)
            else:
                approved.append((request, intent))
        if not approved:
            return
        results = await self._journal_intents([intent for _, intent in approved])
        for (request, intent), result in zip(approved, results):
            await self._hand_on(request, intent, result)

    def _verdict(self, intent: OrderIntent, now: float, failsafe: tuple[str, str] | None) -> Approval | Denial:
        self._sync_instrument(intent)
        if self.sentinel.state is not TradingState.HALTED:
            refusal = failsafe or self._gateway_missing(intent.venue)
            if refusal is not None:
                code, reason = refusal
                self.sentinel.denials[code] += 1
                return Denial(intent=intent, code=code, reason=reason)
        return self.sentinel.check(intent, now)

    def _failsafe(self) -> tuple[str, str] | None:
        """Nothing is approved unless the journal and the position keeper are running."""
        if self.journal_if_running() is None:
            return JOURNAL_DOWN, "the journal is not running: nothing is sent until it is back (see `tradectl status`)"
        record = self.daemon.registry.actors.get("positions")
        if record is not None and record.state != "running":
            return POSITIONS_DOWN, f"the position keeper is {record.state}: nothing is sent until it runs again"
        return None

    def _gateway_missing(self, venue: str) -> tuple[str, str] | None:
        if self.daemon.bus.subscribers(topics.orders(venue)) == 0:
            return GATEWAY_DOWN, f"no gateway is running for {venue}: check `tradectl status` and the venue's config"
        return None

    def _sync_instrument(self, intent: OrderIntent) -> None:
        """Instruments arrive when gateways load them; pick up the latest definition lazily."""
        table = self.daemon.services.get("instruments")
        if not table:
            return
        key = (intent.venue, intent.symbol)
        inst = table.get(key)
        if inst is not None and self.sentinel.book.instruments.get(key) is not inst:
            self.sentinel.add_instruments([inst])

    async def _journal_intents(self, intents: list[OrderIntent]) -> list[Any]:
        """One result per intent: True (new), False (already journaled) or the exception that refused it."""
        journal = self.journal_if_running()
        if journal is None:
            return [JournalClosed("the journal stopped")] * len(intents)
        try:
            with trio.move_on_after(JOURNAL_TIMEOUT):
                return list(await journal.record_batch(intents))
        except JournalBatchError as exc:
            return list(exc.results)
        except JournalError as exc:
            return [exc] * len(intents)
        # A request still queued will be committed later; the intent is then journaled
        # but never sent, which recovery settles by looking it up at the venue.
        return [JournalUnavailable(f"the journal did not answer within {JOURNAL_TIMEOUT:g} s")] * len(intents)

    async def _hand_on(self, request: Any, intent: OrderIntent, journaled: Any) -> None:
        cid = intent.client_order_id
        if journaled is not True:
            self.sentinel.forget_order(cid)
            if journaled is False:
                code = DUPLICATE_ORDER_ID
                reason = f"client order id {cid} is already journaled; it may be working: look it up, do not re-send"
            elif isinstance(journaled, JournalConflict):
                code, reason = DUPLICATE_ORDER_ID, str(journaled)
            else:
                code = JOURNAL_DOWN
                reason = f"the intent could not be journaled, so it was not sent ({describe_error(journaled)})"
            self.sentinel.denials[code] += 1
            self._deny(request, Denial(intent=intent, code=code, reason=reason))
            return
        if self.sentinel.state is TradingState.HALTED:
            # Halted while the intent was being journaled: it must not leave now.
            self._not_sent(request, intent, "trading was halted before the order was handed to the gateway")
            return
        log.info(
            "order.intent",
            exec=intent.exec_id,
            cid=cid,
            venue=intent.venue,
            symbol=intent.symbol,
            side=intent.side,
            type=intent.order_type,
            qty=intent.quantity,
            price=intent.price,
            **({"reduce_only": True} if intent.reduce_only else {}),
        )
        try:
            handed_on = self.daemon.bus.publish_nowait(topics.orders(intent.venue), intent)
        except BusClosed:
            self._not_sent(request, intent, "the daemon is stopping", code=TRADING_HALTED)
            return
        if not handed_on:
            # Waiting here would stall approvals for every venue behind one slow gateway.
            why = f"the {intent.venue} gateway's order queue is full (the venue is slow or rate-limited)"
            self._not_sent(request, intent, why, code=GATEWAY_BUSY)
            return
        request.reply(Approval(intent=intent))

    def _not_sent(self, request: Any, intent: OrderIntent, why: str, *, code: str | None = None) -> None:
        """An intent journaled but never handed on: record that, so recovery does not look for it."""
        self.sentinel.forget_order(intent.client_order_id)
        self._to_journal.put(
            OrderUpdate(
                venue=intent.venue,
                symbol=intent.symbol,
                client_order_id=intent.client_order_id,
                status=OrderStatus.REJECTED,
                side=intent.side,
                quantity=intent.quantity,
                price=intent.price,
                reason=f"not sent: {why}",
                ts=trio.current_time(),
            )
        )
        if code is None:
            code = TRADING_HALTED if self.sentinel.state is TradingState.HALTED else JOURNAL_DOWN
        self.sentinel.denials[code] += 1
        self._deny(request, Denial(intent=intent, code=code, reason=f"{why}; the order was not sent"))

    def _deny(self, request: Any, denial: Denial) -> None:
        intent = denial.intent
        log.warning(
            "risk.denied",
            code=denial.code,
            exec=intent.exec_id,
            cid=intent.client_order_id,
            venue=intent.venue,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.quantity,
            price=intent.price,
            reason=denial.reason,
        )
        self._recent_denials.append(
            {
                "at": trio.current_time(),
                "code": denial.code,
                "exec": intent.exec_id,
                "cid": intent.client_order_id,
                "instrument": f"{intent.venue}:{intent.symbol}",
                "reason": denial.reason,
            }
        )
        self._to_publish.put((topics.ORDER_DENIED, denial))
        if len(self._to_journal) < MAX_QUEUED_DENIALS:
            self._to_journal.put(denial)
        else:
            if not self.denials_not_journaled:
                log.error("risk.denials_not_journaled", queued=len(self._to_journal), detail="the journal is not keeping up")
            self.denials_not_journaled += 1
        request.reply(denial)

    # --- inputs -------------------------------------------------------------------------
    async def _consume(self, sub: Any, handle: Callable[[Any], None]) -> None:
        """Feed one subscription to its handler; a malformed message is logged, never fatal."""
        while True:
            try:
                batch = await sub.receive_batch()
            except trio.EndOfChannel:
                return
            for msg in batch:
                try:
                    handle(msg)
                except Exception as exc:
                    log.error("risk.bad_message", topic=sub.topic, type=type(msg).__name__, error=describe_error(exc))

    def _on_quote(self, msg: Any) -> None:
        if isinstance(msg, Quote):
            self.sentinel.on_quote(msg)

    def _on_fill(self, msg: Any) -> None:
        if isinstance(msg, Fill):
            self.sentinel.on_fill(msg)

    def _on_order_update(self, msg: Any) -> None:
        if isinstance(msg, OrderUpdate):
            self._apply(self.sentinel.on_order_update(msg, trio.current_time()))

    def _on_feed_status(self, msg: Any) -> None:
        if isinstance(msg, FeedStatus):
            self._apply(self.sentinel.on_feed_status(msg))

    def _on_venue_status(self, msg: Any) -> None:
        if isinstance(msg, VenueStatus):
            self._apply(self.sentinel.on_venue_status(msg))

    def _on_positions(self, msg: Any) -> None:
        if not isinstance(msg, PositionsSummary):
            return
        for venue in msg.balance_mismatches:
            if venue not in self._balance_mismatches:
                self._balance_mismatch(venue, "reported by the position keeper's summary")
        if msg.equity_complete:
            self._apply(self.sentinel.on_equity(msg.equity, msg.utc_ms, trio.current_time()))

    def _on_balance_check(self, msg: Any) -> None:
        if isinstance(msg, BalanceMismatch):
            detail = "; ".join(f"{d.asset} ours {d.ours} venue {d.venue_total}" for d in msg.differences)
            self._balance_mismatch(msg.venue, detail)
        elif isinstance(msg, BalancesAcknowledged):
            if self._balance_mismatches.pop(msg.venue, None) is not None:
                log.warning("risk.balances_acknowledged", venue=msg.venue, by=msg.by, reason=msg.reason)

    def _balance_mismatch(self, venue: str, detail: str) -> None:
        """Balances that disagree with the ledger mean positions are not what we think: halt."""
        first = not self._balance_mismatches
        self._balance_mismatches[venue] = detail
        text = f"balances at {venue} differ from the ledger: {detail}"
        if first:
            self._apply(
                self.sentinel.states.trip(BALANCE_MISMATCH, text, TradingState.HALTED, at=trio.current_time())
            )
        else:
            log.error("risk.balance_mismatch", venue=venue, detail=detail)

    def _on_instruments(self, msg: Any) -> None:
        items = msg if isinstance(msg, list | tuple) else [msg]
        self._load_instruments(items)

    def _on_lifecycle(self, msg: Any) -> None:
        if isinstance(msg, SupervisorGaveUp):
            self._apply(self.sentinel.on_supervisor_gave_up(msg))

    async def _tick(self) -> None:
        while True:
            await trio.sleep(TICK_SECONDS)
            self._apply(self.sentinel.on_tick(trio.current_time()))

    # --- outputs ------------------------------------------------------------------------
    async def _publish_events(self) -> None:
        bus = self.daemon.bus
        while True:
            topic, msg = await self._to_publish.first()
            try:
                await bus.publish(topic, msg)
            except BusClosed:
                return
            self._to_publish.done()

    async def _journal_events(self) -> None:
        """Journal state changes, trips, limit changes and denials in order; retry until durable."""
        while True:
            record = await self._to_journal.first()
            await self._journal_one(record)
            self._to_journal.done()

    async def _journal_one(self, record: Any) -> None:
        while True:
            journal = self.journal_if_running()
            if journal is not None:
                try:
                    if isinstance(record, OrderUpdate):
                        await journal.record_update(record)
                    else:
                        await journal.record_risk_event(record)
                except (JournalClosed, JournalUnavailable) as exc:
                    if not self._journal_failing:
                        log.error("risk.journal_retry", record=type(record).__name__, error=describe_error(exc))
                    self._journal_failing = True
                except JournalError as exc:
                    log.error("risk.journal_refused", record=type(record).__name__, error=describe_error(exc))
                    return
                else:
                    self._journal_failing = False
                    return
            await trio.sleep(JOURNAL_RETRY_SECONDS)

    def journal_if_running(self) -> Any:
        """The journal handle if it can take records now, else None."""
        journal = self.daemon.services.get("journal")
        if journal is None:
            return None
        record = self.daemon.registry.actors.get("journal")
        if record is not None and record.state != "running":
            return None
        return journal if journal.stats().running else None

    async def drain(self) -> None:
        """Wait until everything queued so far is published and journaled (tests, orderly stops)."""
        while len(self._to_journal) or len(self._to_publish):
            await trio.sleep(0.01)


# ---------------------------------------------------------------------------------------
# Control commands
# ---------------------------------------------------------------------------------------


class NoArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class RiskSetArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: str
    value: str | int | float | bool | None
    reason: str = ""


class HaltArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str


class StateArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str
    venue: str | None = None


class KillArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    flatten: bool = False
    reason: str = ""
    exit: bool = False


def _register_commands(daemon: Daemon, risk: RiskActor, emergency: EmergencyStop) -> None:
    c = daemon.commands

    async def show(args: NoArgs, caller: Caller) -> dict[str, Any]:
        return risk.snapshot()

    async def risk_set(args: RiskSetArgs, caller: Caller) -> dict[str, Any]:
        try:
            change = await risk.set_limit(args.key, _value_text(args.value), by=caller.user, reason=args.reason)
        except LimitError as exc:
            raise CommandError("bad_limit", str(exc)) from None
        except JournalError as exc:
            raise CommandError("journal_down", f"limit not changed: {exc}") from None
        return {"key": change.limit, "previous": change.previous, "value": change.value, "by": change.by}

    def state_reply(events: list[StateEvent]) -> dict[str, Any]:
        return {
            "state": risk.state.value,
            "venues_reducing": sorted(risk.sentinel.states.venue_states),
            "changed": [msgspec.to_builtins(e) for e in events],
        }

    def guarded(fn: Callable[[], list[StateEvent]]) -> dict[str, Any]:
        try:
            return state_reply(fn())
        except ValueError as exc:
            raise CommandError("refused", str(exc)) from None

    async def halt(args: HaltArgs, caller: Caller) -> dict[str, Any]:
        return guarded(lambda: risk.halt(caller.user, args.reason))

    async def reduce(args: StateArgs, caller: Caller) -> dict[str, Any]:
        return guarded(lambda: risk.reduce(caller.user, args.reason, args.venue))

    async def resume(args: StateArgs, caller: Caller) -> dict[str, Any]:
        return guarded(lambda: risk.resume(caller.user, args.reason, args.venue))

    async def kill(args: KillArgs, caller: Caller) -> Any:
        reason = args.reason.strip() or f"tradectl kill by {caller.user}"
        report = await emergency.run(reason, by=caller.user, flatten=args.flatten)
        if args.exit:
            why = f"tradectl kill --exit by {caller.user}"
            risk.later(EXIT_DELAY, lambda: daemon.request_stop(why))
        return report

    c.add("risk", show, NoArgs, help="limits with their usage, breakers, positions and the trading state")
    c.add("risk-set", risk_set, RiskSetArgs, help="change one risk limit at run time (journaled); keys: tradectl risk set --help", audited=True)
    c.add("halt", halt, HaltArgs, help="refuse every new order (cancels still pass) until resume", audited=True)
    c.add("reduce", reduce, StateArgs, help="let only position-reducing orders through (optionally one venue)", audited=True)
    c.add("resume", resume, StateArgs, help="trade again (optionally one venue), clearing latched breakers", audited=True)
    c.add("kill", kill, KillArgs, help="emergency stop: halt, cancel everything everywhere, optionally flatten", audited=True)


# ---------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------


def install(daemon: Daemon) -> RiskActor:
    """Add the risk sentinel (a core actor), its commands and the emergency stop to `daemon`."""
    from daemon import emergency as emergency_mod

    risk = RiskActor(daemon)
    daemon.services["risk"] = risk
    stop = emergency_mod.install(daemon)
    daemon.child_factories.append(lambda d: [ChildSpec("risk", risk.run, restart=Restart.PERMANENT, core=True)])
    daemon.status_extras["risk"] = risk.status
    daemon.reload_hooks.append(risk.on_reload)
    _register_commands(daemon, risk, stop)
    return risk


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _instrument_key(msg: Any) -> Any:
    return (getattr(msg, "venue", None), getattr(msg, "symbol", None))


def _venue_key(msg: Any) -> Any:
    return getattr(msg, "venue", None)


def _type_key(msg: Any) -> Any:
    return (type(msg).__name__, getattr(msg, "venue", None), getattr(msg, "symbol", None))


def _pending_update(intent: OrderIntent) -> OrderUpdate:
    """A journaled intent no venue has answered yet: it may be working, so it counts."""
    return OrderUpdate(
        venue=intent.venue,
        symbol=intent.symbol,
        client_order_id=intent.client_order_id,
        status=OrderStatus.PENDING_NEW,
        side=intent.side,
        quantity=intent.quantity,
        price=intent.price,
    )


async def _last_global_state(journal: Any) -> TradingStateChanged | None:
    """The newest global TradingStateChanged in the journal, looking further back as needed."""
    limit = 1000
    while True:
        events = await journal.risk_events(limit=limit)
        for entry in reversed(events):
            event = entry.event
            if isinstance(event, TradingStateChanged) and event.venue is None:
                return event
        if len(events) < limit or limit >= 1_000_000:
            return None
        limit *= 10


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _value_text(value: Any) -> str:
    return "none" if value is None else (_text(value) or "")


def _flatten_builtins(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten_builtins(value, f"{prefix}{key}."))
        return out if data else {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


def _changed_keys(old: RiskLimits, new: RiskLimits) -> list[str]:
    a = _flatten_builtins(msgspec.to_builtins(old))
    b = _flatten_builtins(msgspec.to_builtins(new))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _lookup(limits: RiskLimits, dotted: str) -> Any:
    node: Any = msgspec.to_builtins(limits)
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000

