"""Pricing and sizing child orders on the venue's grid.

Algorithms think in exact or fractional amounts; venues accept multiples of
the step and tick, above a minimum size and notional. This module is where
one becomes the other, after the algorithm has decided, and where the two
rules about small amounts live:

- a child below the venue minimum ("dust") is never sent: the amount stays
  in the parent and goes out with a later child;
- a child never leaves behind a remainder that could not be sent on its own:
  that remainder is folded into the child when the size limits allow, and
  otherwise the child shrinks so what is left stays sendable.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import msgspec

from daemon.model import FilterViolation, OrderType, Side, TimeInForce
from actors.algos.params import ChildStyle, ExecutionParams
from actors.algos.state import MarketState

ZERO = Decimal(0)
BPS = Decimal(10_000)


class Priced(msgspec.Struct, frozen=True):
    """A child's price and order type for one style, on the tick grid."""

    price: Decimal
    order_type: OrderType
    time_in_force: TimeInForce | None
    style: ChildStyle


def price_child(params: ExecutionParams, style: ChildStyle, market: MarketState) -> Priced | None:
    """The price a new child of `style` gets now, or None without a usable quote.

    Rounding is always away from crossing (a buy rounds down) and the limit
    price always wins. A CROSS child that the limit keeps from reaching the
    far touch would not trade as an IOC, so it rests at the limit instead.
    """
    if not market.has_quote:
        return None
    assert market.bid is not None and market.ask is not None
    inst, side, limit = params.instrument, params.side, params.limit_price
    buy = side is Side.BUY
    resting = _resting_type(params)
    if style is ChildStyle.CROSS:
        far = market.ask if buy else market.bid
        collar = Decimal(repr(params.collar_bps)) / BPS
        reach = inst.round_price(far * (1 + collar) if buy else far * (1 - collar), side)
        price = max(reach, far) if buy else min(reach, far)
        price = _within_limit(price, limit, buy)
        if (price < far) if buy else (price > far):
            assert limit is not None
            return Priced(inst.round_price(limit, side), *resting, ChildStyle.PASSIVE)
        return Priced(price, OrderType.LIMIT, TimeInForce.IOC, ChildStyle.CROSS)
    if style is ChildStyle.MID:
        mid = market.mid
        assert mid is not None
        price = inst.round_price(mid, side)
    else:
        price = market.bid if buy else market.ask
    price = _within_limit(price, limit, buy)
    return Priced(price, *resting, style)


def limit_priced(params: ExecutionParams) -> Priced:
    """A resting child at the operator's limit price (Iceberg tips)."""
    assert params.limit_price is not None
    return Priced(params.limit_price, *_resting_type(params), ChildStyle.PASSIVE)


def _resting_type(params: ExecutionParams) -> tuple[OrderType, TimeInForce | None]:
    if params.posts_only:
        return OrderType.LIMIT_MAKER, None
    return OrderType.LIMIT, TimeInForce.GTC


def _within_limit(price: Decimal, limit: Decimal | None, buy: bool) -> Decimal:
    if limit is None:
        return price
    return min(price, limit) if buy else max(price, limit)


def beyond_limit(params: ExecutionParams, price: Decimal | None) -> bool:
    """True when a child at `price` would trade worse than the limit allows."""
    limit = params.limit_price
    if limit is None or price is None:
        return False
    return price > limit if params.side is Side.BUY else price < limit


class ChildSizer:
    """Turns "this much more is wanted" into child quantities the venue accepts."""

    def __init__(self, params: ExecutionParams) -> None:
        self.params = params
        self.instrument = params.instrument

    def round_up(self, qty: Decimal) -> Decimal:
        step = self.instrument.step_size
        return (qty / step).to_integral_value(ROUND_CEILING) * step

    def venue_min(self, price: Decimal) -> Decimal:
        """The smallest quantity the venue accepts at `price`."""
        inst = self.instrument
        floor = max(inst.step_size, inst.min_qty)
        if inst.min_notional and price > 0:
            floor = max(floor, self.round_up(inst.min_notional / price))
        return floor

    def preferred_min(self, price: Decimal) -> Decimal:
        """The smallest child the operator wants, never below the venue minimum."""
        floor = self.venue_min(price)
        if self.params.min_child is not None:
            floor = max(floor, self.params.min_child)
        return floor

    def max_size(self, price: Decimal, cap: Decimal | None = None) -> Decimal | None:
        """The largest child allowed at `price` (None: unbounded)."""
        inst = self.instrument
        bounds = [b for b in (self.params.max_child, inst.max_qty or None, cap) if b is not None]
        if inst.max_notional and price > 0:
            bounds.append(inst.round_qty(inst.max_notional / price))
        return min(bounds) if bounds else None

    def split(
        self,
        *,
        want: Decimal,
        left: Decimal,
        allow: Decimal,
        price: Decimal,
        slots: int,
        cap: Decimal | None = None,
        prefer: Decimal | None = None,
    ) -> tuple[list[Decimal], str]:
        """Child quantities for one decision, and why it stopped short if it did.

        want: how much more the plan wants working now (base units).
        left: how much may ever still be sent without overfilling the parent.
        allow: how much may be sent now without running ahead of the plan
            beyond its tolerance (allow >= want normally).
        slots: how many more children may be live at once.
        cap: the algorithm's own per-child limit (e.g. an iceberg's display).
        prefer: the algorithm's preferred smallest child, on top of the
            operator's `min_child`.

        The quantities never add up to more than `left`; they exceed `want`
        only to reach the preferred minimum within `allow`, or by folding in
        a remainder smaller than the venue minimum.
        """
        inst = self.instrument
        hard = self.venue_min(price)
        soft = self.preferred_min(price)
        hi = self.max_size(price, cap)
        if prefer is not None:
            soft = max(soft, min(prefer, hi) if hi is not None else prefer)
        if hi is not None and hi < hard:
            return [], f"the largest child allowed ({hi}) is below the venue minimum ({hard})"
        sizes: list[Decimal] = []
        sent = ZERO
        note = ""
        for _ in range(max(slots, 0)):
            left_now = inst.round_qty(left - sent)
            want_now = inst.round_qty(want) - sent
            allow_now = allow - sent
            if left_now < hard:
                if left_now > 0 and not sizes:
                    note = f"{left_now} left is below the venue minimum {hard}"
                break
            if want_now <= 0 or (sizes and want_now < soft):
                break  # a fragment after a full child waits for the next decision
            qty = min(want_now, left_now) if hi is None else min(want_now, left_now, hi)
            if qty < soft:
                top = min(soft, left_now)
                if top > allow_now:
                    note = f"waiting until at least {top} is due (minimum child)"
                    break
                qty = top
            qty = self._without_dust_behind(qty, left_now - qty, hard, hi)
            try:
                inst.check(qty, price)
            except FilterViolation as exc:
                note = f"child of {qty} at {price} refused by the {exc.filter} filter: {exc}"
                break
            sizes.append(qty)
            sent += qty
        return sizes, note

    def _without_dust_behind(self, qty: Decimal, rest: Decimal, hard: Decimal, hi: Decimal | None) -> Decimal:
        if not ZERO < rest < hard:
            return qty
        if hi is None or qty + rest <= hi:
            return qty + rest
        shrunk = qty - self.round_up(hard - rest)
        return shrunk if shrunk >= hard else qty
