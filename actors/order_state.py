"""The life of an order, as an explicit state machine, and the gateway's table of orders.

An order's state reaches the gateway from several directions that race each
other: our own bookkeeping (PENDING_NEW before the POST, UNKNOWN when its
outcome is lost, PENDING_CANCEL before a DELETE), the venue's answers to REST
calls (which describe the order *now*), and the user stream (which describes
it *as it was* when the event left, and may arrive late, twice, or after a
reconnect replay). `judge` decides, for one incoming state, whether it is news:

- `APPLY`: news; journal it and publish it.
- `DUPLICATE`: the same state again (a REST answer and its stream echo).
- `STALE`: older news than what we hold (filled quantity never shrinks; a
  NEW event arriving after the FILLED answer is history).
- `INVALID`: impossible from the state we hold (a CANCELED order that trades
  on). The gateway logs ``order.transition_invalid`` and asks the venue
  rather than guessing; nothing crashes.

Two refinements keep local guesses from fighting the venue's facts: a venue
answer that describes the order now (`Source.QUERY`) replaces a local state
(PENDING_CANCEL after a refused cancel goes back to NEW), and a final state we
only inferred (REJECTED because the venue never heard of the order) gives way
to anything the venue later says about it.

`OrderTable` holds the orders one gateway tracks, indexed by client order id
and by (symbol, the venue's own id): Binance's trade list names orders only by
that id, and numbers them per symbol.
Everything here is plain code: no I/O, no trio.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from daemon.messages import Fill, OrderIntent, OrderUpdate
from daemon.model import OrderStatus, Side
from venues.base import AccountTrade, OrderState

ZERO = Decimal(0)
S = OrderStatus


class Verdict(enum.Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    STALE = "stale"
    INVALID = "invalid"


class Source(enum.Enum):
    """Where a state comes from, which decides how much it may overrule."""

    LOCAL = "local"  # our bookkeeping: PENDING_NEW, UNKNOWN, PENDING_CANCEL, a local reject
    EVENT = "event"  # a venue event (user stream): may be late, replayed or duplicated
    QUERY = "query"  # a venue answer describing the order now (new-order answer, query, open orders, cancel)


LOCAL_STATES = frozenset({S.PENDING_NEW, S.UNKNOWN, S.PENDING_CANCEL})
_VENUE_ANSWERS = frozenset({S.NEW, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED})

# Which status may follow which. Filled quantity is checked separately: it never shrinks.
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_NEW: frozenset(_VENUE_ANSWERS | {S.UNKNOWN, S.PENDING_CANCEL}),
    S.UNKNOWN: frozenset(_VENUE_ANSWERS | {S.PENDING_CANCEL}),
    S.NEW: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}),
    S.PENDING_CANCEL: frozenset({S.NEW, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}

# How far along its life a status is, for two states with the same filled quantity:
# a lower one arriving after a higher one is older news.
_PROGRESS: Mapping[OrderStatus, int] = {
    S.PENDING_NEW: 0,
    S.UNKNOWN: 1,
    S.NEW: 2,
    S.PARTIALLY_FILLED: 2,
    S.PENDING_CANCEL: 3,
    S.FILLED: 4,
    S.CANCELED: 4,
    S.REJECTED: 4,
    S.EXPIRED: 4,
}


def judge(
    current: OrderStatus | None,
    current_filled: Decimal,
    new: OrderStatus,
    new_filled: Decimal,
    *,
    source: Source = Source.EVENT,
    current_inferred: bool = False,
) -> Verdict:
    """Whether moving from (`current`, `current_filled`) to (`new`, `new_filled`) is news."""
    if current is None:
        return Verdict.APPLY  # first word on this order, from anyone
    if new is current and new_filled == current_filled:
        return Verdict.DUPLICATE
    if new_filled < current_filled:
        return Verdict.STALE
    if current_inferred and current.is_final and source is not Source.LOCAL:
        return Verdict.APPLY  # the venue contradicts what we only inferred: it wins
    if new_filled == current_filled and _PROGRESS[new] < _PROGRESS[current]:
        if source is Source.QUERY and current in LOCAL_STATES and new in TRANSITIONS[current]:
            return Verdict.APPLY  # the venue's word on the order now replaces our local state
        return Verdict.STALE
    if new in TRANSITIONS[current]:
        return Verdict.APPLY
    return Verdict.INVALID


# ---------------------------------------------------------------------------------------
# Conversions from venue answers
# ---------------------------------------------------------------------------------------


def update_from_state(venue: str, state: OrderState, *, ts: float = 0.0, reason: str = "") -> OrderUpdate:
    """An `OrderUpdate` for an order as a venue's REST answer describes it."""
    filled = state.filled_qty
    avg = state.quote_filled / filled if filled and state.quote_filled else None
    return OrderUpdate(
        venue=venue,
        symbol=state.symbol,
        client_order_id=state.client_order_id,
        status=state.status,
        side=state.side,
        quantity=state.quantity,
        filled_qty=filled,
        price=state.price,
        avg_price=avg,
        venue_order_id=state.venue_order_id,
        reason=reason,
        venue_ms=state.venue_ms,
        ts=ts,
        quote_filled=state.quote_filled if filled else None,
    )


def fill_from_trade(venue: str, trade: AccountTrade, client_order_id: str, *, ts: float = 0.0) -> Fill:
    """A `Fill` for one of our trades as the venue's trade list reports it."""
    return Fill(
        venue=venue,
        symbol=trade.symbol,
        client_order_id=client_order_id,
        trade_id=trade.trade_id,
        side=trade.side,
        price=trade.price,
        qty=trade.qty,
        fee=trade.fee,
        fee_asset=trade.fee_asset,
        is_maker=trade.is_maker,
        venue_order_id=trade.venue_order_id,
        venue_ms=trade.venue_ms,
        ts=ts,
    )


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class TrackedOrder:
    """What a gateway knows of one order."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    status: OrderStatus | None = None  # None: known from an intent, nothing recorded yet
    filled_qty: Decimal = ZERO
    price: Decimal | None = None
    venue_order_id: str | None = None
    intent: OrderIntent | None = None
    ours: bool = True  # False: an order placed at the venue by someone else
    inferred: bool = False  # the status is our conclusion, not the venue's word
    cancel_requested: bool = False  # a cancel waits for the POST's answer

    @property
    def is_final(self) -> bool:
        return self.status is not None and self.status.is_final

    @property
    def is_working(self) -> bool:
        return not self.is_final


class OrderTable:
    """The orders one gateway tracks, by client order id and by venue order id.

    Final orders are kept (so late events are recognised as stale) up to
    `keep_final`, oldest forgotten first; working orders are never forgotten.
    """

    def __init__(self, venue: str, *, keep_final: int = 10_000) -> None:
        self.venue = venue
        self.keep_final = keep_final
        self._orders: dict[str, TrackedOrder] = {}
        self._by_venue_id: dict[tuple[str, str], str] = {}
        self._finals: OrderedDict[str, None] = OrderedDict()
        self.invalid = 0

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._orders

    def __iter__(self) -> Iterator[TrackedOrder]:
        return iter(list(self._orders.values()))

    def get(self, client_order_id: str) -> TrackedOrder | None:
        return self._orders.get(client_order_id)

    def by_venue_order_id(self, symbol: str, venue_order_id: str) -> TrackedOrder | None:
        cid = self._by_venue_id.get((symbol, venue_order_id))
        return None if cid is None else self._orders.get(cid)

    def working(self, symbol: str | None = None) -> list[TrackedOrder]:
        return [o for o in self._orders.values() if o.is_working and (symbol is None or o.symbol == symbol)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for order in self._orders.values():
            key = order.status.value if order.status is not None else "INTENT"
            out[key] = out.get(key, 0) + 1
        return out

    # --- adding ---------------------------------------------------------------------------
    def track_intent(self, intent: OrderIntent) -> TrackedOrder:
        """An order about to be sent (or found journaled without any venue answer)."""
        order = self._orders.get(intent.client_order_id)
        if order is None:
            order = TrackedOrder(
                client_order_id=intent.client_order_id,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                price=intent.price,
                intent=intent,
            )
            self._orders[intent.client_order_id] = order
        elif order.intent is None:
            order.intent = intent
        return order

    def load(self, update: OrderUpdate, *, ours: bool = True) -> TrackedOrder:
        """An order's last journaled state, taken as it is (start-up)."""
        order = self._orders.get(update.client_order_id)
        if order is None:
            order = TrackedOrder(
                client_order_id=update.client_order_id,
                symbol=update.symbol,
                side=update.side,
                quantity=update.quantity,
                ours=ours,
            )
            self._orders[update.client_order_id] = order
        self._merge(order, update)
        return order

    # --- judging and applying ---------------------------------------------------------------
    def judge(self, update: OrderUpdate, source: Source) -> Verdict:
        order = self._orders.get(update.client_order_id)
        if order is None:
            return Verdict.APPLY
        return judge(
            order.status,
            order.filled_qty,
            update.status,
            update.filled_qty,
            source=source,
            current_inferred=order.inferred,
        )

    def apply(self, update: OrderUpdate, source: Source, *, inferred: bool = False) -> tuple[Verdict, TrackedOrder]:
        """Judge `update` and, when it is news, make it the order's state.

        An order the table has never seen is adopted (`ours=False` unless it
        comes from our own bookkeeping).
        """
        order = self._orders.get(update.client_order_id)
        verdict = self.judge(update, source)
        if order is None:
            order = TrackedOrder(
                client_order_id=update.client_order_id,
                symbol=update.symbol,
                side=update.side,
                quantity=update.quantity,
                ours=source is Source.LOCAL,
            )
            self._orders[update.client_order_id] = order
        if verdict is Verdict.APPLY:
            self._merge(order, update)
            order.inferred = inferred
        elif verdict is Verdict.INVALID:
            self.invalid += 1
        elif update.venue_order_id and order.venue_order_id is None:
            self._merge_ids(order, update)  # a stale answer may still teach us the venue's id
        return verdict, order

    def _merge(self, order: TrackedOrder, update: OrderUpdate) -> None:
        order.status = update.status
        order.filled_qty = update.filled_qty
        order.quantity = update.quantity
        if update.price is not None:
            order.price = update.price
        self._merge_ids(order, update)
        if order.is_final:
            order.cancel_requested = False
            self._finals[order.client_order_id] = None
            self._finals.move_to_end(order.client_order_id)
            self._forget_old_finals()
        else:
            self._finals.pop(order.client_order_id, None)

    def _merge_ids(self, order: TrackedOrder, update: OrderUpdate) -> None:
        if update.venue_order_id:
            order.venue_order_id = update.venue_order_id
            self._by_venue_id[(order.symbol, update.venue_order_id)] = order.client_order_id

    def _forget_old_finals(self) -> None:
        while len(self._finals) > self.keep_final:
            cid, _ = self._finals.popitem(last=False)
            order = self._orders.pop(cid, None)
            if order is not None and order.venue_order_id is not None:
                self._by_venue_id.pop((order.symbol, order.venue_order_id), None)

    def snapshot(self, order: TrackedOrder, venue: str, **changes: object) -> OrderUpdate:
        """An `OrderUpdate` describing `order` as held, with `changes` (e.g. a new local status)."""
        base = OrderUpdate(
            venue=venue,
            symbol=order.symbol,
            client_order_id=order.client_order_id,
            status=order.status or S.PENDING_NEW,
            side=order.side,
            quantity=order.quantity,
            filled_qty=order.filled_qty,
            price=order.price,
            venue_order_id=order.venue_order_id,
        )
        return msgspec.structs.replace(base, **changes) if changes else base
