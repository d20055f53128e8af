"""The simulated venue's matching engine: pure code, no I/O, no trio.

`SimEngine` runs one central limit order book per instrument with
price-time priority, for several accounts, and behaves the way Binance Spot
does where a client can tell the difference:

- LIMIT (GTC / IOC / FOK), MARKET by base quantity or by quote amount, and
  LIMIT_MAKER (post-only: refused if it would take). IOC, FOK and MARKET
  leftovers expire; fills happen at the resting order's price.
- Maker/taker fees are charged in the asset received (a buyer pays in base, a
  seller in quote), like Binance without BNB discounts.
- Orders lock what they may spend (quote for a buy, base for a sell) and are
  refused when the free balance is short.
- Refusals carry Binance's codes and messages (`OrderRejected` for new orders,
  `OrderNotFound` for cancels and queries), so the protocol server can pass
  them through verbatim.

Every state change is published to observers, synchronously and in order,
after the change is complete: the public gets `PublicTrade` and `BookDiff`
(with contiguous update ids that line up with `snapshot().last_update_id`, so
the documented snapshot+diff sync works); each account gets `OrderUpdate`,
`Fill` and `BalanceUpdate`. For one order the sequence mirrors Binance's
executionReports: an `OrderUpdate` NEW, then for each trade a `Fill`
immediately followed by the order's `OrderUpdate` (PARTIALLY_FILLED or
FILLED), then, if it did not fill, EXPIRED (or later CANCELED).
Balance updates close each operation, one per changed asset.

Observers must not change the engine from inside a callback (they would see
events out of order); they should queue the event and return.

Internally prices are integer ticks and quantities integer steps; see
`venues.sim.book`. The engine is the venue's truth: tests and fault-injecting
servers read it directly through the read methods below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from itertools import islice

import msgspec

from daemon.logs import describe_error, get_logger
from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce
from venues.base import (
    AccountTrade,
    Balance,
    BookDiff,
    BookSnapshot,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
    PublicTrade,
    VenueError,
)
from venues.sim.accounts import DEFAULT_DECIMALS, SimAccount, TradeRecord, decimals_of
from venues.sim.book import OrderBook, SimOrder

log = get_logger("venue.sim")

MarketObserver = Callable[[BookDiff | PublicTrade], None]
AccountObserver = Callable[[OrderUpdate | Fill | BalanceUpdate], None]

# Binance's codes and engine messages (errors.md).
BAD_SYMBOL = -1121
MANDATORY_PARAM = -1102
PARAM_NOT_REQUIRED = -1106
BAD_PRECISION = -1111
INVALID_MESSAGE = -1013
NEW_ORDER_REJECTED = -2010
CANCEL_REJECTED = -2011
NO_SUCH_ORDER = -2013
MSG_INSUFFICIENT = "Account has insufficient balance for requested action."
MSG_WOULD_TAKE = "Order would immediately match and take."
MSG_DUPLICATE = "Duplicate order sent."
MSG_MARKET_CLOSED = "Market is closed."
MSG_UNSUPPORTED = "Unsupported order combination"
MSG_UNKNOWN_ORDER = "Unknown order sent."
MSG_NO_SUCH_ORDER = "Order does not exist."
MSG_INVALID_SYMBOL = "Invalid symbol."

_FILLED = OrderStatus.FILLED
_PARTIAL = OrderStatus.PARTIALLY_FILLED


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _mandatory(name: str) -> OrderRejected:
    return OrderRejected(MANDATORY_PARAM, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _not_required(name: str) -> OrderRejected:
    return OrderRejected(PARAM_NOT_REQUIRED, f"Parameter '{name}' sent when not required.")


def _filter_failure(name: str) -> OrderRejected:
    return OrderRejected(INVALID_MESSAGE, f"Filter failure: {name}")


def _ceil_div(a: Decimal, b: Decimal) -> int:
    q = a / b
    i = int(q)
    return i if i == q else i + 1


class _Spec:
    """An instrument with the integer constants the matching loop needs."""

    __slots__ = (
        "instrument",
        "symbol",
        "base",
        "quote",
        "tick",
        "step",
        "unit_notional",
        "base_per_step",
        "quote_per_notional",
        "min_qty",
        "max_qty",
        "min_price",
        "max_price",
        "min_notional",
        "max_notional",
        "trading",
        "book",
        "observers",
    )

    def __init__(self, instrument: Instrument, scales: dict[str, int]) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.base = instrument.base
        self.quote = instrument.quote
        self.tick = instrument.tick_size
        self.step = instrument.step_size
        self.unit_notional = instrument.tick_size * instrument.step_size
        self.base_per_step = int(instrument.step_size.scaleb(scales[self.base]))
        self.quote_per_notional = int(self.unit_notional.scaleb(scales[self.quote]))
        tick, step = self.tick, self.step
        self.min_qty = _ceil_div(instrument.min_qty, step) if instrument.min_qty else 0
        self.max_qty = int(instrument.max_qty / step) if instrument.max_qty else 0
        self.min_price = _ceil_div(instrument.min_price, tick) if instrument.min_price else 0
        self.max_price = int(instrument.max_price / tick) if instrument.max_price else 0
        self.min_notional = _ceil_div(instrument.min_notional, self.unit_notional) if instrument.min_notional else 0
        self.max_notional = int(instrument.max_notional / self.unit_notional) if instrument.max_notional else 0
        self.trading = instrument.trading
        self.book = OrderBook(self.symbol)
        self.observers: list[MarketObserver] = []

    def price(self, ticks: int) -> Decimal:
        return self.tick * ticks

    def qty(self, steps: int) -> Decimal:
        return self.step * steps


class SimEngine:
    """Order books, accounts and matching for a simulated venue.

    `instruments` fixes the symbols (and so the precision of every asset).
    `clock_ms` gives the venue's wall-clock time in ms for timestamps; the
    sim world passes one driven by trio's clock so runs are reproducible.
    """

    def __init__(
        self,
        instruments: Iterable[Instrument],
        *,
        venue: str = "sim",
        clock_ms: Callable[[], int] | None = None,
        maker_fee: Decimal = Decimal("0.001"),
        taker_fee: Decimal = Decimal("0.001"),
    ) -> None:
        instruments = list(instruments)
        if not instruments:
            raise ValueError("a sim engine needs at least one instrument")
        self.venue = venue
        self.now_ms: Callable[[], int] = clock_ms or _wall_ms
        self.default_maker_fee = maker_fee
        self.default_taker_fee = taker_fee
        self._scales = self._asset_scales(instruments)
        self._specs: dict[str, _Spec] = {}
        for instrument in instruments:
            if instrument.symbol in self._specs:
                raise ValueError(f"instrument {instrument.symbol} is listed twice")
            if instrument.tick_size <= 0 or instrument.step_size <= 0:
                raise ValueError(f"{instrument.symbol}: tick and step sizes must be positive")
            self._specs[instrument.symbol] = _Spec(instrument, self._scales)
        self._accounts: dict[str, SimAccount] = {}
        self._fees: dict[str, int] = dict.fromkeys(self._scales, 0)
        self._deposited: dict[str, int] = dict.fromkeys(self._scales, 0)
        self._all_market_observers: list[MarketObserver] = []
        # The operation in progress: nesting depth, levels changed per book,
        # accounts whose balances changed, and events waiting for dispatch.
        self._depth = 0
        self._now = 0
        self._dispatching = False
        self._touched: dict[_Spec, set[tuple[bool, int]]] = {}
        self._balance_touched: dict[SimAccount, set[str]] = {}
        self._pending: list[tuple[list, object]] = []

    @staticmethod
    def _asset_scales(instruments: list[Instrument]) -> dict[str, int]:
        """Decimals per asset: 8 like Binance, more if a tick or step needs it."""
        scales: dict[str, int] = {}
        for ins in instruments:
            scales[ins.base] = max(scales.get(ins.base, DEFAULT_DECIMALS), decimals_of(ins.step_size))
            unit = ins.tick_size * ins.step_size
            scales[ins.quote] = max(scales.get(ins.quote, DEFAULT_DECIMALS), decimals_of(unit))
        return scales

    # ===================================================================================
    # Accounts
    # ===================================================================================

    def open_account(
        self,
        name: str,
        *,
        maker_fee: Decimal | None = None,
        taker_fee: Decimal | None = None,
        unlimited: bool = False,
        history_limit: int = 100_000,
    ) -> None:
        """Create an account (no balances). `unlimited` skips balance checks (market participants)."""
        if name in self._accounts:
            raise ValueError(f"account {name!r} already exists")
        self._accounts[name] = SimAccount(
            name,
            maker_fee=self.default_maker_fee if maker_fee is None else maker_fee,
            taker_fee=self.default_taker_fee if taker_fee is None else taker_fee,
            unlimited=unlimited,
            history_limit=history_limit,
        )

    def set_fees(self, account: str, *, maker_fee: Decimal, taker_fee: Decimal) -> None:
        self._account(account).set_fees(maker_fee, taker_fee)

    def fee_rates(self, account: str) -> tuple[Decimal, Decimal]:
        """(maker, taker) fee rates of `account`."""
        acct = self._account(account)
        return acct.maker_fee, acct.taker_fee

    def deposit(self, account: str, asset: str, amount: Decimal) -> None:
        """Credit `amount` of `asset` to the account's free balance."""
        acct = self._account(account)
        units = self._to_units(asset, amount)
        if units is None or units <= 0:
            raise ValueError(
                f"deposit of {amount} {asset} must be positive with at most {self._scale(asset)} decimals"
            )
        self._begin()
        try:
            acct.holding(asset).free += units
            self._deposited[asset] = self._deposited.get(asset, 0) + units
            self._fees.setdefault(asset, 0)
            self._touch_balance(acct, asset)
        finally:
            self._end()

    def accounts(self) -> list[str]:
        return list(self._accounts)

    def has_account(self, name: str) -> bool:
        return name in self._accounts

    def balances(self, account: str, *, include_zero: bool = False) -> list[Balance]:
        """Every asset the account holds (or ever held, with `include_zero`), by asset name."""
        acct = self._account(account)
        out = []
        for asset in sorted(acct.holdings):
            holding = acct.holdings[asset]
            if include_zero or holding.free or holding.locked:
                out.append(self._balance(asset, holding.free, holding.locked))
        return out

    def balance(self, account: str, asset: str) -> Balance:
        holding = self._account(account).holdings.get(asset)
        if holding is None:
            return self._balance(asset, 0, 0)
        return self._balance(asset, holding.free, holding.locked)

    def asset_decimals(self, asset: str) -> int:
        """Decimals the venue keeps for `asset` (Binance's baseAssetPrecision / quoteAssetPrecision)."""
        return self._scale(asset)

    def fees_collected(self) -> dict[str, Decimal]:
        return {asset: self._from_units(asset, units) for asset, units in sorted(self._fees.items())}

    def asset_total(self, asset: str) -> Decimal:
        """Everything there is of `asset`: every account's free + locked, plus fees collected."""
        units = self._fees.get(asset, 0)
        for acct in self._accounts.values():
            holding = acct.holdings.get(asset)
            if holding is not None:
                units += holding.free + holding.locked
        return self._from_units(asset, units)

    def deposited(self, asset: str) -> Decimal:
        """Everything ever deposited of `asset` (what `asset_total` must always equal)."""
        return self._from_units(asset, self._deposited.get(asset, 0))

    # ===================================================================================
    # Instruments and market data
    # ===================================================================================

    @property
    def symbols(self) -> list[str]:
        return list(self._specs)

    def instruments(self) -> list[Instrument]:
        return [self.instrument(symbol) for symbol in self._specs]

    def instrument(self, symbol: str) -> Instrument:
        spec = self._spec(symbol)
        if spec.trading != spec.instrument.trading:
            return msgspec.structs.replace(spec.instrument, trading=spec.trading)
        return spec.instrument

    def set_trading(self, symbol: str, trading: bool) -> None:
        """Open or close a market; new orders on a closed one get -2010 "Market is closed."."""
        self._spec(symbol).trading = trading

    def is_trading(self, symbol: str) -> bool:
        return self._spec(symbol).trading

    def snapshot(self, symbol: str, depth: int | None = 100) -> BookSnapshot:
        """The aggregated book, best levels first; `depth=None` for every level."""
        spec = self._spec(symbol)
        book = spec.book
        tick, step = spec.tick, spec.step
        bids = reversed(book.bids.items())
        asks = iter(book.asks.items())
        if depth is not None:
            bids = islice(bids, depth)
            asks = islice(asks, depth)
        return BookSnapshot(
            symbol=symbol,
            last_update_id=book.update_id,
            bids=tuple((tick * px, step * level.qty) for px, level in bids),
            asks=tuple((tick * px, step * level.qty) for px, level in asks),
        )

    def last_update_id(self, symbol: str) -> int:
        return self._spec(symbol).book.update_id

    def best_bid(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        spec = self._spec(symbol)
        if not spec.book.bids:
            return None
        px, level = spec.book.bids.peekitem(-1)
        return spec.price(px), spec.qty(level.qty)

    def best_ask(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        spec = self._spec(symbol)
        if not spec.book.asks:
            return None
        px, level = spec.book.asks.peekitem(0)
        return spec.price(px), spec.qty(level.qty)

    def mid(self, symbol: str) -> Decimal | None:
        bid, ask = self.best_bid(symbol), self.best_ask(symbol)
        if bid is None or ask is None:
            return None
        return (bid[0] + ask[0]) / 2

    def last_price(self, symbol: str) -> Decimal | None:
        spec = self._spec(symbol)
        px = spec.book.last_price
        return None if px is None else spec.price(px)

    def last_trade_id(self, symbol: str) -> int:
        """Id of the last trade on `symbol` (0 before the first)."""
        return self._spec(symbol).book.next_trade_id - 1

    # --- integer views, for the synthetic market and benchmarks -------------------------

    def best_ticks(self, symbol: str) -> tuple[int | None, int | None]:
        """(best bid, best ask) in ticks."""
        book = self._spec(symbol).book
        return book.best_bid(), book.best_ask()

    def remaining_steps(self, symbol: str, order_id: int) -> int:
        """Steps still resting for an open order; 0 once it is filled, cancelled or expired."""
        order = self._specs[symbol].book.open.get(order_id)
        return 0 if order is None else order.qty - order.filled

    # ===================================================================================
    # Observers
    # ===================================================================================

    def subscribe_market(self, callback: MarketObserver, symbols: Sequence[str] | None = None) -> Callable[[], None]:
        """Call `callback` with every PublicTrade and BookDiff of `symbols` (default: all).

        Returns the function that unsubscribes. A callback that raises is
        logged and unsubscribed; the engine carries on. Callbacks run after
        the operation (or batch) completed, so reading the engine from one is
        fine and sees the state right after it; changing it is refused.
        """
        if symbols is None:
            specs = list(self._specs.values())
        else:
            specs = [self._spec(s) for s in dict.fromkeys(symbols)]
        for spec in specs:
            spec.observers.append(callback)

        def unsubscribe() -> None:
            for spec in specs:
                if callback in spec.observers:
                    spec.observers.remove(callback)

        return unsubscribe

    def subscribe_account(self, account: str, callback: AccountObserver) -> Callable[[], None]:
        """Call `callback` with every OrderUpdate, Fill and BalanceUpdate of `account`."""
        acct = self._account(account)
        acct.observers.append(callback)

        def unsubscribe() -> None:
            if callback in acct.observers:
                acct.observers.remove(callback)

        return unsubscribe

    # ===================================================================================
    # Orders (the venue's API)
    # ===================================================================================

    def place_order(self, account: str, request: OrderRequest) -> OrderState:
        """Accept, match and (for GTC / LIMIT_MAKER leftovers) rest an order.

        Returns the order's state after matching: FILLED, PARTIALLY_FILLED or
        NEW when it rests, EXPIRED for IOC/FOK/MARKET leftovers. Raises
        `OrderRejected` with Binance's code when the venue would refuse it.
        """
        acct = self._account(account)
        spec = self._specs.get(request.symbol)
        if spec is None:
            raise OrderRejected(BAD_SYMBOL, MSG_INVALID_SYMBOL)
        self._begin()
        try:
            order = self._place(acct, spec, request)
            return self._state(spec, order)
        finally:
            self._end()

    def cancel_order(
        self,
        account: str,
        symbol: str,
        *,
        venue_order_id: int | str | None = None,
        client_order_id: str | None = None,
    ) -> OrderState:
        """Cancel one open order; `OrderNotFound` (-2011 "Unknown order sent.") if it is not open.

        With both ids the order is found by `venue_order_id` and must carry
        `client_order_id`, as on Binance.
        """
        acct = self._account(account)
        spec = self._spec(symbol)
        order = self._find_open(acct, spec, venue_order_id, client_order_id)
        if order is None:
            raise OrderNotFound(CANCEL_REJECTED, MSG_UNKNOWN_ORDER)
        self._begin()
        try:
            self._cancel(spec, order)
            return self._state(spec, order)
        finally:
            self._end()

    def cancel_all(self, account: str, symbol: str) -> list[OrderState]:
        """Cancel every open order of `account` on `symbol`, oldest first.

        Returns an empty list when there was nothing to cancel (Binance
        answers that case with -2011; the protocol server maps it).
        """
        acct = self._account(account)
        spec = self._spec(symbol)
        orders = list(acct.open.get(symbol, {}).values())
        if not orders:
            return []
        self._begin()
        try:
            out = []
            for order in orders:
                self._cancel(spec, order)
                out.append(self._state(spec, order))
            return out
        finally:
            self._end()

    def query_order(
        self,
        account: str,
        symbol: str,
        *,
        venue_order_id: int | str | None = None,
        client_order_id: str | None = None,
    ) -> OrderState:
        """An order, open or closed; `OrderNotFound` (-2013 "Order does not exist.") if unknown."""
        acct = self._account(account)
        spec = self._spec(symbol)
        order = self._find(acct, spec, venue_order_id, client_order_id)
        if order is None:
            raise OrderNotFound(NO_SUCH_ORDER, MSG_NO_SUCH_ORDER)
        return self._state(spec, order)

    def open_orders(self, account: str, symbol: str | None = None) -> list[OrderState]:
        """Open orders of `account`, by symbol then age."""
        acct = self._account(account)
        symbols = [self._spec(symbol).symbol] if symbol is not None else sorted(acct.open)
        out = []
        for sym in symbols:
            spec = self._specs[sym]
            out.extend(self._state(spec, order) for order in acct.open.get(sym, {}).values())
        return out

    def my_trades(
        self,
        account: str,
        symbol: str,
        *,
        from_trade_id: int | str | None = None,
        limit: int | None = None,
    ) -> list[AccountTrade]:
        """The account's trades on `symbol`, oldest first, from `from_trade_id` (inclusive)."""
        acct = self._account(account)
        spec = self._spec(symbol)
        start = int(from_trade_id) if from_trade_id is not None else None
        out: list[AccountTrade] = []
        for record in acct.trades.get(symbol, ()):
            if start is not None and record.trade_id < start:
                continue
            out.append(self._account_trade(spec, record))
            if limit is not None and len(out) >= limit:
                break
        return out

    def order_trades(
        self,
        account: str,
        symbol: str,
        *,
        venue_order_id: int | str | None = None,
        client_order_id: str | None = None,
    ) -> list[AccountTrade]:
        """The trades of one order (the `fills` of a FULL new-order response)."""
        acct = self._account(account)
        spec = self._spec(symbol)
        order = self._find(acct, spec, venue_order_id, client_order_id)
        if order is None:
            raise OrderNotFound(NO_SUCH_ORDER, MSG_NO_SUCH_ORDER)
        return [self._account_trade(spec, record) for record in order.trades or ()]

    # --- integer fast paths for trusted callers (the synthetic market) -----------------

    def place_limit_ticks(self, account: str, symbol: str, is_buy: bool, price: int, qty: int) -> int:
        """A GTC limit order in ticks and steps, without filter checks. Returns its order id.

        Balances are still enforced unless the account is unlimited.
        """
        acct = self._accounts[account]
        spec = self._specs[symbol]
        if price <= 0 or qty <= 0:
            raise ValueError(f"price and quantity must be positive, got {price} ticks x {qty} steps")
        self._begin()
        try:
            order = self._submit(acct, spec, None, is_buy, OrderType.LIMIT, TimeInForce.GTC, price, qty, None, False)
            return order.order_id
        finally:
            self._end()

    def place_market_steps(self, account: str, symbol: str, is_buy: bool, qty: int) -> int:
        """A MARKET order for `qty` steps, without filter checks. Returns the steps filled."""
        acct = self._accounts[account]
        spec = self._specs[symbol]
        if qty <= 0:
            raise ValueError(f"quantity must be positive, got {qty} steps")
        self._begin()
        try:
            order = self._submit(acct, spec, None, is_buy, OrderType.MARKET, None, None, qty, None, False)
            return order.filled
        finally:
            self._end()

    def cancel_by_id(self, account: str, symbol: str, order_id: int) -> bool:
        """Cancel an open order by its id; False if it is no longer open."""
        spec = self._specs[symbol]
        order = spec.book.open.get(order_id)
        if order is None or order.account is not self._accounts[account]:
            return False
        self._begin()
        try:
            self._cancel(spec, order)
            return True
        finally:
            self._end()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several operations into one: one update id and one BookDiff per symbol.

        Observers hear about the batch when it ends. The synthetic market
        uses this for each step, which also keeps the stream as compact as
        Binance's 100 ms depth updates.
        """
        self._begin()
        try:
            yield
        finally:
            self._end()

    # ===================================================================================
    # Order entry internals
    # ===================================================================================

    def _place(self, acct: SimAccount, spec: _Spec, request: OrderRequest) -> SimOrder:
        """Validate a request like Binance does, then submit it."""
        if not spec.trading:
            raise OrderRejected(NEW_ORDER_REJECTED, MSG_MARKET_CLOSED)
        otype = request.order_type
        tif = request.time_in_force
        if request.iceberg_qty is not None:
            raise OrderRejected(NEW_ORDER_REJECTED, MSG_UNSUPPORTED)
        price: int | None = None
        qty: int | None = None
        quote_units: int | None = None
        if otype is OrderType.MARKET:
            if request.price is not None:
                raise _not_required("price")
            if tif is not None:
                raise _not_required("timeInForce")
            if request.quantity is not None and request.quote_quantity is not None:
                raise _not_required("quoteOrderQty")
            if request.quantity is not None:
                qty = self._qty_steps(spec, request.quantity)
            elif request.quote_quantity is not None:
                quote_units = self._to_units(spec.quote, request.quote_quantity)
                if quote_units is None:
                    raise OrderRejected(BAD_PRECISION, "Parameter 'quoteOrderQty' has too much precision.")
                if quote_units <= 0:
                    raise _filter_failure("NOTIONAL")
            else:
                raise OrderRejected(
                    MANDATORY_PARAM, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
                )
        elif otype is OrderType.LIMIT or otype is OrderType.LIMIT_MAKER:
            if otype is OrderType.LIMIT and tif is None:
                raise _mandatory("timeInForce")
            if otype is OrderType.LIMIT_MAKER and tif is not None:
                raise _not_required("timeInForce")
            if request.quote_quantity is not None:
                raise _not_required("quoteOrderQty")
            if request.price is None:
                raise _mandatory("price")
            if request.quantity is None:
                raise _mandatory("quantity")
            price = self._price_ticks(spec, request.price)
            qty = self._qty_steps(spec, request.quantity)
            notional = price * qty
            if notional < spec.min_notional or (spec.max_notional and notional > spec.max_notional):
                raise _filter_failure("NOTIONAL")
        else:  # pragma: no cover - OrderType has no other members today
            raise OrderRejected(NEW_ORDER_REJECTED, MSG_UNSUPPORTED)

        if otype is OrderType.MARKET:
            self._check_market_notional(spec, request.side is Side.BUY, qty, quote_units)

        cid = request.client_order_id or None
        if cid is not None:
            existing = acct.by_client_id.get((spec.symbol, cid))
            if existing is not None and existing.resting:
                raise OrderRejected(NEW_ORDER_REJECTED, MSG_DUPLICATE)
        return self._submit(acct, spec, cid, request.side is Side.BUY, otype, tif, price, qty, quote_units, True)

    def _check_market_notional(self, spec: _Spec, is_buy: bool, qty: int | None, quote_units: int | None) -> None:
        """NOTIONAL for MARKET orders, against the last price (or the far touch before any trade)."""
        if quote_units is not None:
            notional_units = quote_units // spec.quote_per_notional
        else:
            book = spec.book
            ref = book.last_price
            if ref is None:
                ref = book.best_ask() if is_buy else book.best_bid()
            if ref is None:
                return
            assert qty is not None
            notional_units = ref * qty
        if notional_units < spec.min_notional or (spec.max_notional and notional_units > spec.max_notional):
            raise _filter_failure("NOTIONAL")

    def _submit(
        self,
        acct: SimAccount,
        spec: _Spec,
        cid: str | None,
        is_buy: bool,
        otype: OrderType,
        tif: TimeInForce | None,
        price: int | None,
        qty: int | None,
        quote_units: int | None,
        index: bool,
    ) -> SimOrder:
        """Lock funds, then match, then rest or expire. Nothing changes before the checks pass.

        `index` makes the order findable by client id (always, for orders
        from the venue API; the market's fast paths skip it).
        """
        book = spec.book
        # --- what can trade, and what must be locked ---------------------------------
        # A limit order locks what it may spend. A MARKET order never rests and
        # matches in this same call, so it locks nothing and pays from free
        # balance; it only has to show it can pay for what the book will give.
        if otype is OrderType.MARKET:
            lock = 0
            if quote_units is not None:
                qty, notional = self._walk(spec, is_buy, None, None, quote_units // spec.quote_per_notional)
                need = quote_units if is_buy else qty * spec.base_per_step
            elif acct.unlimited:
                need = 0
            elif is_buy:
                assert qty is not None
                need = self._walk(spec, is_buy, None, qty, None)[1] * spec.quote_per_notional
            else:
                assert qty is not None
                need = qty * spec.base_per_step
        else:
            assert price is not None and qty is not None
            if otype is OrderType.LIMIT_MAKER:
                far = book.best_ask() if is_buy else book.best_bid()
                if far is not None and (far <= price if is_buy else far >= price):
                    raise OrderRejected(NEW_ORDER_REJECTED, MSG_WOULD_TAKE)
            need = lock = price * qty * spec.quote_per_notional if is_buy else qty * spec.base_per_step
        holding = acct.holding(spec.quote if is_buy else spec.base)
        if need > holding.free and not acct.unlimited:
            raise OrderRejected(NEW_ORDER_REJECTED, MSG_INSUFFICIENT)

        # --- accepted --------------------------------------------------------------------
        order_id = book.next_order_id
        book.next_order_id = order_id + 1
        if cid is None:
            cid = f"sim-{order_id}"
        order = SimOrder(
            order_id, acct, spec.symbol, cid, is_buy, otype, tif, price, qty, quote_units, self._now
        )
        if lock:
            holding.free -= lock
            holding.locked += lock
            order.locked = lock
        if acct.history_limit:
            order.trades = []
        if index:
            acct.by_client_id[(spec.symbol, cid)] = order
        observed = bool(acct.observers)
        if observed:
            self._pending.append((acct.observers, self._order_update(spec, order)))
            if lock:
                self._touch_balance(acct, spec.quote if is_buy else spec.base)

        # --- trade -------------------------------------------------------------------------
        if tif is TimeInForce.FOK:
            available, _ = self._walk(spec, is_buy, price, qty, None)
            if available < qty:
                self._finish(spec, order, OrderStatus.EXPIRED)
                return order
        if qty:
            self._match(spec, order, price)
        if order.qty and order.filled == order.qty:
            self._finish(spec, order, None)
        elif otype is OrderType.LIMIT_MAKER or tif is TimeInForce.GTC:
            book.add(order)
            acct.open_in(spec.symbol)[order_id] = order
            self._touched_levels(spec).add((is_buy, price))
        else:
            self._finish(spec, order, OrderStatus.EXPIRED)
        return order

    def _walk(
        self, spec: _Spec, is_buy: bool, limit: int | None, max_steps: int | None, budget: int | None
    ) -> tuple[int, int]:
        """What a taker would get, without trading: (steps, notional units).

        Bounded by `max_steps`, or by a notional `budget` (MARKET by quote
        amount: as much as it can buy, or sell, without the quote traded
        going over the amount).
        """
        levels = spec.book.asks if is_buy else spec.book.bids
        steps = notional = 0
        for px in levels.keys() if is_buy else reversed(levels.keys()):
            if limit is not None and (px > limit if is_buy else px < limit):
                break
            if budget is not None:
                take = (budget - notional) // px
                if take <= 0:
                    if is_buy:
                        break
                    continue  # a lower bid may still fit in what is left
            else:
                assert max_steps is not None
                take = max_steps - steps
            available = levels[px].qty
            if take > available:
                take = available
            steps += take
            notional += take * px
            if max_steps is not None and steps >= max_steps:
                break
        return steps, notional

    def _match(self, spec: _Spec, taker: SimOrder, limit: int | None) -> None:
        """Trade `taker` against the opposite side, best price first, oldest first."""
        remaining = taker.qty - taker.filled
        book = spec.book
        is_buy = taker.is_buy
        levels = book.asks if is_buy else book.bids
        if not remaining or not levels:
            return
        touched = self._touched_levels(spec)
        emptied = []  # deleted after the walk: the key iterator must not see the book change
        for px in levels.keys() if is_buy else reversed(levels.keys()):
            if limit is not None and (px > limit if is_buy else px < limit):
                break
            level = levels[px]
            touched.add((not is_buy, px))
            while remaining:
                maker = level.front()
                q = maker.qty - maker.filled
                if q > remaining:
                    q = remaining
                level.qty -= q
                remaining -= q
                self._fill(spec, taker, maker, px, q)
                if maker.filled == maker.qty:
                    level.orders.popleft()
                    level.count -= 1
                    maker.resting = False
                    del book.open[maker.order_id]
                    del maker.account.open[spec.symbol][maker.order_id]
                    self._finish(spec, maker, None)
                    if not level.count:
                        emptied.append(px)
                        break
            if not remaining:
                break
        for px in emptied:
            del levels[px]

    def _fill(self, spec: _Spec, taker: SimOrder, maker: SimOrder, px: int, q: int) -> None:
        """Settle one trade of `q` steps at `px` ticks between two orders."""
        notional = px * q
        quote_units = notional * spec.quote_per_notional
        base_units = q * spec.base_per_step
        if taker.is_buy:
            buyer, seller = taker, maker
            num_b, den_b = taker.account.taker_rate
            num_s, den_s = maker.account.maker_rate
        else:
            buyer, seller = maker, taker
            num_b, den_b = maker.account.maker_rate
            num_s, den_s = taker.account.taker_rate
        base, quote = spec.base, spec.quote
        # Buyer: pays quote out of its lock (a limit buy filled below its limit
        # gets the difference back), or out of free balance for a MARKET order;
        # receives base minus the fee.
        b_acct = buyer.account
        holding = b_acct.holding(quote)
        if buyer.price is None:
            holding.free -= quote_units
        else:
            release = (buyer.price - px) * q * spec.quote_per_notional
            debit = quote_units + release
            holding.locked -= debit
            holding.free += release
            buyer.locked -= debit
        fee_b = base_units * num_b // den_b
        b_acct.holding(base).free += base_units - fee_b
        # Seller: gives base out of its lock (or free, MARKET), receives quote minus the fee.
        s_acct = seller.account
        holding = s_acct.holding(base)
        if seller.price is None:
            holding.free -= base_units
        else:
            holding.locked -= base_units
            seller.locked -= base_units
        fee_s = quote_units * num_s // den_s
        s_acct.holding(quote).free += quote_units - fee_s
        fees = self._fees
        fees[base] += fee_b
        fees[quote] += fee_s

        now = self._now
        for order in (maker, taker):
            order.filled += q
            order.notional += notional
            order.updated_ms = now
            order.status = _FILLED if order.filled == order.qty else _PARTIAL
        book = spec.book
        trade_id = book.next_trade_id
        book.next_trade_id = trade_id + 1
        book.last_price = px

        if spec.observers:
            self._pending.append(
                (
                    spec.observers,
                    PublicTrade(
                        symbol=spec.symbol,
                        trade_id=trade_id,
                        price=spec.tick * px,
                        qty=spec.step * q,
                        taker_side=Side.BUY if taker.is_buy else Side.SELL,
                        venue_ms=now,
                    ),
                )
            )
        fee_m, fee_t = (fee_b, fee_s) if maker is buyer else (fee_s, fee_b)
        self._after_fill(spec, maker, trade_id, px, q, fee_m, True, now)
        self._after_fill(spec, taker, trade_id, px, q, fee_t, False, now)

    def _after_fill(
        self, spec: _Spec, order: SimOrder, trade_id: int, px: int, q: int, fee: int, is_maker: bool, now: int
    ) -> None:
        """The account's record of one trade, and its events."""
        acct = order.account
        fee_asset = spec.base if order.is_buy else spec.quote
        if order.trades is not None:
            record = TradeRecord(
                trade_id, order.order_id, order.client_order_id, order.is_buy, px, q, fee, fee_asset, is_maker, now
            )
            order.trades.append(record)
            acct.record_trade(spec.symbol, record)
        if acct.observers:
            self._pending.append(
                (
                    acct.observers,
                    Fill(
                        venue=self.venue,
                        symbol=spec.symbol,
                        client_order_id=order.client_order_id,
                        trade_id=str(trade_id),
                        side=Side.BUY if order.is_buy else Side.SELL,
                        price=spec.tick * px,
                        qty=spec.step * q,
                        fee=self._from_units(fee_asset, fee),
                        fee_asset=fee_asset,
                        is_maker=is_maker,
                        venue_order_id=str(order.order_id),
                        venue_ms=now,
                    ),
                )
            )
            self._pending.append((acct.observers, self._order_update(spec, order)))
            self._touch_balance(acct, spec.base)
            self._touch_balance(acct, spec.quote)

    def _finish(self, spec: _Spec, order: SimOrder, status: OrderStatus | None) -> None:
        """Close an order that is no longer in the book: release its lock, keep it for queries.

        `status` is the final status to set and announce (EXPIRED, CANCELED);
        None when it filled (the fill already announced FILLED).
        """
        acct = order.account
        if order.locked:
            asset = spec.quote if order.is_buy else spec.base
            holding = acct.holding(asset)
            holding.locked -= order.locked
            holding.free += order.locked
            order.locked = 0
            if acct.observers:
                self._touch_balance(acct, asset)
        if status is not None:
            order.status = status
            order.updated_ms = self._now
            if acct.observers:
                self._pending.append((acct.observers, self._order_update(spec, order)))
        acct.remember_closed(order)

    def _cancel(self, spec: _Spec, order: SimOrder) -> None:
        spec.book.remove(order)
        del order.account.open[spec.symbol][order.order_id]
        self._touched_levels(spec).add((order.is_buy, order.price))
        self._finish(spec, order, OrderStatus.CANCELED)

    def _find_open(
        self, acct: SimAccount, spec: _Spec, venue_order_id: int | str | None, client_order_id: str | None
    ) -> SimOrder | None:
        order = self._find(acct, spec, venue_order_id, client_order_id)
        return order if order is not None and order.resting else None

    def _find(
        self, acct: SimAccount, spec: _Spec, venue_order_id: int | str | None, client_order_id: str | None
    ) -> SimOrder | None:
        if venue_order_id is not None:
            try:
                order_id = int(venue_order_id)
            except ValueError:
                return None
            order = spec.book.open.get(order_id)
            if order is None or order.account is not acct:
                order = acct.closed.get((spec.symbol, order_id))
            if order is not None and client_order_id is not None and order.client_order_id != client_order_id:
                return None
            return order
        if client_order_id is not None:
            return acct.by_client_id.get((spec.symbol, client_order_id))
        raise VenueError(
            MANDATORY_PARAM, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
        )

    # ===================================================================================
    # Units and conversions
    # ===================================================================================

    def _price_ticks(self, spec: _Spec, price: Decimal) -> int:
        if not price.is_finite() or price <= 0:
            raise _filter_failure("PRICE_FILTER")
        ticks, rest = divmod(price, spec.tick)
        ticks = int(ticks)
        if rest or ticks < spec.min_price or (spec.max_price and ticks > spec.max_price):
            raise _filter_failure("PRICE_FILTER")
        return ticks

    def _qty_steps(self, spec: _Spec, qty: Decimal) -> int:
        if not qty.is_finite() or qty <= 0:
            raise _filter_failure("LOT_SIZE")
        steps, rest = divmod(qty, spec.step)
        steps = int(steps)
        if rest or steps < spec.min_qty or (spec.max_qty and steps > spec.max_qty):
            raise _filter_failure("LOT_SIZE")
        return steps

    def _scale(self, asset: str) -> int:
        return self._scales.get(asset, DEFAULT_DECIMALS)

    def _to_units(self, asset: str, amount: Decimal) -> int | None:
        """`amount` in integer units of `asset`, or None if it has too many decimals."""
        if not amount.is_finite():
            return None
        scaled = amount.scaleb(self._scale(asset))
        units = int(scaled)
        return units if units == scaled else None

    def _from_units(self, asset: str, units: int) -> Decimal:
        return Decimal(units).scaleb(-self._scale(asset))

    def _balance(self, asset: str, free: int, locked: int) -> Balance:
        return Balance(asset=asset, free=self._from_units(asset, free), locked=self._from_units(asset, locked))

    def _state(self, spec: _Spec, order: SimOrder) -> OrderState:
        return OrderState(
            symbol=spec.symbol,
            client_order_id=order.client_order_id,
            venue_order_id=str(order.order_id),
            status=order.status,
            side=Side.BUY if order.is_buy else Side.SELL,
            order_type=order.order_type,
            quantity=spec.step * order.qty,
            filled_qty=spec.step * order.filled,
            price=None if order.price is None else spec.tick * order.price,
            quote_filled=spec.unit_notional * order.notional,
            venue_ms=order.updated_ms,
            time_in_force=order.time_in_force,
            quote_quantity=None if order.quote_qty is None else self._from_units(spec.quote, order.quote_qty),
            created_ms=order.created_ms,
        )

    def _order_update(self, spec: _Spec, order: SimOrder) -> OrderUpdate:
        filled = spec.step * order.filled
        quote_filled = spec.unit_notional * order.notional
        return OrderUpdate(
            venue=self.venue,
            symbol=spec.symbol,
            client_order_id=order.client_order_id,
            status=order.status,
            side=Side.BUY if order.is_buy else Side.SELL,
            quantity=spec.step * order.qty,
            filled_qty=filled,
            price=None if order.price is None else spec.tick * order.price,
            avg_price=quote_filled / filled if order.filled else None,
            venue_order_id=str(order.order_id),
            venue_ms=order.updated_ms,
            quote_filled=quote_filled,
        )

    def _account_trade(self, spec: _Spec, record: TradeRecord) -> AccountTrade:
        return AccountTrade(
            symbol=spec.symbol,
            trade_id=str(record.trade_id),
            venue_order_id=str(record.order_id),
            client_order_id=record.client_order_id,
            side=Side.BUY if record.is_buy else Side.SELL,
            price=spec.tick * record.price,
            qty=spec.step * record.qty,
            fee=self._from_units(record.fee_asset, record.fee),
            fee_asset=record.fee_asset,
            is_maker=record.is_maker,
            venue_ms=record.ms,
        )

    def _account(self, name: str) -> SimAccount:
        acct = self._accounts.get(name)
        if acct is None:
            raise KeyError(f"no account {name!r} at sim venue {self.venue!r}; open it with open_account() first")
        return acct

    def _spec(self, symbol: str) -> _Spec:
        spec = self._specs.get(symbol)
        if spec is None:
            raise VenueError(BAD_SYMBOL, MSG_INVALID_SYMBOL)
        return spec

    # ===================================================================================
    # Operations and event dispatch
    # ===================================================================================

    def _begin(self) -> None:
        if self._dispatching:
            raise RuntimeError(
                "a sim engine observer tried to change the engine from its callback; queue the event and act later"
            )
        if not self._depth:
            self._now = self.now_ms()  # one timestamp per operation (or batch)
        self._depth += 1

    def _end(self) -> None:
        self._depth -= 1
        if not self._depth:
            self._flush()

    def _touched_levels(self, spec: _Spec) -> set[tuple[bool, int]]:
        levels = self._touched.get(spec)
        if levels is None:
            levels = self._touched[spec] = set()
        return levels

    def _touch_balance(self, acct: SimAccount, asset: str) -> None:
        assets = self._balance_touched.get(acct)
        if assets is None:
            assets = self._balance_touched[acct] = set()
        assets.add(asset)

    def _flush(self) -> None:
        """End of an operation: advance update ids, then tell the observers, in order."""
        pending = self._pending
        now = self._now
        if self._touched:
            for spec, levels in self._touched.items():
                if not levels:  # matched nothing, rested nothing
                    continue
                book = spec.book
                book.update_id += 1
                if spec.observers:
                    pending.append((spec.observers, self._diff(spec, levels, now)))
            self._touched = {}
        if self._balance_touched:
            for acct, assets in self._balance_touched.items():
                if not acct.observers:
                    continue
                for asset in sorted(assets):
                    holding = acct.holding(asset)
                    pending.append(
                        (
                            acct.observers,
                            BalanceUpdate(
                                venue=self.venue,
                                asset=asset,
                                free=self._from_units(asset, holding.free),
                                locked=self._from_units(asset, holding.locked),
                                venue_ms=now,
                            ),
                        )
                    )
            self._balance_touched = {}
        if not pending:
            return
        self._pending = []
        self._dispatching = True
        try:
            for observers, event in pending:
                for callback in tuple(observers):
                    try:
                        callback(event)
                    except Exception as exc:  # an observer's bug must not corrupt the venue
                        log.error("sim.observer_failed", venue=self.venue, error=describe_error(exc))
                        if callback in observers:
                            observers.remove(callback)
        finally:
            self._dispatching = False

    def _diff(self, spec: _Spec, levels: set[tuple[bool, int]], now: int) -> BookDiff:
        book = spec.book
        tick, step = spec.tick, spec.step
        bids = sorted((px for is_bid, px in levels if is_bid), reverse=True)
        asks = sorted(px for is_bid, px in levels if not is_bid)
        return BookDiff(
            symbol=spec.symbol,
            first_id=book.update_id,
            last_id=book.update_id,
            bids=tuple((tick * px, step * book.level_qty(True, px)) for px in bids),
            asks=tuple((tick * px, step * book.level_qty(False, px)) for px in asks),
            venue_ms=now,
        )

    # ===================================================================================
    # Self-check
    # ===================================================================================

    def audit(self) -> list[str]:
        """Every broken invariant, in words; an empty list means the venue is consistent.

        Checks: books not crossed, level totals, open-order indexes, locks
        backing open orders exactly, and every asset conserved (holdings +
        fees == deposits). Cheap enough for tests, not for hot paths.
        """
        problems: list[str] = []
        locked_by_orders: dict[tuple[str, str], int] = {}
        for spec in self._specs.values():
            book = spec.book
            bid, ask = book.best_bid(), book.best_ask()
            if bid is not None and ask is not None and bid >= ask:
                problems.append(f"{spec.symbol}: book crossed at rest (bid {bid} >= ask {ask} ticks)")
            seen = 0
            for is_bid, side in ((True, book.bids), (False, book.asks)):
                for px, level in side.items():
                    live = level.live()
                    if not live:
                        problems.append(f"{spec.symbol}: empty level {px} left in the book")
                    if level.count != len(live) or level.qty != sum(o.remaining for o in live):
                        problems.append(f"{spec.symbol}: level {px} totals disagree with its orders")
                    if [o.order_id for o in live] != sorted(o.order_id for o in live):
                        problems.append(f"{spec.symbol}: level {px} is not in time priority")
                    for order in live:
                        seen += 1
                        if order.is_buy != is_bid or order.price != px:
                            problems.append(f"{spec.symbol}: order {order.order_id} sits on the wrong level")
                        if book.open.get(order.order_id) is not order:
                            problems.append(f"{spec.symbol}: order {order.order_id} missing from the open index")
                        if order.account.open.get(spec.symbol, {}).get(order.order_id) is not order:
                            problems.append(f"{spec.symbol}: order {order.order_id} missing from its account")
                        if not 0 < order.remaining <= order.qty:
                            problems.append(f"{spec.symbol}: order {order.order_id} has remaining {order.remaining}")
                        if order.is_buy:
                            expected = order.price * order.remaining * spec.quote_per_notional
                            asset = spec.quote
                        else:
                            expected = order.remaining * spec.base_per_step
                            asset = spec.base
                        if order.locked != expected:
                            problems.append(
                                f"{spec.symbol}: order {order.order_id} locks {order.locked} units, expected {expected}"
                            )
                        key = (order.account.name, asset)
                        locked_by_orders[key] = locked_by_orders.get(key, 0) + order.locked
            if seen != len(book.open):
                problems.append(f"{spec.symbol}: open index holds {len(book.open)} orders, book {seen}")
        for acct in self._accounts.values():
            for asset, holding in acct.holdings.items():
                if holding.locked != locked_by_orders.get((acct.name, asset), 0):
                    problems.append(
                        f"account {acct.name}: {asset} locked {holding.locked} units, open orders lock "
                        f"{locked_by_orders.get((acct.name, asset), 0)}"
                    )
                if not acct.unlimited and (holding.free < 0 or holding.locked < 0):
                    problems.append(f"account {acct.name}: negative {asset} balance")
        for asset, deposited in self._deposited.items():
            held = (a.holdings[asset] for a in self._accounts.values() if asset in a.holdings)
            total = self._fees.get(asset, 0) + sum(h.free + h.locked for h in held)
            if total != deposited:
                problems.append(f"{asset}: holdings + fees = {total} units, deposits = {deposited}")
        return problems
