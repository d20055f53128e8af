"""Accounts of the simulated venue: balances in integer asset units, fees, order indexes.

Balances are integers counted in units of ``10**-decimals`` of each asset
(8 decimals unless an instrument needs more), so moving money between
accounts and into the fee pot is exact: the sum of every holding plus the fees
collected never drifts, which is what the conservation tests check.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from decimal import Decimal

from venues.sim.book import SimOrder

DEFAULT_DECIMALS = 8


def decimals_of(value: Decimal) -> int:
    """How many decimal places `value` needs (0.00100 -> 3, 5 -> 0)."""
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def fee_ratio(rate: Decimal, what: str) -> tuple[int, int]:
    """A fee rate as an exact integer fraction (numerator, denominator)."""
    if not rate.is_finite() or rate < 0 or rate >= 1:
        raise ValueError(f"{what} must be a fraction in [0, 1), e.g. 0.001 for 10 bps; got {rate}")
    num, den = rate.as_integer_ratio()
    return num, den


class Holding:
    """One asset of one account: `free` can be spent, `locked` backs open orders."""

    __slots__ = ("free", "locked")

    def __init__(self) -> None:
        self.free = 0
        self.locked = 0


class TradeRecord:
    """One side of one trade as the account sees it (integer units)."""

    __slots__ = (
        "trade_id",
        "order_id",
        "client_order_id",
        "is_buy",
        "price",
        "qty",
        "fee",
        "fee_asset",
        "is_maker",
        "ms",
    )

    def __init__(
        self,
        trade_id: int,
        order_id: int,
        client_order_id: str | None,
        is_buy: bool,
        price: int,
        qty: int,
        fee: int,
        fee_asset: str,
        is_maker: bool,
        ms: int,
    ) -> None:
        self.trade_id = trade_id
        self.order_id = order_id
        self.client_order_id = client_order_id
        self.is_buy = is_buy
        self.price = price
        self.qty = qty
        self.fee = fee
        self.fee_asset = fee_asset
        self.is_maker = is_maker
        self.ms = ms


class SimAccount:
    """Balances, fee rates and the order/trade indexes of one account.

    `unlimited` accounts (the synthetic market's participants) skip the
    balance check; their holdings still move, and may go negative, so the
    venue-wide totals stay exact. `history_limit` bounds how many closed
    orders and trades per symbol are kept for queries: a long-running venue
    must not grow without bound, and the market account keeps none.
    """

    __slots__ = (
        "name",
        "holdings",
        "maker_fee",
        "taker_fee",
        "maker_rate",
        "taker_rate",
        "unlimited",
        "history_limit",
        "open",
        "by_client_id",
        "closed",
        "trades",
        "observers",
    )

    def __init__(
        self,
        name: str,
        *,
        maker_fee: Decimal,
        taker_fee: Decimal,
        unlimited: bool = False,
        history_limit: int = 100_000,
    ) -> None:
        if history_limit < 0:
            raise ValueError(f"history_limit of account {name!r} must not be negative, got {history_limit}")
        self.name = name
        self.holdings: dict[str, Holding] = {}
        self.unlimited = unlimited
        self.history_limit = history_limit
        self.set_fees(maker_fee, taker_fee)
        self.open: dict[str, dict[int, SimOrder]] = {}  # symbol -> order id -> resting order
        self.by_client_id: dict[tuple[str, str], SimOrder] = {}  # (symbol, client id) -> latest order
        self.closed: OrderedDict[tuple[str, int], SimOrder] = OrderedDict()  # oldest first
        self.trades: dict[str, deque[TradeRecord]] = {}
        self.observers: list = []

    def set_fees(self, maker_fee: Decimal, taker_fee: Decimal) -> None:
        self.maker_rate = fee_ratio(maker_fee, f"maker fee of account {self.name!r}")
        self.taker_rate = fee_ratio(taker_fee, f"taker fee of account {self.name!r}")
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee

    def holding(self, asset: str) -> Holding:
        holding = self.holdings.get(asset)
        if holding is None:
            holding = self.holdings[asset] = Holding()
        return holding

    def open_in(self, symbol: str) -> dict[int, SimOrder]:
        orders = self.open.get(symbol)
        if orders is None:
            orders = self.open[symbol] = {}
        return orders

    def remember_closed(self, order: SimOrder) -> None:
        """Keep a finished order for queries, forgetting the oldest past the limit."""
        if not self.history_limit:
            if order.client_order_id is not None:
                key = (order.symbol, order.client_order_id)
                if self.by_client_id.get(key) is order:
                    del self.by_client_id[key]
            return
        self.closed[(order.symbol, order.order_id)] = order
        while len(self.closed) > self.history_limit:
            _, old = self.closed.popitem(last=False)
            if old.client_order_id is not None:
                key = (old.symbol, old.client_order_id)
                if self.by_client_id.get(key) is old:
                    del self.by_client_id[key]

    def record_trade(self, symbol: str, record: TradeRecord) -> None:
        trades = self.trades.get(symbol)
        if trades is None:
            trades = self.trades[symbol] = deque(maxlen=self.history_limit)
        trades.append(record)
