"""gateway[venue]: order entry at one venue, and the only way our orders' fate reaches the daemon.

In (lossless, ``topics.orders(venue)``): approved `OrderIntent`, `CancelOrder`,
`CancelAllOrders`. Out, each journaled *before* it is published:
`OrderUpdate` (``topics.ORDER_UPDATE``), `Fill` (``topics.FILL``, only when the
journal did not know its trade id), `BalanceUpdate` (``topics.BALANCE``) and
`VenueStatus` (``topics.VENUE_STATUS``: up, rate_limited, banned, down).

Sending an order. The quantity and price are rounded to the instrument's
filters *after* the algorithm chose them and checked again with
`Instrument.check`; a violation becomes a REJECTED update with the reason and
nothing is sent. Then PENDING_NEW, then the POST, whose answer is recorded.
A POST whose outcome is lost (timeout, 5xx, -1007) leaves the order UNKNOWN
(``order.unknown``) and is never sent again: the order is looked up by its
client order id with back-off until the venue or the user stream says what
happened. Only after `unknown_grace` seconds of "no such order", and no trade
carrying its id, is it REJECTED as never having reached the venue. A refusal
with "Duplicate order sent." means the first one did arrive: it is looked up.

Rate limits. A 429 stops every order for the venue's Retry-After (published as
``rate_limited``); orders wait, and one that could not be
sent within `order_max_wait` seconds is REJECTED rather than sent into a
market that has moved on. Cancels never queue behind orders, but they too wait
out a 429: sending during one is how an IP earns a 418 ban, which blocks the
cancels far longer. Only the emergency stop (`cancel_all_and_verify`) uses the
venue's reserve of request weight and its own connection pool. A 418 marks the
venue ``banned``, health CRITICAL, and an alert in the log.

The user stream runs in its own task and reconnects with back-off. Every
(re)connection is followed by a reconciliation by REST, which covers whatever
the stream missed: balances, the venue's open orders against ours (an order we
do not know is adopted or cancelled, per `unknown_orders`), every order we
think is working but the venue no longer lists, and the trades since the last
one we journaled (Binance's trade list names orders only by the venue's id,
which the journal maps back to ours). Fills are unique by trade id, so a fill
the stream and the reconciliation both report is journaled and published once.

Start-up: instruments are loaded into ``daemon.services["instruments"]``, the
journal's open orders and unanswered intents are read, the user stream
connects and the first reconciliation completes, and only then is the actor
ready: the daemon never reports READY on an unreconciled venue.

Order states move through the explicit machine in `actors.order_state`; an
impossible transition is logged (``order.transition_invalid``) and the order is
looked up, never crashed on. A cancel asked for an order still being sent is
carried out once the POST is answered; one asked before it was sent means it
is never sent.

Emergency stop (`cancel_all_and_verify`, on the handle): cancel-all per symbol
in parallel over the adapter's emergency pool, then an open-orders query,
repeated until nothing is open or the deadline passes. Orders approved before
the kill but not yet sent are rejected, and a POST already on the wire is
waited for and its order cancelled, so nothing is left working. It needs no
running actor.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio

from actors.order_state import (
    OrderTable,
    Source,
    TrackedOrder,
    Verdict,
    fill_from_trade,
    update_from_state,
)
from daemon import topics
from daemon.config import register_section
from daemon.health import Level
from daemon.journal import JournalBatchError
from daemon.logs import Logger, describe_error, get_logger
from daemon.messages import (
    BalanceUpdate,
    CancelAllOrders,
    CancelOrder,
    Fill,
    OrderIntent,
    OrderUpdate,
    VenueCancelReport,
    VenueStatus,
)
from daemon.model import FilterViolation, Instrument, OrderStatus, OrderType, TimeInForce
from daemon.supervisor import Backoff
from venues.base import (
    AccountTrade,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
    RateLimited,
    UnknownOutcome,
    VenueAdapter,
    VenueBanned,
    VenueError,
    VenueUnavailable,
)

if TYPE_CHECKING:
    from actors.feed import Feed
    from daemon.bus import Bus, LosslessSubscription
    from daemon.health import Health
    from daemon.journal import Journal


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[gateway]`` section: order entry at every venue."""

    unknown_orders: Literal["adopt", "cancel"] = "adopt"  # open orders at the venue that we did not place
    start_timeout: float = 60.0  # instruments + user stream + first reconciliation
    inbox_size: int = 1024
    max_in_flight: int = 4  # order POSTs at once
    order_max_wait: float = 30.0  # an order not sent within this (rate limit, venue unreachable) is rejected
    unknown_grace: float = 30.0  # an UNKNOWN order counts as never placed only after this long not found
    settle: Backoff = Backoff(initial=0.5, multiplier=2.0, maximum=10.0, jitter=0.2)
    retry: Backoff = Backoff(initial=0.25, multiplier=2.0, maximum=5.0, jitter=0.2)
    cancel_retry_for: float = 60.0  # keep retrying a cancel this long before leaving it to reconciliation
    reconnect: Backoff = Backoff(initial=1.0, multiplier=2.0, maximum=30.0, jitter=0.2, reset_after=60.0)
    max_connection_age: float = 23.5 * 3600  # replace the user stream before the venue's 24 h limit
    down_after: float = 10.0  # user stream down this long: order entry is reported down
    reconcile_interval: float = 0.0  # also reconcile periodically (0: on (re)connect and stream trouble only)
    instrument_refresh: float = 3600.0  # reload filters this often (0: never)
    keep_final_orders: int = 10_000  # final orders remembered, to recognise late events
    batch: int = 256  # stream events journaled per transaction at most
    kill_retry: float = 0.2  # first pause between cancel-all rounds in an emergency stop

    def __post_init__(self) -> None:
        for key in ("start_timeout", "order_max_wait", "unknown_grace", "cancel_retry_for", "max_connection_age", "down_after", "kill_retry"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")
        for key in ("reconcile_interval", "instrument_refresh"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must not be negative (0 turns it off), got {getattr(self, key)}")
        for key in ("inbox_size", "max_in_flight", "keep_final_orders", "batch"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1, got {getattr(self, key)}")


register_section("gateway", GatewayConfig)

TRADES_PAGE = 1000  # both adapters list at most this many trades per call
EVENT_BUFFER = 4096
NEVER_REACHED = "never reached the venue"
_RECONCILE_NOTICES = frozenset({"malformed_frame", "unknown_event", "balance_delta"})


class GatewayNotReady(RuntimeError):
    """The gateway cannot start: a missing part (journal) or a venue that does not answer."""


# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


def prepare_order(intent: OrderIntent, instrument: Instrument, reference_price: Decimal | None = None) -> OrderRequest:
    """The request for `intent`, rounded to the instrument's filters and checked again.

    Quantities are truncated to the step (never more than asked), prices
    rounded away from crossing (a buy down, a sell up). A MARKET order is
    checked against `reference_price` (the mid) for the notional rules when
    one is known. Raises `FilterViolation` naming the filter.
    """
    if not instrument.trading:
        raise FilterViolation("STATUS", f"{instrument.symbol} is not trading at {instrument.venue}")
    is_market = intent.order_type is OrderType.MARKET
    iceberg = instrument.round_qty(intent.iceberg_qty) if intent.iceberg_qty is not None else None
    if is_market and intent.quote_quantity is not None:
        if intent.quote_quantity <= 0:
            raise FilterViolation("NOTIONAL", f"quote quantity {intent.quote_quantity} must be positive")
        if instrument.min_notional and intent.quote_quantity < instrument.min_notional:
            raise FilterViolation("NOTIONAL", f"quote quantity {intent.quote_quantity} below minimum {instrument.min_notional}")
        return OrderRequest(
            symbol=intent.symbol,
            client_order_id=intent.client_order_id,
            side=intent.side,
            order_type=intent.order_type,
            quote_quantity=intent.quote_quantity,
        )
    qty = instrument.round_qty(intent.quantity)
    if is_market:
        price = None
        instrument.check(qty, reference_price, is_market=True)
    else:
        if intent.price is None:
            raise FilterViolation("PRICE_FILTER", f"a {intent.order_type} order needs a price")
        price = instrument.round_price(intent.price, intent.side)
        instrument.check(qty, price)
    if iceberg is not None and (iceberg <= 0 or iceberg >= qty):
        raise FilterViolation("ICEBERG_PARTS", f"iceberg quantity {iceberg} must be above zero and below the quantity {qty}")
    if intent.order_type is OrderType.LIMIT:
        tif = intent.time_in_force or TimeInForce.GTC
    else:
        tif = None
    return OrderRequest(
        symbol=intent.symbol,
        client_order_id=intent.client_order_id,
        side=intent.side,
        order_type=intent.order_type,
        quantity=qty,
        price=price,
        time_in_force=tif,
        iceberg_qty=iceberg,
    )


def _is_duplicate(exc: OrderRejected) -> bool:
    return "duplicate" in str(exc.message).lower()


def _trade_key(trade_id: str) -> tuple[int, str]:
    return (len(trade_id), trade_id) if trade_id.isdigit() else (0, trade_id)


class _Latency:
    """Round trips of REST calls, for `venues`."""

    __slots__ = ("last", "average", "count")

    def __init__(self) -> None:
        self.last: float | None = None
        self.average: float | None = None
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.last = seconds
        self.count += 1
        self.average = seconds if self.average is None else self.average * 0.9 + seconds * 0.1

    def as_ms(self) -> dict[str, float | None]:
        return {
            "last": round(self.last * 1000, 1) if self.last is not None else None,
            "average": round(self.average * 1000, 1) if self.average is not None else None,
        }


# ---------------------------------------------------------------------------------------
# The gateway
# ---------------------------------------------------------------------------------------


class Gateway:
    """gateway[venue]: the actor (`run`) and its handle (`daemon.services["gateways"][venue]`).

    The handle outlives restarts of the actor: the inbox subscription (so
    cancels queued while it restarts are not lost), the counters that
    `venues` shows, and `cancel_all_and_verify`, which works with the actor
    stopped (the emergency stop after the root supervisor gave up).
    """

    def __init__(
        self,
        venue: str,
        adapter: VenueAdapter,
        *,
        bus: Bus,
        journal: Callable[[], Journal | None] | Journal,
        instruments: dict[tuple[str, str], Instrument],
        symbols: Sequence[str] = (),
        config: GatewayConfig | None = None,
        health: Health | None = None,
        feed: Feed | None = None,
        rng: random.Random | None = None,
        halted: Callable[[], bool] | None = None,
    ) -> None:
        self.venue = venue
        # The last line of defence: nothing leaves while trading is HALTED here, even an
        # intent approved before the halt that reached the inbox late.
        self.halted = halted or (lambda: False)
        self.adapter = adapter
        self.bus = bus
        self._journal = journal
        self.instruments = instruments
        self.symbols = tuple(symbols)
        self.config = config or GatewayConfig()
        self.health = health
        self.feed = feed
        self.rng = rng or random.Random()
        self.log: Logger = get_logger(f"gateway.{venue}")
        self.inbox: LosslessSubscription[Any] | None = None
        self.ready = trio.Event()  # set once the first run has reconciled
        # status, kept across runs
        self.order_entry = "starting"
        self.stream_state = "disconnected"
        self.stream_reconnects = 0
        self.reconciles = 0
        self.last_reconcile: float | None = None
        self.last_error = ""
        self.latency = _Latency()
        self.counts = dict.fromkeys(("sent", "acked", "rejected", "unknown", "canceled", "fills", "adopted", "invalid"), 0)
        self.kills = 0
        self._published_entry: str | None = None
        self._blocked_until = 0.0
        self._blocked_reason = ""
        self._kill_epoch = -math.inf
        self._reset_run()

    def _reset_run(self) -> None:
        self.table = OrderTable(self.venue, keep_final=self.config.keep_final_orders)
        self._lock = trio.Lock()
        self._reconcile_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._events_send: trio.MemorySendChannel[Any] | None = None
        self._running = False
        self._reconciled = trio.Event()
        self._reconcile_wanted = trio.Event()
        self._high_water: dict[str, str] = {}
        self._received_at: dict[str, float] = {}
        self._posting: set[str] = set()  # being sent (waiting to be allowed, or on the wire)
        self._on_wire: set[str] = set()  # POST sent, no answer yet
        self._settling: set[str] = set()
        self._cancelling: set[str] = set()
        self._requerying: set[str] = set()
        self._stream_since: float | None = None
        self._stream_down_since: float | None = None

    @property
    def journal(self) -> Journal:
        journal = self._journal() if callable(self._journal) else self._journal
        if journal is None:
            raise GatewayNotReady(f"gateway[{self.venue}] needs the journal, which is not installed")
        return journal  # type: ignore[return-value]

    # =======================================================================================
    # The handle
    # =======================================================================================

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        budget = getattr(self.adapter, "budget", None)
        usage = None
        if budget is not None:
            usage = {key: {"used": used, "limit": limit} for key, (used, limit) in budget.usage().items()}
        return {
            "order_entry": self.order_entry,
            "running": self._running,
            "stream": self.stream_state,
            "stream_connected_for": round(now - self._stream_since, 3) if self._stream_since is not None else None,
            "stream_reconnects": self.stream_reconnects,
            "latency_ms": self.latency.as_ms(),
            "rate_limit": usage,
            "blocked_for": round(max(0.0, self._blocked_until - now), 3) or None,
            "orders": self.table.counts(),
            "working": len(self.table.working()),
            "counts": dict(self.counts),
            "reconciles": self.reconciles,
            "last_reconcile_ago": round(now - self.last_reconcile, 3) if self.last_reconcile is not None else None,
            "last_error": self.last_error,
        }

    async def cancel_all_and_verify(self, deadline: float) -> VenueCancelReport:
        """Cancel every open order at the venue, verify with an open-orders query, retry until
        none remain or `deadline` (trio's clock) passes.

        Uses the adapter's emergency pool and reserve, symbol by symbol in
        parallel, and works whether or not the actor runs. Orders approved
        before this call but not sent yet are never sent.
        """
        started = trio.current_time()
        self.kills += 1
        self._kill_epoch = started
        self._drain_inbox_for_kill()
        list_open = getattr(self.adapter, "emergency_open_orders", None) or self.adapter.open_orders
        symbols = {o.symbol for o in self.table.working() if o.status is not None}
        cancelled = 0
        attempts = 0
        verified = False
        still_open: tuple[str, ...] = ()
        error = ""
        delay = self.config.kill_retry
        self.log.warning("kill.venue_started", venue=self.venue, known_symbols=sorted(symbols) or None)

        async def cancel_symbol(symbol: str) -> None:
            nonlocal cancelled, error
            try:
                states = await self.adapter.emergency_cancel_all(symbol)
            except (RateLimited, VenueUnavailable, UnknownOutcome, VenueError) as exc:
                error = f"{symbol}: {describe_error(exc)}"
                self.log.error("kill.cancel_failed", venue=self.venue, symbol=symbol, error=describe_error(exc))
                return
            cancelled += len(states)
            self._hand_to_actor((update_from_state(self.venue, s, ts=trio.current_time()) for s in states), Source.QUERY)

        async def query_open() -> list[OrderState] | None:
            nonlocal error
            try:
                return list(await list_open())
            except (RateLimited, VenueUnavailable, UnknownOutcome, VenueError) as exc:
                error = f"open orders: {describe_error(exc)}"
                self.log.error("kill.verify_failed", venue=self.venue, error=describe_error(exc))
                return None

        with trio.move_on_at(deadline):
            if symbols:
                # cancel where we know orders work first, saving a round trip; the query after verifies
                open_now = None
                still_open = tuple(o.client_order_id for o in self.table.working() if o.status is not None)
            else:
                open_now = await query_open()
                if open_now is None:
                    symbols |= set(self.symbols)  # cannot see what is open: cancel wherever we trade
            while True:
                if open_now is not None:
                    symbols |= {o.symbol for o in open_now}
                    still_open = tuple(o.client_order_id for o in open_now)
                    if not open_now:
                        if not self._on_wire:
                            verified = True
                            error = ""
                            break
                        # an order POST sent before the kill may still land: wait for its answer, look again
                        while self._on_wire:
                            await trio.sleep(0.05)
                        open_now = await query_open()
                        continue
                attempts += 1
                async with trio.open_nursery() as nursery:
                    for symbol in sorted(symbols):
                        nursery.start_soon(cancel_symbol, symbol)
                open_now = await query_open()
                if open_now is None or open_now:
                    await trio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        elapsed = trio.current_time() - started
        if not verified and not error:
            error = f"deadline passed with {len(still_open)} order(s) still open"
        report = VenueCancelReport(
            venue=self.venue,
            cancelled=cancelled,
            still_open=still_open if not verified else (),
            attempts=attempts,
            elapsed=round(elapsed, 6),
            verified=verified,
            error=error,
        )
        log = self.log.warning if verified else self.log.critical
        log(
            "kill.venue_done",
            venue=self.venue,
            cancelled=cancelled,
            still_open=len(report.still_open),
            attempts=attempts,
            verified=verified,
            elapsed=round(elapsed, 3),
            error=error or None,
        )
        return report

    def _drain_inbox_for_kill(self) -> None:
        """Orders approved before the kill and still queued are never sent: reject them."""
        inbox = self.inbox
        if inbox is None:
            return
        dropped: list[OrderUpdate] = []
        while True:
            try:
                msg = inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if type(msg) is OrderIntent:
                dropped.append(self._local_reject(msg, "not sent: emergency stop"))
        if dropped:
            self.log.warning("kill.orders_dropped", venue=self.venue, orders=len(dropped))
            self._hand_to_actor(dropped, Source.LOCAL)

    def _hand_to_actor(self, items: Iterable[Any], source: Source) -> None:
        """Give venue answers gathered outside the actor to it for journaling (best effort:
        if it is not running, the next start's reconciliation finds the same facts)."""
        send = self._events_send
        if send is None:
            return
        for item in items:
            try:
                send.send_nowait((source, item))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                return

    # =======================================================================================
    # The actor
    # =======================================================================================

    async def run(self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED) -> None:
        self._reset_run()
        journal = self.journal
        send, receive = trio.open_memory_channel[tuple[Source, Any]](EVENT_BUFFER)
        to_send, to_send_receive = trio.open_memory_channel[OrderIntent](self.config.inbox_size)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._events_send = send
                nursery.start_soon(self._apply_events, receive)
                await self._load_instruments(startup=True)
                await self._load_journal(journal)
                nursery.start_soon(self._user_stream_loop)
                await self._reconciled.wait()
                if self.inbox is None:
                    self.inbox = self.bus.subscribe(
                        topics.orders(self.venue), maxsize=self.config.inbox_size, name=f"gateway[{self.venue}]"
                    )
                self._running = True
                self.ready.set()
                self._set_order_entry("up")
                task_status.started(self)
                for _ in range(self.config.max_in_flight):
                    nursery.start_soon(self._sender, to_send_receive.clone())
                to_send_receive.close()
                nursery.start_soon(self._read_inbox, self.inbox, to_send)
                nursery.start_soon(self._housekeeping)
        finally:
            self._running = False
            self._events_send = None
            self._nursery = None
            send.close()
            to_send.close()

    # --- start-up -----------------------------------------------------------------------------
    async def _load_instruments(self, *, startup: bool = False) -> None:
        attempt = 0
        while True:
            try:
                instruments = await self.adapter.instruments()
                break
            except (RateLimited, VenueUnavailable, UnknownOutcome, VenueError) as exc:
                if not startup:
                    self.log.warning("gateway.instruments_failed", venue=self.venue, error=describe_error(exc))
                    return
                self.last_error = describe_error(exc)
                delay = max(self.config.retry.delay(attempt, self.rng), getattr(exc, "retry_after", 0.0))
                attempt += 1
                self.log.warning(
                    "gateway.start_retry", venue=self.venue, step="instruments", error=describe_error(exc), delay=round(delay, 3)
                )
                await trio.sleep(delay)
        changed = []
        for inst in instruments:
            key = (self.venue, inst.symbol)
            if self.instruments.get(key) != inst:
                self.instruments[key] = inst
                changed.append(inst)
        missing = [s for s in self.symbols if (self.venue, s) not in self.instruments]
        if missing:
            self.log.error("gateway.unknown_symbols", venue=self.venue, symbols=missing)
        if changed:
            self.log.info("gateway.instruments", venue=self.venue, loaded=len(instruments), changed=len(changed))
            await self.bus.publish(topics.INSTRUMENTS, changed)

    async def _load_journal(self, journal: Journal) -> None:
        """Our view of the venue as the journal left it: open orders, unanswered intents, trade marks."""
        open_orders = await journal.open_orders(self.venue)
        for update in open_orders:
            self.table.load(update)
        unanswered = await journal.intents_without_ack(self.venue)
        for intent in unanswered:
            order = self.table.track_intent(intent)
            if order.status is None:
                order.status = OrderStatus.PENDING_NEW
        for (venue, symbol), trade_id in (await journal.last_trade_ids()).items():
            if venue == self.venue:
                self._high_water[symbol] = trade_id
        self.log.info(
            "recovery.loaded",
            venue=self.venue,
            open_orders=len(open_orders),
            unanswered_intents=len(unanswered),
            symbols_with_fills=len(self._high_water),
        )

    # --- recording ----------------------------------------------------------------------------
    async def _record(self, items: Sequence[Any], source: Source, *, inferred: bool = False) -> list[Any]:
        """Judge, journal, then publish `items` (OrderUpdate, Fill, BalanceUpdate), in order.

        Returns what was published. The journal write comes first: if it
        fails, nothing is published and the actor crashes (its restart
        reconciles with the venue).
        """
        async with self._lock:
            records: list[Any] = []
            follow_ups: list[tuple[str, TrackedOrder]] = []
            for item in items:
                kind = type(item)
                if kind is OrderUpdate:
                    verdict, order = self.table.apply(item, source, inferred=inferred)
                    if verdict is Verdict.APPLY:
                        records.append(item)
                        if not order.ours and order.is_working:
                            follow_ups.append(("foreign", order))
                        elif order.cancel_requested and order.is_working and order.venue_order_id is not None:
                            follow_ups.append(("cancel", order))
                    elif verdict is Verdict.INVALID:
                        self.counts["invalid"] += 1
                        self.log.error(
                            "order.transition_invalid",
                            venue=self.venue,
                            cid=item.client_order_id,
                            symbol=item.symbol,
                            held=order.status,
                            held_filled=order.filled_qty,
                            got=item.status,
                            got_filled=item.filled_qty,
                            source=source.value,
                        )
                        follow_ups.append(("requery", order))
                elif kind is Fill or kind is BalanceUpdate:
                    records.append(item)
            if not records:
                results: list[Any] = []
            else:
                try:
                    results = await self.journal.record_batch(records)
                except JournalBatchError as exc:
                    results = exc.results  # refused ones were logged by the journal; publish the rest
            published = []
            for record, result in zip(records, results):
                if isinstance(result, Exception):
                    continue
                kind = type(record)
                if kind is OrderUpdate:
                    await self.bus.publish(topics.ORDER_UPDATE, record)
                    self._log_update(record)
                elif kind is Fill:
                    if result is not True:
                        continue  # this trade id was journaled before: published then
                    self.counts["fills"] += 1
                    await self.bus.publish(topics.FILL, record)
                    self.log.info(
                        "fill",
                        venue=self.venue,
                        cid=record.client_order_id,
                        symbol=record.symbol,
                        side=record.side,
                        qty=record.qty,
                        price=record.price,
                        trade_id=record.trade_id,
                        fee=record.fee,
                        fee_asset=record.fee_asset,
                    )
                else:
                    await self.bus.publish(topics.BALANCE, record)
                published.append(record)
        for what, order in follow_ups:
            self._follow_up(what, order)
        return published

    def _log_update(self, update: OrderUpdate) -> None:
        status = update.status
        fields = dict(venue=self.venue, cid=update.client_order_id, symbol=update.symbol)
        if status is OrderStatus.REJECTED:
            self.counts["rejected"] += 1
            self.log.warning("order.rejected", **fields, reason=update.reason or None)
        elif status is OrderStatus.CANCELED:
            self.counts["canceled"] += 1
            self.log.info("order.canceled", **fields, filled=update.filled_qty)
        elif status is OrderStatus.UNKNOWN:
            self.counts["unknown"] += 1
            self.log.warning("order.unknown", **fields, reason=update.reason or None)
        elif status in (OrderStatus.PENDING_NEW, OrderStatus.PENDING_CANCEL):
            return
        else:
            self.log.debug("order.state", **fields, status=status, filled=update.filled_qty)

    def _follow_up(self, what: str, order: TrackedOrder) -> None:
        nursery = self._nursery
        if nursery is None:
            return
        if what == "foreign":
            if order.client_order_id in self._cancelling:
                return
            self.counts["adopted"] += 1
            if self.config.unknown_orders == "cancel":
                self.log.warning("order.foreign", venue=self.venue, cid=order.client_order_id, symbol=order.symbol, action="cancel")
                order.ours = True  # ours to cancel from now on; do not announce it twice
                nursery.start_soon(self._cancel, order.symbol, order.client_order_id, "foreign order (unknown_orders = cancel)")
            else:
                self.log.warning("order.adopted", venue=self.venue, cid=order.client_order_id, symbol=order.symbol)
                order.ours = True
        elif what == "cancel":
            order.cancel_requested = False
            nursery.start_soon(self._cancel, order.symbol, order.client_order_id, "cancel asked while the order was being sent")
        elif what == "requery" and order.client_order_id not in self._requerying:
            nursery.start_soon(self._requery, order.client_order_id)

    async def _apply_events(self, receive: trio.MemoryReceiveChannel[tuple[Source, Any]]) -> None:
        """Journal and publish events in batches: one transaction for whatever is queued."""
        batch_limit = self.config.batch
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < batch_limit:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                # consecutive items of one source keep their order and share a transaction
                start = 0
                while start < len(batch):
                    source = batch[start][0]
                    end = start
                    while end < len(batch) and batch[end][0] is source:
                        end += 1
                    await self._record([item for _, item in batch[start:end]], source)
                    start = end

    # --- the inbox and sending ------------------------------------------------------------------
    async def _read_inbox(self, inbox: LosslessSubscription[Any], to_send: trio.MemorySendChannel[OrderIntent]) -> None:
        # One message at a time: a restart can then lose at most the one being handed on
        # (an intent, which the next start finds journaled and unanswered).
        nursery = self._nursery
        assert nursery is not None
        while True:
            try:
                msg = await inbox.receive()
            except trio.EndOfChannel:
                return
            kind = type(msg)
            if kind is OrderIntent:
                if msg.venue != self.venue:
                    self.log.error("gateway.wrong_venue", venue=self.venue, cid=msg.client_order_id, intent_venue=msg.venue)
                    continue
                order = self.table.get(msg.client_order_id)
                if order is not None and (order.status is not None or order.client_order_id in self._received_at):
                    self.log.warning("order.duplicate_intent", venue=self.venue, cid=msg.client_order_id, status=order.status)
                    continue  # never send one intent twice
                self.table.track_intent(msg)
                self._received_at[msg.client_order_id] = trio.current_time()
                await to_send.send(msg)
            elif kind is CancelOrder:
                nursery.start_soon(self._cancel, msg.symbol, msg.client_order_id, msg.reason)
            elif kind is CancelAllOrders:
                nursery.start_soon(self._cancel_all, msg.symbol, msg.reason)
            else:
                self.log.error("gateway.unexpected_message", venue=self.venue, message=type(msg).__name__)

    async def _sender(self, receive: trio.MemoryReceiveChannel[OrderIntent]) -> None:
        async with receive:
            async for intent in receive:
                try:
                    await self._send_order(intent)
                finally:
                    self._received_at.pop(intent.client_order_id, None)
                    self._posting.discard(intent.client_order_id)

    def _local_reject(self, intent: OrderIntent, reason: str, quantity: Decimal | None = None) -> OrderUpdate:
        return OrderUpdate(
            venue=self.venue,
            symbol=intent.symbol,
            client_order_id=intent.client_order_id,
            status=OrderStatus.REJECTED,
            side=intent.side,
            quantity=quantity if quantity is not None else intent.quantity,
            price=intent.price,
            reason=reason,
            ts=trio.current_time(),
        )

    async def _send_order(self, intent: OrderIntent) -> None:
        cid = intent.client_order_id
        order = self.table.get(cid)
        if order is None or order.status is not None:
            return  # settled while queued (e.g. an emergency stop rejected it)
        self._posting.add(cid)  # from here a cancel waits for this task's outcome
        received = self._received_at.get(cid, trio.current_time())
        instrument = self.instruments.get((self.venue, intent.symbol))
        if instrument is None:
            await self._record([self._local_reject(intent, f"unknown instrument {intent.symbol} at {self.venue}")], Source.LOCAL)
            return
        reference = None
        if intent.order_type is OrderType.MARKET and self.feed is not None:
            quote = self.feed.last_quote(intent.symbol)
            reference = quote.mid if quote is not None else None
        try:
            request = prepare_order(intent, instrument, reference)
        except FilterViolation as exc:
            await self._record([self._local_reject(intent, f"filter {exc.filter}: {exc}")], Source.LOCAL)
            return
        quantity = request.quantity if request.quantity is not None else intent.quantity
        give_up_at = received + self.config.order_max_wait
        attempt = 0
        while True:
            # Each pass starts with nothing at the venue: the previous attempt, if any,
            # was refused before the engine (rate limit) or never arrived.
            open_in_time = await self._wait_until_open(give_up_at)
            if order.status not in (None, OrderStatus.PENDING_NEW):
                return  # settled by someone else meanwhile: nothing to send
            if self._kill_epoch >= received or self.halted():
                await self._record([self._local_reject(intent, "not sent: emergency stop", quantity)], Source.LOCAL)
                return
            if order.cancel_requested:
                update = msgspec.structs.replace(
                    self._local_reject(intent, "cancelled before it was sent", quantity), status=OrderStatus.CANCELED
                )
                await self._record([update], Source.LOCAL)
                return
            if not open_in_time:
                reason = f"not sent within {self.config.order_max_wait:g}s: {self._blocked_reason}"
                await self._record([self._local_reject(intent, reason, quantity)], Source.LOCAL)
                return
            if order.status is None:
                pending = OrderUpdate(
                    venue=self.venue,
                    symbol=intent.symbol,
                    client_order_id=cid,
                    status=OrderStatus.PENDING_NEW,
                    side=intent.side,
                    quantity=quantity,
                    price=request.price,
                    ts=trio.current_time(),
                )
                await self._record([pending], Source.LOCAL)
                continue  # check the kill and the cancel again: journaling took a moment
            self.counts["sent"] += 1
            self.log.info(
                "order.sent",
                venue=self.venue,
                exec=intent.exec_id,
                cid=cid,
                symbol=request.symbol,
                side=request.side,
                type=request.order_type,
                qty=request.quantity,
                quote_qty=request.quote_quantity,
                price=request.price,
                tif=request.time_in_force,
                attempt=attempt or None,
            )
            started = trio.current_time()
            try:
                state = await self._post(request)
            except RateLimited as exc:
                self._pause(exc)  # refused before the engine: nothing was placed
                attempt += 1
                continue
            except VenueUnavailable as exc:
                self.last_error = describe_error(exc)  # nothing reached the venue: the same id may go again
                delay = self.config.retry.delay(attempt, self.rng)
                attempt += 1
                self.log.warning("order.send_retry", venue=self.venue, cid=cid, error=describe_error(exc), delay=round(delay, 3))
                if trio.current_time() + delay >= give_up_at:
                    await self._record([self._local_reject(intent, f"not sent: venue unreachable ({exc})", quantity)], Source.LOCAL)
                    return
                await trio.sleep(delay)
                continue
            except OrderRejected as exc:
                self.latency.observe(trio.current_time() - started)
                if _is_duplicate(exc):
                    # The id is taken at the venue: an earlier attempt did arrive. Look it up.
                    self.log.warning("order.duplicate", venue=self.venue, cid=cid, reason=str(exc))
                    self._spawn(self._settle, cid)
                    return
                await self._record([self._local_reject(intent, f"{exc.code}: {exc.message}", quantity)], Source.QUERY)
                return
            except UnknownOutcome as exc:
                update = self.table.snapshot(order, self.venue, status=OrderStatus.UNKNOWN, reason=str(exc), ts=trio.current_time())
                await self._record([update], Source.LOCAL)
                self._spawn(self._settle, cid)
                return
            except VenueError as exc:
                await self._record([self._local_reject(intent, f"{exc.code}: {exc.message}", quantity)], Source.QUERY)
                return
            elapsed = trio.current_time() - started
            self.latency.observe(elapsed)
            self._venue_answered()
            self.counts["acked"] += 1
            self.log.info(
                "order.acked",
                venue=self.venue,
                cid=cid,
                status=state.status,
                filled=state.filled_qty,
                venue_order_id=state.venue_order_id,
                ms=round(elapsed * 1000, 1),
            )
            await self._record([update_from_state(self.venue, state, ts=trio.current_time())], Source.QUERY)
            return

    async def _post(self, request: OrderRequest) -> OrderState:
        self._on_wire.add(request.client_order_id)
        try:
            return await self.adapter.place_order(request)
        finally:
            self._on_wire.discard(request.client_order_id)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _wait_until_open(self, give_up_at: float) -> bool:
        """Wait out a venue-imposed pause; False if it lasts past `give_up_at`."""
        while True:
            until = self._blocked_until
            now = trio.current_time()
            if until <= now:
                return True
            if until > give_up_at:
                await trio.sleep_until(give_up_at)
                return self._blocked_until <= trio.current_time()
            await trio.sleep_until(until)

    def _pause(self, exc: RateLimited) -> None:
        """The venue told us to stop (429/418): no request until it allows again."""
        now = trio.current_time()
        until = now + exc.retry_after
        banned = isinstance(exc, VenueBanned)
        if until > self._blocked_until or (banned and self.order_entry != "banned"):
            self._blocked_until = max(self._blocked_until, until)
            self._blocked_reason = describe_error(exc)
            if banned:
                self.log.critical(
                    "venue.banned",
                    venue=self.venue,
                    retry_after=round(exc.retry_after, 3),
                    alert=True,
                    hint="the venue banned this IP for ignoring rate limits; nothing is sent until it ends",
                )
                self._set_order_entry("banned", str(exc), exc.retry_after)
            else:
                self.log.warning("venue.rate_limited", venue=self.venue, retry_after=round(exc.retry_after, 3), detail=str(exc))
                if self.order_entry != "banned":
                    self._set_order_entry("rate_limited", str(exc), exc.retry_after)

    def _venue_answered(self) -> None:
        if self.order_entry in ("rate_limited", "banned") and trio.current_time() >= self._blocked_until:
            self._set_order_entry("up")

    # --- settling unknown outcomes ----------------------------------------------------------------
    async def _settle(self, cid: str) -> None:
        """Find out what became of an order whose POST has no known outcome. Never re-sends it."""
        if cid in self._settling:
            return
        self._settling.add(cid)
        try:
            started = trio.current_time()
            attempt = 0
            while True:
                order = self.table.get(cid)
                if order is None or order.is_final or order.venue_order_id is not None:
                    return  # the venue (query, stream or reconciliation) has spoken
                delay = self.config.settle.delay(attempt, self.rng)
                try:
                    state = await self.adapter.query_order(order.symbol, cid)
                except OrderNotFound:
                    if trio.current_time() - started >= self.config.unknown_grace:
                        if await self._trades_mention(order):
                            self.log.warning("order.settle_trades_found", venue=self.venue, cid=cid)
                        else:
                            await self._record(
                                [
                                    self.table.snapshot(
                                        order,
                                        self.venue,
                                        status=OrderStatus.REJECTED,
                                        reason=(
                                            f"{NEVER_REACHED}: not found by query for "
                                            f"{self.config.unknown_grace:g}s and no trade"
                                        ),
                                        ts=trio.current_time(),
                                    )
                                ],
                                Source.LOCAL,
                                inferred=True,
                            )
                            return
                except RateLimited as exc:
                    self._pause(exc)
                    delay = max(delay, exc.retry_after)
                except (VenueUnavailable, UnknownOutcome, VenueError) as exc:
                    self.log.warning("order.settle_retry", venue=self.venue, cid=cid, error=describe_error(exc))
                else:
                    self._venue_answered()
                    self.log.info("order.settled", venue=self.venue, cid=cid, status=state.status, filled=state.filled_qty)
                    await self._record([update_from_state(self.venue, state, ts=trio.current_time())], Source.QUERY)
                    return
                attempt += 1
                await trio.sleep(delay)
        finally:
            self._settling.discard(cid)

    async def _trades_mention(self, order: TrackedOrder) -> bool:
        """Whether the venue lists a trade of this order (by client order id, where the venue gives one)."""
        try:
            trades = await self.adapter.my_trades(order.symbol, self._high_water.get(order.symbol))
        except (RateLimited, VenueUnavailable, UnknownOutcome, VenueError):
            return True  # cannot tell: keep the order UNKNOWN and ask again
        return any(t.client_order_id == order.client_order_id for t in trades)

    async def _requery(self, cid: str) -> None:
        """Ask the venue about an order whose last event made no sense."""
        self._requerying.add(cid)
        try:
            order = self.table.get(cid)
            if order is not None:
                await self._query_and_record(order)
        finally:
            self._requerying.discard(cid)

    async def _query_and_record(self, order: TrackedOrder) -> None:
        for attempt in range(4):
            try:
                state = await self.adapter.query_order(order.symbol, order.client_order_id)
            except OrderNotFound:
                if order.venue_order_id is None and not order.is_final:
                    await self._settle(order.client_order_id)
                else:
                    self.log.error(
                        "order.vanished",
                        venue=self.venue,
                        cid=order.client_order_id,
                        status=order.status,
                        hint="the venue no longer knows this order; reconciliation will look again",
                    )
                return
            except RateLimited as exc:
                self._pause(exc)
                await trio.sleep(exc.retry_after)
            except (VenueUnavailable, UnknownOutcome, VenueError) as exc:
                self.log.warning("order.query_retry", venue=self.venue, cid=order.client_order_id, error=describe_error(exc))
                await trio.sleep(self.config.retry.delay(attempt, self.rng))
            else:
                self._venue_answered()
                await self._record([update_from_state(self.venue, state, ts=trio.current_time())], Source.QUERY)
                return

    # --- cancelling -------------------------------------------------------------------------------
    async def _cancel(self, symbol: str, cid: str, reason: str = "") -> None:
        order = self.table.get(cid)
        if order is not None and order.is_final:
            self.log.debug("order.cancel_ignored", venue=self.venue, cid=cid, status=order.status)
            return
        if order is not None and (order.status is None or (order.status is OrderStatus.PENDING_NEW and cid in self._posting)):
            order.cancel_requested = True  # the sender cancels it once the POST is answered
            self.log.info("order.cancel_deferred", venue=self.venue, cid=cid, reason=reason or None)
            return
        if cid in self._cancelling:
            return
        self._cancelling.add(cid)
        try:
            if order is not None:
                await self._record(
                    [self.table.snapshot(order, self.venue, status=OrderStatus.PENDING_CANCEL, reason=reason, ts=trio.current_time())],
                    Source.LOCAL,
                )
            self.log.info("order.cancel_sent", venue=self.venue, cid=cid, symbol=symbol, reason=reason or None)
            give_up_at = trio.current_time() + self.config.cancel_retry_for
            attempt = 0
            while True:
                await self._wait_until_open(give_up_at)
                started = trio.current_time()
                try:
                    state = await self.adapter.cancel_order(symbol, cid)
                except OrderNotFound:
                    order = self.table.get(cid)
                    if order is None:
                        self.log.warning("order.cancel_unknown", venue=self.venue, cid=cid, symbol=symbol)
                    else:
                        await self._query_and_record(order)  # closed already: learn how
                    return
                except RateLimited as exc:
                    self._pause(exc)
                    delay = exc.retry_after
                except (UnknownOutcome, VenueUnavailable) as exc:
                    delay = self.config.retry.delay(attempt, self.rng)
                    self.log.warning("order.cancel_retry", venue=self.venue, cid=cid, error=describe_error(exc), delay=round(delay, 3))
                except VenueError as exc:
                    self.log.warning("order.cancel_failed", venue=self.venue, cid=cid, error=describe_error(exc))
                    order = self.table.get(cid)
                    if order is not None:
                        await self._query_and_record(order)  # the venue's word replaces PENDING_CANCEL
                    return
                else:
                    self.latency.observe(trio.current_time() - started)
                    self._venue_answered()
                    await self._record([update_from_state(self.venue, state, ts=trio.current_time())], Source.QUERY)
                    return
                attempt += 1
                if trio.current_time() + delay > give_up_at:
                    self.log.error(
                        "order.cancel_failed",
                        venue=self.venue,
                        cid=cid,
                        error=f"no answer for {self.config.cancel_retry_for:g}s",
                        hint="reconciliation will look at this order again",
                    )
                    self._reconcile_wanted.set()
                    return
                await trio.sleep(delay)
        finally:
            self._cancelling.discard(cid)

    async def _cancel_all(self, symbol: str | None, reason: str = "") -> None:
        symbols = [symbol] if symbol else sorted({o.symbol for o in self.table.working()})
        for sym in symbols:
            working = [o for o in self.table.working(sym)]
            marks = []
            for order in working:
                if order.status is None or order.client_order_id in self._posting:
                    order.cancel_requested = True
                elif order.status is not OrderStatus.PENDING_CANCEL:
                    marks.append(self.table.snapshot(order, self.venue, status=OrderStatus.PENDING_CANCEL, reason=reason, ts=trio.current_time()))
            if marks:
                await self._record(marks, Source.LOCAL)
            self.log.info("order.cancel_all_sent", venue=self.venue, symbol=sym, orders=len(marks), reason=reason or None)
            give_up_at = trio.current_time() + self.config.cancel_retry_for
            attempt = 0
            while True:
                await self._wait_until_open(give_up_at)
                try:
                    states = await self.adapter.cancel_all(sym)
                except RateLimited as exc:
                    self._pause(exc)
                    delay = exc.retry_after
                except (UnknownOutcome, VenueUnavailable, VenueError) as exc:
                    delay = self.config.retry.delay(attempt, self.rng)
                    self.log.warning("order.cancel_retry", venue=self.venue, symbol=sym, error=describe_error(exc), delay=round(delay, 3))
                else:
                    self._venue_answered()
                    await self._record([update_from_state(self.venue, s, ts=trio.current_time()) for s in states], Source.QUERY)
                    break
                attempt += 1
                if trio.current_time() + delay > give_up_at:
                    self.log.error("order.cancel_failed", venue=self.venue, symbol=sym, error=f"no answer for {self.config.cancel_retry_for:g}s")
                    break
                await trio.sleep(delay)
            # orders the venue did not list as cancelled: learn how each ended
            for order in self.table.working(sym):
                if order.status is OrderStatus.PENDING_CANCEL:
                    await self._query_and_record(order)

    # --- the user stream --------------------------------------------------------------------------
    async def _user_stream_loop(self) -> None:
        cfg = self.config
        attempt = 0
        first = True
        while True:
            if not first:
                self.stream_reconnects += 1
            first = False
            connected_at: float | None = None
            retry_after = 0.0
            planned = False
            try:
                async with self.adapter.user_stream() as events:
                    connected_at = trio.current_time()
                    self._stream_connected(connected_at)
                    reason, planned = await self._run_user_stream(events, connected_at)
            except RateLimited as exc:
                self._pause(exc)
                retry_after = exc.retry_after
                reason = describe_error(exc)
            except (VenueUnavailable, VenueError, UnknownOutcome, OSError) as exc:
                reason = describe_error(exc)
            now = trio.current_time()
            self._stream_disconnected(now, reason, planned)
            if connected_at is not None and now - connected_at >= cfg.reconnect.reset_after:
                attempt = 0
            delay = 0.0 if planned else max(cfg.reconnect.delay(attempt, self.rng), retry_after)
            if not planned:
                attempt += 1
            self.log.info(
                "venue.reconnect", venue=self.venue, stream="user", reason=reason, attempt=attempt, delay=round(delay, 3)
            )
            if delay:
                await trio.sleep(delay)

    def _stream_connected(self, now: float) -> None:
        self.stream_state = "connected"
        self._stream_since = now
        self._stream_down_since = None
        self.log.info("venue.connected", venue=self.venue, stream="user", reconnects=self.stream_reconnects)
        if self.order_entry == "down":
            self._set_order_entry("up")

    def _stream_disconnected(self, now: float, reason: str, planned: bool) -> None:
        self.stream_state = "disconnected"
        self._stream_since = None
        if self._stream_down_since is None:
            self._stream_down_since = now
        if not planned:
            self.last_error = reason
            self.log.warning("venue.disconnected", venue=self.venue, stream="user", reason=reason)

    async def _run_user_stream(self, events: Any, connected_at: float) -> tuple[str, bool]:
        """Read one connection; reconcile once connected. Returns (reason it ended, planned)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconcile_after_connect)
            result = await self._pump(events, connected_at)
            nursery.cancel_scope.cancel()
        return result

    async def _pump(self, events: Any, connected_at: float) -> tuple[str, bool]:
        send = self._events_send
        assert send is not None
        iterator = events.__aiter__()
        retire_at = connected_at + self.config.max_connection_age
        while True:
            event: Any = None
            with trio.move_on_at(retire_at):
                try:
                    event = await iterator.__anext__()
                except StopAsyncIteration:
                    return "the venue ended the stream", False
                except VenueUnavailable as exc:
                    return f"connection lost: {describe_error(exc)}", False
            if event is None:
                return f"connection is {self.config.max_connection_age:g}s old", True
            kind = type(event)
            if kind is OrderUpdate or kind is Fill or kind is BalanceUpdate:
                await send.send((Source.EVENT, event))
            else:  # StreamNotice
                if event.kind == "server_shutdown":
                    return "the venue announced a shutdown", True
                if event.kind in _RECONCILE_NOTICES:
                    self._reconcile_wanted.set()

    async def _reconcile_after_connect(self) -> None:
        attempt = 0
        while True:
            try:
                await self._reconcile("user stream connected" if self.reconciles else "start")
                break
            except (RateLimited, VenueUnavailable, UnknownOutcome, VenueError) as exc:
                if isinstance(exc, RateLimited):
                    self._pause(exc)
                delay = max(self.config.retry.delay(attempt, self.rng), getattr(exc, "retry_after", 0.0))
                attempt += 1
                self.last_error = describe_error(exc)
                self.log.warning("recovery.retry", venue=self.venue, error=describe_error(exc), delay=round(delay, 3))
                await trio.sleep(delay)
        self._reconciled.set()

    # --- reconciliation ---------------------------------------------------------------------------
    async def _reconcile(self, reason: str) -> None:
        """Bring the journal in line with the venue by REST. Raises on venue errors (callers retry)."""
        async with self._reconcile_lock:
            started = trio.current_time()
            self._reconcile_wanted = trio.Event()
            self.log.info("recovery.started", venue=self.venue, reason=reason)
            balances = await self.adapter.balances()
            updates = [BalanceUpdate(venue=self.venue, asset=b.asset, free=b.free, locked=b.locked) for b in balances]
            if updates:
                await self.journal.record_balances(self.venue, updates, source="reconcile")
                for update in updates:
                    await self.bus.publish(topics.BALANCE, update)

            venue_open = await self.adapter.open_orders()
            open_ids = {s.client_order_id for s in venue_open}
            known_before = {o.client_order_id for o in self.table if o.ours}
            now = trio.current_time()
            await self._record([update_from_state(self.venue, s, ts=now) for s in venue_open], Source.QUERY)
            adopted = len(open_ids - known_before)

            looked_up = 0
            for order in self.table.working():
                cid = order.client_order_id
                if cid in open_ids or cid in self._posting or order.status is None:
                    continue
                looked_up += 1
                try:
                    state = await self.adapter.query_order(order.symbol, cid)
                except OrderNotFound:
                    if order.venue_order_id is None:
                        if order.status is not OrderStatus.UNKNOWN:
                            await self._record(
                                [self.table.snapshot(order, self.venue, status=OrderStatus.UNKNOWN, reason="no answer journaled", ts=trio.current_time())],
                                Source.LOCAL,
                            )
                        assert self._nursery is not None
                        self._nursery.start_soon(self._settle, cid)
                    else:
                        self.log.error("order.vanished", venue=self.venue, cid=cid, status=order.status)
                    continue
                await self._record([update_from_state(self.venue, state, ts=trio.current_time())], Source.QUERY)

            recovered = await self._recover_trades()
            self.reconciles += 1
            self.last_reconcile = trio.current_time()
            self.log.info(
                "recovery.done",
                venue=self.venue,
                reason=reason,
                balances=len(updates),
                open_at_venue=len(venue_open),
                adopted=adopted or None,
                looked_up=looked_up or None,
                fills_recovered=recovered,
                seconds=round(trio.current_time() - started, 3),
            )

    async def _recover_trades(self) -> int:
        """Journal the trades the venue lists since our last journaled one, per symbol."""
        symbols = set(self.symbols) | set(self._high_water) | {o.symbol for o in self.table}
        recovered = 0
        for symbol in sorted(symbols):
            if (self.venue, symbol) not in self.instruments and symbol not in self._high_water:
                continue
            mark = self._high_water.get(symbol)
            history = mark is None
            # From the last journaled trade itself, not the next: a self-trade is one trade id
            # with a fill on each side, and a kill may have come between the two. The journal
            # recognises the fill it already has.
            start = mark
            while True:
                trades = await self.adapter.my_trades(symbol, start)
                fills = await self._fills_for(symbol, trades, history=history)
                if fills:
                    recovered += len(await self._record(fills, Source.EVENT))
                if not trades:
                    break
                newest = max((t.trade_id for t in trades), key=_trade_key)
                if mark is None or _trade_key(newest) > _trade_key(mark):
                    self._high_water[symbol] = mark = newest
                if len(trades) < TRADES_PAGE or not newest.isdigit() or newest == start:
                    break
                start = newest
        return recovered

    async def _fills_for(self, symbol: str, trades: Sequence[AccountTrade], *, history: bool) -> list[Fill]:
        """Fills for trades, each mapped to our client order id through the venue's order id.

        With `history` (no trade of the symbol journaled yet) only trades of
        orders we know are taken: older ones predate us.
        """
        if not trades:
            return []
        ids: dict[str, str] = {}
        unmapped: list[str] = []
        for trade in trades:
            order = self.table.by_venue_order_id(symbol, trade.venue_order_id)
            if order is not None:
                ids[trade.venue_order_id] = order.client_order_id
            else:
                unmapped.append(trade.venue_order_id)
        if unmapped:
            found = await self.journal.orders_by_venue_order_id(self.venue, symbol, unmapped)
            ids.update((vid, update.client_order_id) for vid, update in found.items())
        now = trio.current_time()
        fills = []
        for trade in trades:
            cid = ids.get(trade.venue_order_id)
            if cid is None:
                if history:
                    continue
                self.log.warning(
                    "fill.foreign",
                    venue=self.venue,
                    symbol=trade.symbol,
                    trade_id=trade.trade_id,
                    venue_order_id=trade.venue_order_id,
                    cid=trade.client_order_id,
                    hint="a trade of an order tradingd does not know; journaled so balances and positions agree",
                )
                cid = trade.client_order_id or ""
            fills.append(fill_from_trade(self.venue, trade, cid, ts=now))
        return fills

    # --- housekeeping -----------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        cfg = self.config
        next_refresh = trio.current_time() + cfg.instrument_refresh if cfg.instrument_refresh else math.inf
        next_reconcile = trio.current_time() + cfg.reconcile_interval if cfg.reconcile_interval else math.inf
        while True:
            with trio.move_on_after(1.0):
                await self._reconcile_wanted.wait()
            now = trio.current_time()
            if self.stream_state == "connected" and (self._reconcile_wanted.is_set() or now >= next_reconcile):
                try:
                    await self._reconcile("stream trouble" if self._reconcile_wanted.is_set() else "periodic")
                except (RateLimited, VenueUnavailable, UnknownOutcome, VenueError) as exc:
                    if isinstance(exc, RateLimited):
                        self._pause(exc)
                    self.log.warning("recovery.failed", venue=self.venue, error=describe_error(exc))
                    await trio.sleep(self.config.retry.maximum)
                if cfg.reconcile_interval:
                    next_reconcile = trio.current_time() + cfg.reconcile_interval
            if now >= next_refresh:
                await self._load_instruments()
                next_refresh = now + cfg.instrument_refresh
            down_since = self._stream_down_since
            if self.stream_state != "connected" and down_since is not None and now - down_since >= cfg.down_after:
                if self.order_entry == "up":
                    self._set_order_entry("down", f"user stream down for {now - down_since:.0f}s: {self.last_error}")
            self._venue_answered()

    def _set_order_entry(self, state: str, detail: str = "", retry_after: float | None = None) -> None:
        if state == self.order_entry and self._published_entry == state:
            return
        previous = self.order_entry
        self.order_entry = state
        self._published_entry = state
        if state != previous:
            self.log.info("venue.order_entry", venue=self.venue, state=state, previous=previous, detail=detail or None)
        if self.health is not None:
            source = f"gateway.{self.venue}"
            if state == "up":
                self.health.report(source, Level.HEALTHY, "")
            elif state == "banned":
                self.health.report(source, Level.CRITICAL, f"banned by the venue: {detail}")
            else:
                self.health.report(source, Level.DEGRADED, f"order entry {state}" + (f": {detail}" if detail else ""))
        status = VenueStatus(venue=self.venue, state=state, detail=detail, retry_after=retry_after)
        try:
            if not self.bus.publish_nowait(topics.VENUE_STATUS, status):
                self._spawn(self.bus.publish, topics.VENUE_STATUS, status)  # a reader is full: wait for room
        except trio.ClosedResourceError:
            pass


__all__ = ["Gateway", "GatewayConfig", "GatewayNotReady", "prepare_order"]
