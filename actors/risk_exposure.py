"""What the sentinel knows about exposure: positions, working orders, quotes, submit times.

The sentinel keeps its own book rather than asking the position keeper on
every check, because a check must see orders the instant they are approved:
an approved intent counts as working from approval until the venue reports a
final status, so a burst of intents cannot slip past the position and
open-order limits while the first of them are still in flight.

Positions are signed base quantities built from fills (a fee paid in the base
asset changes the quantity, as it does at the venue). `set_position` overrides
one with the position keeper's figure after replay or reconciliation.

A filled quantity is counted exactly once, in the position or in the order:
- while an order is working, its unfilled part is `quantity - fills seen`;
- once final, only what the venue said was filled but whose fill message has
  not arrived yet still counts, so nothing drops out between the final status
  and a late fill.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from decimal import Decimal

from daemon.messages import Fill, OrderIntent, OrderUpdate, Quote
from daemon.model import ZERO, Instrument, Side

InstrumentKey = tuple[str, str]
"""(venue, symbol)"""

_FILL_MEMORY = 100_000  # fills remembered to ignore a duplicate delivery
_RATE_HORIZON = 60.0  # the longest submit-rate window, seconds


def instrument_name(key: InstrumentKey) -> str:
    return f"{key[0]}:{key[1]}"


class WorkingOrder:
    """One of our orders that is, or may still be, exposure at a venue."""

    __slots__ = ("client_order_id", "venue", "symbol", "side", "quantity", "price", "filled", "reported_filled", "final")

    def __init__(
        self, client_order_id: str, venue: str, symbol: str, side: Side, quantity: Decimal, price: Decimal | None
    ) -> None:
        self.client_order_id = client_order_id
        self.venue = venue
        self.symbol = symbol
        self.side = side
        self.quantity = quantity
        self.price = price
        self.filled = ZERO  # from fills we have applied to the position
        self.reported_filled = ZERO  # from the venue's order updates
        self.final = False

    @property
    def key(self) -> InstrumentKey:
        return (self.venue, self.symbol)

    @property
    def is_open(self) -> bool:
        return not self.final

    @property
    def pending_qty(self) -> Decimal:
        """Quantity that may still change the position and is not in it yet."""
        if self.final:
            return max(self.reported_filled - self.filled, ZERO)
        return max(self.quantity - self.filled, ZERO)

    @property
    def settled(self) -> bool:
        return self.final and self.filled >= self.reported_filled


class ExposureBook:
    def __init__(self) -> None:
        self.instruments: dict[InstrumentKey, Instrument] = {}
        self.positions: dict[InstrumentKey, Decimal] = {}
        self.orders: dict[str, WorkingOrder] = {}
        self._orders_by_key: dict[InstrumentKey, dict[str, WorkingOrder]] = {}
        # Sum of pending_qty per (key, side), kept up to date on every change so a check
        # costs the same with 5 or 500 working orders.
        self._pending: dict[tuple[InstrumentKey, Side], Decimal] = {}
        self._open_count: dict[InstrumentKey, int] = {}
        self.quotes: dict[InstrumentKey, Quote] = {}
        self.last_price: dict[InstrumentKey, Decimal] = {}
        self.venue_last_quote: dict[str, float] = {}
        self.submit_times: deque[float] = deque()
        self._seen_fills: set[tuple[str, str, str, Side]] = set()
        self._seen_order: deque[tuple[str, str, str, Side]] = deque()

    # --- inputs -------------------------------------------------------------------------
    def add_instruments(self, instruments: Iterable[Instrument]) -> None:
        for inst in instruments:
            self.instruments[(inst.venue, inst.symbol)] = inst

    def on_quote(self, quote: Quote) -> None:
        key = (quote.venue, quote.symbol)
        self.quotes[key] = quote
        if quote.bid > 0 and quote.ask >= quote.bid:
            self.last_price[key] = quote.mid
        self.venue_last_quote[quote.venue] = max(quote.ts, self.venue_last_quote.get(quote.venue, quote.ts))

    def add_order(self, intent: OrderIntent, now: float) -> None:
        """An approved intent: working from now until a final status."""
        order = WorkingOrder(
            intent.client_order_id, intent.venue, intent.symbol, intent.side, intent.quantity, intent.price
        )
        self._track(order)
        self.submit_times.append(now)
        self._prune_submits(now)

    def forget_order(self, client_order_id: str) -> bool:
        """Drop an approved order that was never sent (e.g. the journal refused it)."""
        return self._untrack(client_order_id)

    def _track(self, order: WorkingOrder) -> None:
        self.orders[order.client_order_id] = order
        self._orders_by_key.setdefault(order.key, {})[order.client_order_id] = order
        self._pending_changed(order, ZERO)
        self._open_count[order.key] = self._open_count.get(order.key, 0) + 1

    def _pending_changed(self, order: WorkingOrder, before: Decimal) -> None:
        delta = order.pending_qty - before
        if delta:
            slot = (order.key, order.side)
            self._pending[slot] = self._pending.get(slot, ZERO) + delta

    def _untrack(self, client_order_id: str) -> bool:
        order = self.orders.pop(client_order_id, None)
        if order is None:
            return False
        self._pending[(order.key, order.side)] -= order.pending_qty
        if not order.final:
            self._open_count[order.key] -= 1
        same_key = self._orders_by_key[order.key]
        del same_key[client_order_id]
        if not same_key:
            del self._orders_by_key[order.key]
        return True

    def on_order_update(self, update: OrderUpdate) -> None:
        order = self.orders.get(update.client_order_id)
        if order is None:
            if update.status.is_final:
                return
            # An order we did not approve in this run (replayed or reconciled): count it.
            order = WorkingOrder(
                update.client_order_id, update.venue, update.symbol, update.side, update.quantity, update.price
            )
            self._track(order)
        before = order.pending_qty
        order.reported_filled = max(order.reported_filled, update.filled_qty)
        if update.status.is_final and not order.final:
            order.final = True
            self._open_count[order.key] -= 1
        self._pending_changed(order, before)
        if order.settled:
            self._untrack(update.client_order_id)

    def on_fill(self, fill: Fill) -> bool:
        """Apply a fill; False if this (venue, symbol, trade id, side) was applied before."""
        ident = (fill.venue, fill.symbol, fill.trade_id, fill.side)  # per symbol at Binance; a self-trade has two sides
        if ident in self._seen_fills:
            return False
        self._seen_fills.add(ident)
        self._seen_order.append(ident)
        if len(self._seen_order) > _FILL_MEMORY:
            self._seen_fills.discard(self._seen_order.popleft())
        key = (fill.venue, fill.symbol)
        delta = fill.qty * fill.side.sign
        inst = self.instruments.get(key)
        if inst is not None and fill.fee_asset == inst.base:
            delta -= fill.fee
        self.positions[key] = self.positions.get(key, ZERO) + delta
        self.last_price[key] = fill.price
        order = self.orders.get(fill.client_order_id)
        if order is not None:
            before = order.pending_qty
            order.filled += fill.qty
            self._pending_changed(order, before)
            if order.settled:
                self._untrack(fill.client_order_id)
        return True

    def set_position(self, venue: str, symbol: str, qty: Decimal) -> None:
        self.positions[(venue, symbol)] = qty

    # --- reading ------------------------------------------------------------------------
    def position(self, key: InstrumentKey) -> Decimal:
        return self.positions.get(key, ZERO)

    def pending_by_side(self, key: InstrumentKey) -> tuple[Decimal, Decimal]:
        """(buy, sell) quantity that may still reach the position."""
        return self._pending.get((key, Side.BUY), ZERO), self._pending.get((key, Side.SELL), ZERO)

    def pending(self, key: InstrumentKey, side: Side) -> Decimal:
        """Quantity on one side that may still reach the position."""
        buy, sell = self.pending_by_side(key)
        return buy if side is Side.BUY else sell

    def projected(self, key: InstrumentKey, side: Side, qty: Decimal = ZERO) -> Decimal:
        """The position if every working order on `side`, plus `qty` more, filled."""
        return self.position(key) + side.sign * (self.pending(key, side) + qty)

    def worst_case(self, key: InstrumentKey, side: Side | None = None, qty: Decimal = ZERO) -> Decimal:
        """The largest absolute position that working orders (plus `qty` on `side`) could leave."""
        buy, sell = self.pending_by_side(key)
        if side is Side.BUY:
            buy += qty
        elif side is Side.SELL:
            sell += qty
        position = self.position(key)
        return max(abs(position + buy), abs(position - sell))

    def mark(self, key: InstrumentKey) -> Decimal | None:
        """The price exposure is valued at: the latest mid, else the latest fill price."""
        return self.last_price.get(key)

    def exposed_keys(self) -> set[InstrumentKey]:
        keys = {k for k, q in self.positions.items() if q != 0}
        keys.update(self._orders_by_key)
        return keys

    def gross_exposure(self) -> tuple[Decimal, list[InstrumentKey]]:
        """Sum of worst-case absolute exposure valued at the mark, and the keys that have no price."""
        total = ZERO
        unpriced: list[InstrumentKey] = []
        for key in sorted(self.exposed_keys()):
            size = self.worst_case(key)
            if size == 0:
                continue
            mark = self.mark(key)
            if mark is None:
                unpriced.append(key)
                continue
            total += size * mark
        return total, unpriced

    def gross_exposure_with(self, key: InstrumentKey, side: Side, qty: Decimal) -> tuple[Decimal, Decimal]:
        """Gross exposure (before, after) adding `qty` on `side` of `key`, which must have a mark."""
        before, _ = self.gross_exposure()
        mark = self.mark(key)
        if mark is None:
            raise ValueError(f"no price for {instrument_name(key)}")
        after = before - self.worst_case(key) * mark + self.worst_case(key, side, qty) * mark
        return before, after

    def open_orders(self, key: InstrumentKey | None = None) -> Iterator[WorkingOrder]:
        orders = self.orders if key is None else self._orders_by_key.get(key, {})
        return (o for o in orders.values() if o.is_open)

    def open_order_count(self, key: InstrumentKey | None = None) -> int:
        if key is None:
            return sum(self._open_count.values())
        return self._open_count.get(key, 0)

    def submits_within(self, now: float, window: float) -> int:
        """Approvals in the half-open window (now - window, now]."""
        self._prune_submits(now)
        start = now - window
        return sum(1 for t in self.submit_times if start < t <= now)

    def _prune_submits(self, now: float) -> None:
        horizon = now - _RATE_HORIZON
        while self.submit_times and self.submit_times[0] <= horizon:
            self.submit_times.popleft()
