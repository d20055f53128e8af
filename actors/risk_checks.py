"""The risk sentinel's pure core: every order checked, breakers that latch.

`RiskSentinel` is a plain object that the risk actor owns and feeds. It holds
what the checks need (positions, working orders, quotes with their times,
venue and feed states, the trading state) rather than receiving it as a
context on each call, because the two facts that matter most are produced
here: an approval is counted as a working order the moment it is given, and a
breaker trip latches. A context assembled by someone else could not guarantee
either. The actor calls:

    check(intent, now)              -> Approval | Denial   (records the approval)
    check_cancel(cancel)            -> the same cancel      (cancels are never blocked)
    on_quote(quote)                 market data, conflated
    on_fill(fill)                   positions
    on_order_update(update, now)    working orders, venue rejects      -> events
    on_equity(equity, utc_ms, now)  daily loss, drawdown, VaR          -> events
    on_venue_status / on_feed_status / on_supervisor_gave_up           -> events
    on_tick(now)                    market data silence per venue      -> events
    halt / reduce / resume          operator commands                  -> events

"events" are `TradingStateChanged` / `BreakerTripped` messages to journal and
log; a `BreakerTripped` with `kill=True` asks the actor to run the emergency
stop. `now` is always trio's monotonic clock, passed in so tests choose it.

Denials carry a stable `code` (the constants below) and a `reason` that says
what to do next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from decimal import Decimal

from actors.risk_breakers import (
    STALE_DATA,
    SUPERVISOR,
    VENUE_DOWN as VENUE_DOWN_BREAKER,
    EquityBreakers,
    RejectWindow,
    TripRequest,
)
from actors.risk_exposure import ExposureBook, InstrumentKey, instrument_name
from actors.risk_limits import Action, RiskLimits
from actors.risk_snapshot import RiskSnapshot, build_snapshot
from actors.risk_state import StateEvent, TradingStateMachine, Trip
from daemon.messages import (
    Approval,
    CancelAllOrders,
    CancelOrder,
    Denial,
    FeedStatus,
    Fill,
    OrderIntent,
    OrderUpdate,
    Quote,
    SupervisorGaveUp,
    VenueStatus,
)
from daemon.model import FilterViolation, Instrument, OrderStatus, OrderType, Side, TradingState

# --- denial codes (stable: schedulers, the journal and tradectl match on them) ----------
TRADING_HALTED = "TRADING_HALTED"
TRADING_REDUCING = "TRADING_REDUCING"
REDUCE_ONLY = "REDUCE_ONLY"
DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
INVALID_ORDER = "INVALID_ORDER"
UNSUPPORTED_ORDER = "UNSUPPORTED_ORDER"
UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
INSTRUMENT_NOT_TRADING = "INSTRUMENT_NOT_TRADING"
VENUE_DOWN = "VENUE_DOWN"
NO_MARKET_DATA = "NO_MARKET_DATA"
STALE_MARKET_DATA = "STALE_MARKET_DATA"
FILTER_PREFIX = "FILTER_"
FILTER_LOT_SIZE = "FILTER_LOT_SIZE"
FILTER_PRICE_FILTER = "FILTER_PRICE_FILTER"
FILTER_NOTIONAL = "FILTER_NOTIONAL"
PRICE_COLLAR = "PRICE_COLLAR"
MAX_ORDER_QTY = "MAX_ORDER_QTY"
MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
MAX_POSITION = "MAX_POSITION"
MAX_GROSS_EXPOSURE = "MAX_GROSS_EXPOSURE"
MAX_OPEN_ORDERS = "MAX_OPEN_ORDERS"
ORDER_RATE = "ORDER_RATE"
SELF_TRADE = "SELF_TRADE"


def filter_code(filter_name: str) -> str:
    """The denial code for a venue filter violation, e.g. FILTER_LOT_SIZE."""
    return FILTER_PREFIX + filter_name


_VENUE_DOWN_STATES = frozenset({"down", "banned"})
_FEED_STALE_STATES = frozenset({"stale", "down"})
_ACTION_STATE = {"reduce": TradingState.REDUCING, "halt": TradingState.HALTED, "kill": TradingState.HALTED}
_BPS = Decimal(10_000)


class _Deny(Exception):
    """Internal: the first failed check, turned into a `Denial` by `check`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RiskSentinel:
    """Pre-trade checks, exposure book-keeping, breakers and the trading state."""

    def __init__(self, limits: RiskLimits | None = None, instruments: Iterable[Instrument] = ()) -> None:
        self._limits = limits if limits is not None else RiskLimits()
        self.book = ExposureBook()
        self.book.add_instruments(instruments)
        self.states = TradingStateMachine()
        self.equity = EquityBreakers()
        self.rejects = RejectWindow()
        self.venue_status: dict[str, str] = {}
        self.feed_status: dict[str, str] = {}
        self.denials: Counter[str] = Counter()
        self.approvals = 0
        self._silence_from: dict[str, float] = {}
        self._now = 0.0

    # --- configuration ------------------------------------------------------------------
    @property
    def limits(self) -> RiskLimits:
        return self._limits

    def replace_limits(self, limits: RiskLimits) -> None:
        """Swap in new limits (from `set_limit` or a config reload); they apply to the next check."""
        self._limits = limits

    def add_instruments(self, instruments: Iterable[Instrument]) -> None:
        """Make instruments known (e.g. after exchange info is loaded or refreshed)."""
        self.book.add_instruments(instruments)

    # --- trading state ------------------------------------------------------------------
    @property
    def state(self) -> TradingState:
        return self.states.state

    def state_for(self, venue: str) -> TradingState:
        return self.states.state_for(venue)

    @property
    def trips(self) -> list[Trip]:
        return self.states.trips

    def halt(self, by: str, reason: str) -> list[StateEvent]:
        return self.states.halt(by, reason)

    def reduce(self, by: str, reason: str, venue: str | None = None) -> list[StateEvent]:
        return self.states.reduce(by, reason, venue)

    def resume(self, by: str, reason: str, venue: str | None = None) -> list[StateEvent]:
        """ACTIVE again (globally, or for one venue), clearing latched trips and re-arming breakers.

        Re-arming measures from now: the daily-loss reference and the peak
        become the current equity, VaR history and the reject window restart,
        and a venue's market-data silence is timed from the resume.
        """
        events = self.states.resume(by, reason, venue)
        if venue is None:
            self.equity.rearm()
            self.rejects.rearm()
            for v in self.book.venue_last_quote:
                self._silence_from[v] = self._now
        else:
            self._silence_from[venue] = self._now
        return events

    # --- market and order flow ----------------------------------------------------------
    def on_quote(self, quote: Quote) -> None:
        self._clock(quote.ts)
        self.book.on_quote(quote)

    def on_fill(self, fill: Fill) -> bool:
        """Apply a fill to positions and its order; False for a duplicate (venue, symbol, trade id)."""
        return self.book.on_fill(fill)

    def on_order_update(self, update: OrderUpdate, now: float) -> list[StateEvent]:
        self._clock(now)
        self.book.on_order_update(update)
        if update.status is OrderStatus.REJECTED:
            detail = f"{update.venue}:{update.symbol} {update.client_order_id} {update.reason}".strip()
            return self._trip_all(self.rejects.record(now, self._limits, detail))
        return []

    def forget_order(self, client_order_id: str) -> bool:
        """Stop counting an approved order that was never sent (journal write or hand-off failed)."""
        return self.book.forget_order(client_order_id)

    def set_position(self, venue: str, symbol: str, qty: Decimal) -> None:
        """Seed or correct a position with the position keeper's figure (replay, reconciliation)."""
        self.book.set_position(venue, symbol, qty)

    # --- breakers ------------------------------------------------------------------------
    def on_equity(self, equity: Decimal, utc_ms: int, now: float) -> list[StateEvent]:
        """Equity (realised + unrealised) from the position keeper; `utc_ms` decides the trading day."""
        self._clock(now)
        return self._trip_all(self.equity.update(equity, utc_ms, now, self._limits))

    def on_venue_status(self, status: VenueStatus) -> list[StateEvent]:
        self.venue_status[status.venue] = status.state
        if status.state in _VENUE_DOWN_STATES and self._limits.venue_down.enabled:
            detail = f"order entry at {status.venue} is {status.state}" + (f": {status.detail}" if status.detail else "")
            return self.states.trip(VENUE_DOWN_BREAKER, detail, TradingState.REDUCING, at=self._now, venue=status.venue)
        return []

    def on_feed_status(self, status: FeedStatus) -> list[StateEvent]:
        self.feed_status[status.venue] = status.state
        if status.state in _FEED_STALE_STATES and self._limits.stale_data.enabled:
            detail = f"market data from {status.venue} is {status.state}" + (f": {status.detail}" if status.detail else "")
            return self.states.trip(STALE_DATA, detail, TradingState.REDUCING, at=self._now, venue=status.venue)
        return []

    def on_supervisor_gave_up(self, gave_up: SupervisorGaveUp) -> list[StateEvent]:
        if not self._limits.supervisor.enabled:
            return []
        detail = (
            f"supervisor {gave_up.supervisor} gave up after {gave_up.restarts} restarts in "
            f"{gave_up.period:g} s: {gave_up.last_error}"
        )
        return self.states.trip(SUPERVISOR, detail, TradingState.HALTED, at=self._now, kill=True)

    def on_tick(self, now: float) -> list[StateEvent]:
        """Periodic: a venue whose quotes stopped for `stale_data.after_seconds` goes REDUCING."""
        self._clock(now)
        cfg = self._limits.stale_data
        if not cfg.enabled:
            return []
        events: list[StateEvent] = []
        for venue, last in self.book.venue_last_quote.items():
            since = max(last, self._silence_from.get(venue, last))
            if now - since > cfg.after_seconds:
                detail = f"no quote from {venue} for {now - last:.1f} s (limit {cfg.after_seconds:g} s)"
                events += self.states.trip(STALE_DATA, detail, TradingState.REDUCING, at=now, venue=venue)
        return events

    def _trip_all(self, requests: list[TripRequest]) -> list[StateEvent]:
        events: list[StateEvent] = []
        for req in requests:
            events += self._trip(req.breaker, req.detail, req.action)
        return events

    def _trip(self, breaker: str, detail: str, action: Action) -> list[StateEvent]:
        return self.states.trip(breaker, detail, _ACTION_STATE[action], at=self._now, kill=action == "kill")

    def _clock(self, now: float) -> None:
        if now > self._now:
            self._now = now

    # --- checks ---------------------------------------------------------------------------
    def check_cancel(self, cancel: CancelOrder | CancelAllOrders) -> CancelOrder | CancelAllOrders:
        """Approve a cancel: always, in every trading state, so exposure can always be taken off."""
        return cancel

    def check(self, intent: OrderIntent, now: float) -> Approval | Denial:
        """Approve or deny one child order. An approval counts as working from now on."""
        self._clock(now)
        try:
            self._check(intent, now)
        except _Deny as deny:
            self.denials[deny.code] += 1
            return Denial(intent=intent, code=deny.code, reason=deny.reason)
        self.book.add_order(intent, now)
        self.approvals += 1
        return Approval(intent=intent)

    def _check(self, intent: OrderIntent, now: float) -> None:
        limits = self._limits
        key: InstrumentKey = (intent.venue, intent.symbol)
        name = instrument_name(key)
        if self.states.state is TradingState.HALTED:
            raise _Deny(TRADING_HALTED, "trading is halted: no new orders until an operator runs `tradectl resume`")
        if intent.client_order_id in self.book.orders:
            raise _Deny(
                DUPLICATE_ORDER_ID,
                f"client order id {intent.client_order_id} is already working; query its status instead of re-sending",
            )
        if intent.quote_quantity is not None:
            raise _Deny(UNSUPPORTED_ORDER, "orders sized in quote currency cannot be risk-checked; send a base quantity")
        if intent.order_type is not OrderType.MARKET and intent.price is None:
            raise _Deny(INVALID_ORDER, f"a {intent.order_type} order needs a price")
        if not intent.quantity.is_finite() or (intent.price is not None and not intent.price.is_finite()):
            raise _Deny(INVALID_ORDER, f"quantity {intent.quantity} and price {intent.price} must be finite numbers")
        inst = self.book.instruments.get(key)
        if inst is None:
            raise _Deny(UNKNOWN_INSTRUMENT, f"{name} is not a known instrument; check the symbol or reload instruments")
        if not inst.trading:
            raise _Deny(INSTRUMENT_NOT_TRADING, f"{name} is not trading at the venue")
        venue_state = self.venue_status.get(intent.venue)
        if venue_state in _VENUE_DOWN_STATES:
            raise _Deny(VENUE_DOWN, f"order entry at {intent.venue} is {venue_state}")
        self._check_reducing(intent, key, name)

        quote = self.book.quotes.get(key)
        if quote is None:
            raise _Deny(NO_MARKET_DATA, f"no quote for {name} yet; the order cannot be priced")
        if quote.bid <= 0 or quote.ask <= 0 or quote.ask < quote.bid:
            raise _Deny(NO_MARKET_DATA, f"the quote for {name} is one-sided or crossed (bid {quote.bid}, ask {quote.ask})")
        age = now - quote.ts
        if age > limits.stale_quote_seconds:
            raise _Deny(
                STALE_MARKET_DATA,
                f"the last quote for {name} is {age:.1f} s old (limit {limits.stale_quote_seconds:g} s)",
            )

        is_market = intent.order_type is OrderType.MARKET
        if is_market:
            price = quote.ask if intent.side is Side.BUY else quote.bid
        else:
            assert intent.price is not None
            price = intent.price
        try:
            inst.check(intent.quantity, price, is_market=is_market)
        except FilterViolation as exc:
            raise _Deny(filter_code(exc.filter), f"{name}: {exc}") from None

        mid = quote.mid
        if not is_market and limits.price_collar_bps is not None:
            deviation = abs(price - mid) / mid * _BPS
            if deviation > limits.price_collar_bps:
                raise _Deny(
                    PRICE_COLLAR,
                    f"price {price} is {deviation:.1f} bps from the mid {mid} of {name}; "
                    f"the collar is {limits.price_collar_bps} bps (price_collar_bps)",
                )

        if limits.prevent_self_trade:
            self._check_self_trade(intent, key, name, None if is_market else price, quote)

        qty_limit = limits.order_qty_limit(*key)
        if qty_limit is not None and intent.quantity > qty_limit:
            raise _Deny(MAX_ORDER_QTY, f"quantity {intent.quantity} exceeds {qty_limit} for {name} (max_order_qty)")
        notional = price * intent.quantity
        notional_limit = limits.order_notional_limit(*key)
        if notional_limit is not None and notional > notional_limit:
            raise _Deny(
                MAX_ORDER_NOTIONAL,
                f"notional {notional} exceeds {notional_limit} for {name} (max_order_notional)",
            )

        self._check_exposure(intent, key, name)
        self._check_flow(intent, key, name, now)

    def _check_self_trade(
        self, intent: OrderIntent, key: InstrumentKey, name: str, price: Decimal | None, quote: Quote
    ) -> None:
        """Two executions on opposite sides must not trade with each other (a wash trade).

        A limit order crosses one of our resting orders on the other side when
        its price reaches that order's; a market order is taken to reach any of
        ours resting at or through the touch it would take from.
        """
        reach = price
        if reach is None:
            reach = quote.ask if intent.side is Side.BUY else quote.bid
        for order in self.book.open_orders(key):
            if order.side is intent.side or order.price is None or order.pending_qty <= 0:
                continue
            crosses = reach >= order.price if intent.side is Side.BUY else reach <= order.price
            if crosses:
                raise _Deny(
                    SELF_TRADE,
                    f"{intent.side} at {reach} would trade against our own {order.side} {order.client_order_id} "
                    f"at {order.price} on {name} (prevent_self_trade)",
                )

    def _check_reducing(self, intent: OrderIntent, key: InstrumentKey, name: str) -> None:
        """In REDUCING (or for a reduce-only intent), only orders that shrink the position, never past zero."""
        state = self.states.state_for(intent.venue)
        if state is not TradingState.REDUCING and not intent.reduce_only:
            return
        position = self.book.position(key)
        after = self.book.projected(key, intent.side, intent.quantity)
        opposes = position * intent.side.sign < 0
        stays_on_side = after >= 0 if position > 0 else after <= 0
        if opposes and stays_on_side:
            return
        if state is TradingState.REDUCING:
            scope = "trading" if self.states.state is TradingState.REDUCING else f"trading at {intent.venue}"
            code = TRADING_REDUCING
        else:
            scope = "the intent"
            code = REDUCE_ONLY
        raise _Deny(
            code,
            f"{scope} is reduce-only: {intent.side} {intent.quantity} {name} against position {position} "
            f"(with working orders: {after}) would not reduce it toward zero",
        )

    def _check_exposure(self, intent: OrderIntent, key: InstrumentKey, name: str) -> None:
        """Position and gross exposure after this order and every working order on the same side.

        An order that does not make the measure worse passes even above the
        limit, so that a lowered limit never blocks the way back under it.
        """
        limits = self._limits
        position_limit = limits.position_limit(*key)
        if position_limit is not None:
            before = abs(self.book.projected(key, intent.side))
            after = abs(self.book.projected(key, intent.side, intent.quantity))
            if after > position_limit and after > before:
                raise _Deny(
                    MAX_POSITION,
                    f"{name} position could reach {after} with working orders, above {position_limit} (max_position)",
                )
        if limits.max_gross_exposure is not None:
            before_total, after_total = self.book.gross_exposure_with(key, intent.side, intent.quantity)
            if after_total > limits.max_gross_exposure and after_total > before_total:
                raise _Deny(
                    MAX_GROSS_EXPOSURE,
                    f"gross exposure could reach {after_total.quantize(Decimal('0.01'))} with working orders, "
                    f"above {limits.max_gross_exposure} (max_gross_exposure)",
                )

    def _check_flow(self, intent: OrderIntent, key: InstrumentKey, name: str, now: float) -> None:
        limits = self._limits
        per_instrument = limits.open_orders_limit(*key)
        if per_instrument is not None:
            count = self.book.open_order_count(key)
            if count >= per_instrument:
                raise _Deny(
                    MAX_OPEN_ORDERS,
                    f"{count} orders already open on {name}, "
                    f"the limit is {per_instrument} (max_open_orders_per_instrument)",
                )
        if limits.max_open_orders is not None:
            count = self.book.open_order_count()
            if count >= limits.max_open_orders:
                raise _Deny(
                    MAX_OPEN_ORDERS,
                    f"{count} orders already open, the limit is {limits.max_open_orders} (max_open_orders)",
                )
        for window, limit, key_name in (
            (1.0, limits.max_orders_per_second, "max_orders_per_second"),
            (60.0, limits.max_orders_per_minute, "max_orders_per_minute"),
        ):
            if limit is None:
                continue
            count = self.book.submits_within(now, window)
            if count >= limit:
                raise _Deny(
                    ORDER_RATE,
                    f"{count} orders approved in the last {window:g} s, the limit is {limit} ({key_name})",
                )

    # --- reporting ------------------------------------------------------------------------
    def snapshot(self, now: float) -> RiskSnapshot:
        """Limits, their usage, breakers and state for `tradectl risk` (encodes to JSON as is)."""
        self._clock(now)
        return build_snapshot(self, now)
