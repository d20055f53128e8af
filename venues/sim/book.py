"""The resting side of the simulated venue: orders and price levels in integer units.

Everything here is an integer: prices are ticks, quantities are steps, and the
quote value of a fill is ``ticks * steps`` *notional units* (one unit is
``tick_size * step_size`` of the quote asset). Decimal only appears where the
engine talks to the outside world, so matching never allocates a Decimal.

A price level is a FIFO queue. Cancelling an order does not search the queue:
the order is marked dead and the level's totals are adjusted, and dead entries
are skipped when they reach the front (or swept when they pile up). That keeps
cancel O(1) while time priority stays exact.
"""

from __future__ import annotations

from collections import deque

from sortedcontainers import SortedDict

from daemon.model import OrderStatus, OrderType, TimeInForce


class SimOrder:
    """One order inside the engine. Mutable, internal: the outside sees `OrderState`."""

    __slots__ = (
        "order_id",
        "account",
        "symbol",
        "client_order_id",
        "is_buy",
        "order_type",
        "time_in_force",
        "price",
        "qty",
        "filled",
        "notional",
        "quote_qty",
        "locked",
        "status",
        "resting",
        "created_ms",
        "updated_ms",
        "trades",
    )

    def __init__(
        self,
        order_id: int,
        account: object,
        symbol: str,
        client_order_id: str | None,
        is_buy: bool,
        order_type: OrderType,
        time_in_force: TimeInForce | None,
        price: int | None,
        qty: int,
        quote_qty: int | None,
        now_ms: int,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.symbol = symbol
        self.client_order_id = client_order_id
        self.is_buy = is_buy
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.price = price  # ticks; None for MARKET
        self.qty = qty  # steps (for a quote-amount MARKET: what the book could give)
        self.filled = 0  # steps
        self.notional = 0  # notional units traded so far
        self.quote_qty = quote_qty  # quote-asset units asked for, MARKET by quote amount only
        self.locked = 0  # asset units still locked for this order (quote if buy, base if sell)
        self.status = OrderStatus.NEW
        self.resting = False  # in the book right now
        self.created_ms = now_ms
        self.updated_ms = now_ms
        self.trades: list | None = None  # the account's trade records, when it keeps history

    @property
    def remaining(self) -> int:
        return self.qty - self.filled

    def __repr__(self) -> str:
        side = "BUY" if self.is_buy else "SELL"
        return (
            f"SimOrder({self.symbol} #{self.order_id} {side} {self.order_type} {self.filled}/{self.qty} steps"
            f" @ {self.price} ticks, {self.status})"
        )


class Level:
    """The orders resting at one price, oldest first."""

    __slots__ = ("orders", "qty", "count")

    def __init__(self) -> None:
        self.orders: deque[SimOrder] = deque()
        self.qty = 0  # remaining steps of the live orders
        self.count = 0  # live orders

    def front(self) -> SimOrder:
        """The oldest live order; dead entries in front of it are dropped."""
        orders = self.orders
        while not orders[0].resting:
            orders.popleft()
        return orders[0]

    def live(self) -> list[SimOrder]:
        return [o for o in self.orders if o.resting]


class OrderBook:
    """Both sides of one instrument, keyed on integer ticks, plus the symbol's counters.

    `update_id` counts changes of the visible book (the Binance depth
    `lastUpdateId`); order and trade ids increase per symbol, as on Binance.
    """

    __slots__ = ("symbol", "bids", "asks", "open", "update_id", "next_order_id", "next_trade_id", "last_price")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: SortedDict = SortedDict()  # ticks -> Level; best is the last key
        self.asks: SortedDict = SortedDict()  # ticks -> Level; best is the first key
        self.open: dict[int, SimOrder] = {}  # order id -> resting order, any account
        self.update_id = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        self.last_price: int | None = None  # ticks of the last trade

    def best_bid(self) -> int | None:
        return self.bids.peekitem(-1)[0] if self.bids else None

    def best_ask(self) -> int | None:
        return self.asks.peekitem(0)[0] if self.asks else None

    def add(self, order: SimOrder) -> None:
        """Queue `order` at the back of its price level."""
        side = self.bids if order.is_buy else self.asks
        level = side.get(order.price)
        if level is None:
            level = side[order.price] = Level()
        level.orders.append(order)
        level.qty += order.qty - order.filled
        level.count += 1
        order.resting = True
        self.open[order.order_id] = order

    def remove(self, order: SimOrder) -> None:
        """Take a resting order out of the book (cancel)."""
        side = self.bids if order.is_buy else self.asks
        level = side[order.price]
        level.qty -= order.qty - order.filled
        level.count -= 1
        order.resting = False
        del self.open[order.order_id]
        if level.count == 0:
            del side[order.price]
        elif len(level.orders) > 2 * level.count + 16:
            # Many cancels behind a long-lived order: sweep the dead entries.
            level.orders = deque(o for o in level.orders if o.resting)

    def level_qty(self, is_bid: bool, price: int) -> int:
        level = (self.bids if is_bid else self.asks).get(price)
        return level.qty if level is not None else 0
