"""What an algorithm is told and what it answers.

An algorithm is asked one question, again and again: given the time, the
market and our orders, what should change? The inputs are snapshots the
driving shell builds (`MarketState`, `OrderView`, usually from a
`ChildLedger`); the answer is a `Decision`. Nothing here holds a clock,
a socket or a task.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import msgspec

from daemon.model import OrderStatus, OrderType, TimeInForce
from actors.algos.params import ChildStyle

ZERO = Decimal(0)


class MarketState(msgspec.Struct, frozen=True, kw_only=True):
    """The market as the algorithm needs it.

    `volume` is the base quantity traded publicly in the symbol since the
    execution started. Public trade streams print our own fills too; set
    `volume_includes_own=False` if the source does not, so that POV and the
    participation cap count the others' volume right.
    """

    bid: Decimal | None = None
    ask: Decimal | None = None
    volume: Decimal = ZERO
    volume_includes_own: bool = True

    @property
    def has_quote(self) -> bool:
        return self.bid is not None and self.ask is not None and self.bid > 0 and self.ask > 0

    @property
    def mid(self) -> Decimal | None:
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2

    def others_volume(self, own_filled: Decimal) -> Decimal:
        """Volume traded by others since the start (never negative)."""
        if not self.volume_includes_own:
            return self.volume
        return max(self.volume - own_filled, ZERO)


class LiveChild(msgspec.Struct, frozen=True, kw_only=True):
    """A child order that is not final: it may still trade.

    That covers sent-but-unanswered (PENDING_NEW), working (NEW,
    PARTIALLY_FILLED), being cancelled (PENDING_CANCEL) and UNKNOWN ones. Each
    counts as possibly filling its whole `remaining`.
    """

    client_order_id: str
    quantity: Decimal
    status: OrderStatus
    placed_at: float
    filled: Decimal = ZERO
    price: Decimal | None = None
    order_type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce | None = TimeInForce.GTC
    style: ChildStyle | None = None
    cancel_requested: bool = False

    @property
    def remaining(self) -> Decimal:
        return max(self.quantity - self.filled, ZERO)

    @property
    def acknowledged(self) -> bool:
        """Resting at the venue as far as we know (not in flight, not in doubt)."""
        return self.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)

    @property
    def is_ioc(self) -> bool:
        return self.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)


class OrderView(msgspec.Struct, frozen=True, kw_only=True):
    """Our side of the execution at one instant.

    `filled` and `filled_quote` count every child, final or not; `live` lists
    the children that may still trade. `sent` is how many children were ever
    created (it seeds per-child randomness). `rejects_in_row` counts venue
    rejects and risk denials since the last accepted child.
    """

    filled: Decimal = ZERO
    filled_quote: Decimal = ZERO
    live: tuple[LiveChild, ...] = ()
    sent: int = 0
    last_closed_at: float | None = None
    rejects_in_row: int = 0
    last_reject_at: float | None = None


class PlaceChild(msgspec.Struct, frozen=True, kw_only=True):
    """Send a new child order. Quantity and price are already on the venue grid."""

    quantity: Decimal
    price: Decimal
    order_type: OrderType
    time_in_force: TimeInForce | None
    style: ChildStyle
    reason: str
    iceberg_qty: Decimal | None = None


class CancelChild(msgspec.Struct, frozen=True, kw_only=True):
    """Cancel a live child. Its quantity stays counted until the venue confirms."""

    client_order_id: str
    reason: str


class Finish(enum.StrEnum):
    """Why an execution has nothing more to do.

    FILLED: the parent is done (any residual is dust below the venue minimum).
    ENDED: the horizon is over; the residual stays unfilled.
    FAILED: too many children in a row were rejected or denied.
    """

    FILLED = "FILLED"
    ENDED = "ENDED"
    FAILED = "FAILED"


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What to change now, and when to ask again at the latest.

    `wake_at` is a time on the caller's clock (None: only on new events).
    `finished` is set once nothing is live and nothing more will be sent;
    `residual` is then what stays undone, in the parent's units. `note` says
    in plain words why the algorithm acts or waits. `schedule` is the share of
    the parent the plan expects done by now (None when the algorithm has no
    schedule, as Iceberg).
    """

    place: tuple[PlaceChild, ...] = ()
    cancel: tuple[CancelChild, ...] = ()
    wake_at: float | None = None
    finished: Finish | None = None
    residual: Decimal = ZERO
    note: str = ""
    schedule: float | None = None
