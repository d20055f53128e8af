"""The vocabulary of trading: sides, order types, statuses and instruments.

These are plain values shared by every layer (venues, pure cores, actors, the
journal). Money and quantities are `Decimal` here; the only place they are
rounded to what a venue accepts is `Instrument`, so that "round, then
re-check" (DESIGN §3) happens in exactly one spot.
"""

from __future__ import annotations

import enum
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import msgspec

ZERO = Decimal(0)


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    LIMIT_MAKER = "LIMIT_MAKER"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(enum.StrEnum):
    """Venue statuses plus the three that only exist on our side of the wire.

    PENDING_NEW: journaled and sent, no answer yet. PENDING_CANCEL: cancel sent.
    UNKNOWN: the request may or may not have reached the engine (timeout, 5xx,
    -1007); only a query or the user stream can settle it.
    """

    PENDING_NEW = "PENDING_NEW"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATUSES

    @property
    def is_working(self) -> bool:
        """May still trade at the venue (or may exist there, for UNKNOWN)."""
        return not self.is_final


_FINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class TradingState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class FilterViolation(ValueError):
    """An order that the venue would refuse; `filter` names the venue filter."""

    def __init__(self, filter: str, message: str) -> None:
        super().__init__(message)
        self.filter = filter


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A tradable symbol at one venue with the venue's filters.

    A zero bound disables that rule, as on Binance.
    """

    venue: str
    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal = ZERO
    max_qty: Decimal = ZERO
    min_price: Decimal = ZERO
    max_price: Decimal = ZERO
    min_notional: Decimal = ZERO
    max_notional: Decimal = ZERO
    trading: bool = True
    iceberg_allowed: bool = False

    # --- integer ticks, for order books -------------------------------------------------
    def to_ticks(self, price: Decimal) -> int:
        return int(price / self.tick_size)

    def from_ticks(self, ticks: int) -> Decimal:
        return self.tick_size * ticks

    def to_steps(self, qty: Decimal) -> int:
        return int(qty / self.step_size)

    def from_steps(self, steps: int) -> Decimal:
        return self.step_size * steps

    # --- rounding ---------------------------------------------------------------------
    def round_qty(self, qty: Decimal) -> Decimal:
        """Truncate to the step size: never send more than was asked for."""
        return (qty / self.step_size).to_integral_value(ROUND_DOWN) * self.step_size

    def round_price(self, price: Decimal, side: Side | None = None) -> Decimal:
        """Quantize to the tick; with a side, round away from crossing the limit.

        A buy rounds down and a sell rounds up, so rounding never makes an
        order more aggressive than the algorithm asked for.
        """
        if side is Side.BUY:
            mode = ROUND_FLOOR
        elif side is Side.SELL:
            mode = ROUND_CEILING
        else:
            mode = ROUND_HALF_EVEN
        return (price / self.tick_size).to_integral_value(mode) * self.tick_size

    # --- checks -----------------------------------------------------------------------
    def check(self, qty: Decimal, price: Decimal | None, *, is_market: bool = False) -> None:
        """Raise `FilterViolation` if the venue would refuse this quantity/price.

        For a market order pass the reference price (mid or last) as `price`
        so the notional rules can be applied, or None to skip them.
        """
        if qty <= 0:
            raise FilterViolation("LOT_SIZE", f"quantity {qty} must be positive")
        if self.min_qty and qty < self.min_qty:
            raise FilterViolation("LOT_SIZE", f"quantity {qty} below minimum {self.min_qty}")
        if self.max_qty and qty > self.max_qty:
            raise FilterViolation("LOT_SIZE", f"quantity {qty} above maximum {self.max_qty}")
        if qty % self.step_size != 0:
            raise FilterViolation("LOT_SIZE", f"quantity {qty} is not a multiple of step {self.step_size}")
        if price is None:
            return
        if not is_market:
            if price <= 0:
                raise FilterViolation("PRICE_FILTER", f"price {price} must be positive")
            if self.min_price and price < self.min_price:
                raise FilterViolation("PRICE_FILTER", f"price {price} below minimum {self.min_price}")
            if self.max_price and price > self.max_price:
                raise FilterViolation("PRICE_FILTER", f"price {price} above maximum {self.max_price}")
            if price % self.tick_size != 0:
                raise FilterViolation("PRICE_FILTER", f"price {price} is not a multiple of tick {self.tick_size}")
        notional = price * qty
        if self.min_notional and notional < self.min_notional:
            raise FilterViolation("NOTIONAL", f"notional {notional} below minimum {self.min_notional}")
        if self.max_notional and notional > self.max_notional:
            raise FilterViolation("NOTIONAL", f"notional {notional} above maximum {self.max_notional}")

    def is_sendable(self, qty: Decimal, price: Decimal | None, *, is_market: bool = False) -> bool:
        try:
            self.check(qty, price, is_market=is_market)
        except FilterViolation:
            return False
        return True


def plain(d: Decimal) -> str:
    """A decimal as venues want it: no exponent, no trailing zeros."""
    s = format(d.normalize(), "f")
    return s


def client_order_id(exec_id: str, seq: int) -> str:
    """The client order id of child `seq` of execution `exec_id`.

    Deterministic, so re-sending an intent after a crash reuses the id and the
    venue refuses the duplicate instead of creating a second order (DESIGN §3).
    Binance allows `^[\\.A-Z\\:/a-z0-9_-]{1,36}$`.
    """
    cid = f"td-{exec_id}-{seq}"
    if len(cid) > 36:
        raise ValueError(f"client order id {cid!r} is longer than 36 characters; use a shorter execution id")
    return cid
