"""The book of one execution's child orders: what was sent and what came back.

A scheduler records here every child it sends and every cancel it asks for,
and feeds in what the risk sentinel and the venue answer; `view()` then gives
the algorithm the `OrderView` it decides on. Keeping this in one pure class
means the counting that prevents overfills (a child counts in full until the
venue says it is final; a fill counts once) is written and tested once.

Two sources report how much a child filled: `Fill` messages and the
`filled_qty` of `OrderUpdate`. Either may arrive first, so a child's filled
quantity is the larger of the two, never their sum. Final statuses are
sticky: a late NEW after FILLED changes nothing. Fills are unique by trade
id; a repeated one is ignored.

After a restart, `adopt` re-registers each journaled intent before updates
and fills are replayed, so the rebuilt view equals the one before the crash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from decimal import Decimal

import msgspec

from daemon.messages import Fill, OrderIntent, OrderUpdate
from daemon.model import OrderStatus, OrderType, TimeInForce, client_order_id
from actors.algos.params import ChildStyle, ExecutionParams
from actors.algos.state import LiveChild, OrderView, PlaceChild

ZERO = Decimal(0)


class UnknownChild(KeyError):
    """An update or fill for a client order id this execution never sent."""


@dataclasses.dataclass
class ChildRecord:
    """Everything known about one child order."""

    client_order_id: str
    seq: int
    quantity: Decimal
    price: Decimal | None
    order_type: OrderType
    time_in_force: TimeInForce | None
    style: ChildStyle | None
    placed_at: float
    reason: str = ""
    iceberg_qty: Decimal | None = None
    status: OrderStatus = OrderStatus.PENDING_NEW
    reported_filled: Decimal = ZERO
    reported_avg_price: Decimal | None = None
    reported_quote: Decimal | None = None
    fill_qty: Decimal = ZERO
    fill_notional: Decimal = ZERO
    maker_qty: Decimal = ZERO
    closed_at: float | None = None
    denied: bool = False
    cancel_requested: bool = False
    detail: str = ""

    @property
    def filled(self) -> Decimal:
        return max(self.fill_qty, self.reported_filled)

    @property
    def filled_notional(self) -> Decimal:
        """Notional of the fills, topped up for fills reported but not yet received."""
        missing = self.reported_filled - self.fill_qty
        if missing <= 0:
            return self.fill_notional
        if self.reported_quote is not None:
            return max(self.reported_quote, self.fill_notional)
        price = self.reported_avg_price or self.price or ZERO
        return self.fill_notional + missing * price

    @property
    def is_final(self) -> bool:
        return self.status.is_final


class ChildStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts and sizes of an execution's children (for progress and reports)."""

    sent: int = 0
    live: int = 0
    unknown: int = 0
    filled: int = 0
    partially_filled: int = 0
    cancelled: int = 0
    rejected: int = 0
    denied: int = 0
    expired: int = 0
    avg_size: float = 0.0
    min_size: float = 0.0
    max_size: float = 0.0
    maker_share: float | None = None


class ChildLedger:
    """Children of one execution, keyed by client order id."""

    def __init__(self, exec_id: str, params: ExecutionParams, *, next_seq: int = 1) -> None:
        self.exec_id = exec_id
        self.params = params
        self.next_seq = next_seq
        self.children: dict[str, ChildRecord] = {}
        self._live: dict[str, ChildRecord] = {}
        self._filled = ZERO
        self._filled_quote = ZERO
        self.fills: list[Fill] = []
        self._trade_ids: set[str] = set()
        self._rejects_in_row = 0
        self._last_reject_at: float | None = None
        self._last_closed_at: float | None = None

    # --- what we send -------------------------------------------------------------------
    def open(self, place: PlaceChild, now: float) -> OrderIntent:
        """Register a new child (in flight from now on) and return its intent."""
        seq = self.next_seq
        cid = client_order_id(self.exec_id, seq)
        intent = OrderIntent(
            client_order_id=cid,
            exec_id=self.exec_id,
            seq=seq,
            venue=self.params.venue,
            symbol=self.params.symbol,
            side=self.params.side,
            order_type=place.order_type,
            quantity=place.quantity,
            price=place.price,
            time_in_force=place.time_in_force,
            iceberg_qty=place.iceberg_qty,
            ts=now,
        )
        self._register(intent, place.style, place.reason, now)
        return intent

    def adopt(self, intent: OrderIntent, now: float, *, style: ChildStyle | None = None) -> None:
        """Re-register a journaled intent (recovery); it counts as in flight until updated."""
        if intent.client_order_id in self.children:
            return
        self._register(intent, style, "recovered", now)

    def _register(self, intent: OrderIntent, style: ChildStyle | None, reason: str, now: float) -> None:
        self.children[intent.client_order_id] = self._live[intent.client_order_id] = ChildRecord(
            client_order_id=intent.client_order_id,
            seq=intent.seq,
            quantity=intent.quantity,
            price=intent.price,
            order_type=intent.order_type,
            time_in_force=intent.time_in_force,
            style=style,
            placed_at=now if intent.ts == 0.0 else intent.ts,
            reason=reason,
            iceberg_qty=intent.iceberg_qty,
        )
        self.next_seq = max(self.next_seq, intent.seq + 1)

    def cancel_sent(self, client_order_id: str, now: float) -> None:
        """A cancel was sent: the child still counts in full until the venue confirms."""
        child = self._child(client_order_id)
        if child.is_final:
            return
        child.cancel_requested = True
        if child.status is not OrderStatus.UNKNOWN:
            child.status = OrderStatus.PENDING_CANCEL

    # --- what comes back ----------------------------------------------------------------
    def denied(self, client_order_id: str, reason: str, now: float) -> None:
        """The risk sentinel refused the child: it never reached the venue."""
        child = self._child(client_order_id)
        if child.is_final:
            return
        child.denied = True
        child.detail = reason
        self._close(child, OrderStatus.REJECTED, now)

    def outcome_unknown(self, client_order_id: str, now: float) -> None:
        """The send may or may not have reached the venue; it counts in full until settled."""
        child = self._child(client_order_id)
        if not child.is_final:
            child.status = OrderStatus.UNKNOWN

    def apply_update(self, update: OrderUpdate, now: float) -> None:
        child = self._child(update.client_order_id)
        if update.filled_qty > child.reported_filled:
            before = self._contribution(child)
            child.reported_filled = min(update.filled_qty, child.quantity)
            if update.avg_price is not None:
                child.reported_avg_price = update.avg_price
            if update.quote_filled is not None:
                child.reported_quote = update.quote_filled
            self._recount(child, before)
        if child.is_final:
            return
        status = update.status
        if status.is_final:
            if status is OrderStatus.REJECTED:
                child.detail = update.reason
            self._close(child, status, now)
            return
        if status is OrderStatus.PENDING_NEW and child.status is not OrderStatus.PENDING_NEW:
            return  # a late echo of the send; the order is known to be further along
        if status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
            self._rejects_in_row = 0
            if child.status is OrderStatus.PENDING_CANCEL:
                return  # our cancel is still on its way; stay counted as cancelling
        child.status = status

    def apply_fill(self, fill: Fill, now: float) -> bool:
        """Count a fill once; False if it was already counted."""
        if fill.trade_id in self._trade_ids:
            return False
        child = self._child(fill.client_order_id)
        self._trade_ids.add(fill.trade_id)
        self.fills.append(fill)
        before = self._contribution(child)
        child.fill_qty += fill.qty
        child.fill_notional += fill.qty * fill.price
        self._recount(child, before)
        if fill.is_maker:
            child.maker_qty += fill.qty
        if not child.is_final and child.status in (OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN):
            # a fill proves the order reached the venue
            child.status = OrderStatus.PARTIALLY_FILLED
            self._rejects_in_row = 0
        if not child.is_final and child.filled >= child.quantity:
            self._close(child, OrderStatus.FILLED, now)
        return True

    @staticmethod
    def _contribution(child: ChildRecord) -> tuple[Decimal, Decimal]:
        return child.filled, child.filled_notional

    def _recount(self, child: ChildRecord, before: tuple[Decimal, Decimal]) -> None:
        """Keep the running totals in step with one child's change (O(1) views)."""
        self._filled += child.filled - before[0]
        self._filled_quote += child.filled_notional - before[1]

    def _close(self, child: ChildRecord, status: OrderStatus, now: float) -> None:
        self._live.pop(child.client_order_id, None)
        child.status = status
        child.closed_at = now
        self._last_closed_at = now
        if status is OrderStatus.REJECTED:
            self._rejects_in_row += 1
            self._last_reject_at = now
        elif status is OrderStatus.FILLED:
            self._rejects_in_row = 0

    def _child(self, cid: str) -> ChildRecord:
        try:
            return self.children[cid]
        except KeyError:
            raise UnknownChild(f"{cid} is not a child of execution {self.exec_id}") from None

    # --- what the algorithm sees --------------------------------------------------------
    @property
    def filled(self) -> Decimal:
        return self._filled

    @property
    def filled_quote(self) -> Decimal:
        return self._filled_quote

    def live(self) -> list[ChildRecord]:
        return list(self._live.values())

    def view(self) -> OrderView:
        live = tuple(
            LiveChild(
                client_order_id=c.client_order_id,
                quantity=c.quantity,
                status=c.status,
                placed_at=c.placed_at,
                filled=c.filled,
                price=c.price,
                order_type=c.order_type,
                time_in_force=c.time_in_force,
                style=c.style,
                cancel_requested=c.cancel_requested,
            )
            for c in self.live()
        )
        return OrderView(
            filled=self.filled,
            filled_quote=self.filled_quote,
            live=live,
            sent=len(self.children),
            last_closed_at=self._last_closed_at,
            rejects_in_row=self._rejects_in_row,
            last_reject_at=self._last_reject_at,
        )

    def stats(self) -> ChildStats:
        children = list(self.children.values())
        sizes = [float(c.quantity) for c in children if not c.denied]
        counts = {status: 0 for status in OrderStatus}
        for c in children:
            counts[c.status] += 1
        fully = sum(1 for c in children if c.status is OrderStatus.FILLED)
        partial = sum(1 for c in children if c.is_final and c.status is not OrderStatus.FILLED and c.filled > 0)
        filled_qty = sum((c.fill_qty for c in children), ZERO)
        maker_qty = sum((c.maker_qty for c in children), ZERO)
        return ChildStats(
            sent=sum(1 for c in children if not c.denied),
            live=sum(1 for c in children if not c.is_final),
            unknown=counts[OrderStatus.UNKNOWN],
            filled=fully,
            partially_filled=partial,
            cancelled=counts[OrderStatus.CANCELED],
            rejected=sum(1 for c in children if c.status is OrderStatus.REJECTED and not c.denied),
            denied=sum(1 for c in children if c.denied),
            expired=counts[OrderStatus.EXPIRED],
            avg_size=sum(sizes) / len(sizes) if sizes else 0.0,
            min_size=min(sizes) if sizes else 0.0,
            max_size=max(sizes) if sizes else 0.0,
            maker_share=float(maker_qty / filled_qty) if filled_qty > 0 else None,
        )

    def restore_fills(self, fills: Iterable[Fill], now: float) -> None:
        """Replay journaled fills (duplicates are ignored as always)."""
        for fill in fills:
            self.apply_fill(fill, now)
