"""The one small interface between the feed/gateway actors and a venue.

A venue adapter is protocol code with no actor logic (DESIGN §8): it turns
venue wire formats into our values and our requests into venue calls. The
feed and gateway actors are written once against this interface, so a new
venue is a new adapter, not new actors — the way httpx sits on swappable
transports.

Market data is exposed at the level the documented book-sync algorithm needs
(snapshot with an id, diffs with first/last ids), so the feed actor runs one
sync algorithm for every venue. An in-process venue that cannot lose messages
simply produces contiguous ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Protocol, runtime_checkable

import msgspec

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce

Level = tuple[Decimal, Decimal]  # (price, quantity); quantity 0 removes the level
TextLevel = tuple[str, str]  # the same as the venue wrote it, e.g. ("60000.01000000", "0.00541000")


# ---------------------------------------------------------------------------------------
# Values an adapter returns
# ---------------------------------------------------------------------------------------


class BookSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    last_update_id: int
    bids: Sequence[Level]
    asks: Sequence[Level]


class BookDiff(msgspec.Struct, frozen=True, kw_only=True):
    """One depth update: applies ids first_id..last_id (Binance `U`..`u`).

    Levels are `Level` (Decimal) pairs, or `TextLevel` pairs when an adapter
    decodes on the fast path; `venues.orderbook` takes either and reads back
    Decimals, so only code that reads a diff's levels itself must handle both.
    """

    symbol: str
    first_id: int
    last_id: int
    bids: Sequence[Level] | Sequence[TextLevel]
    asks: Sequence[Level] | Sequence[TextLevel]
    venue_ms: int = 0


class PublicTrade(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    taker_side: Side
    venue_ms: int = 0


class StreamNotice(msgspec.Struct, frozen=True, kw_only=True):
    """Out-of-band news from a stream: e.g. `serverShutdown` (reconnect now)."""

    kind: str
    detail: str = ""


MarketEvent = BookDiff | PublicTrade | StreamNotice
UserEvent = OrderUpdate | Fill | BalanceUpdate | StreamNotice


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An order as sent to a venue: already rounded and checked against filters."""

    symbol: str
    client_order_id: str
    side: Side
    order_type: OrderType
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    iceberg_qty: Decimal | None = None


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the venue reports it (new-order answer, query, open orders)."""

    symbol: str
    client_order_id: str
    venue_order_id: str
    status: OrderStatus
    side: Side
    order_type: OrderType
    quantity: Decimal
    filled_qty: Decimal
    price: Decimal | None = None
    quote_filled: Decimal = Decimal(0)
    venue_ms: int = 0  # last update
    # What a venue's order query also reports (Binance timeInForce, origQuoteOrderQty, time).
    time_in_force: TimeInForce | None = None
    quote_quantity: Decimal | None = None  # MARKET by quote amount: the amount asked for
    created_ms: int = 0


class AccountTrade(msgspec.Struct, frozen=True, kw_only=True):
    """One of our own trades as the venue lists it (`myTrades`)."""

    symbol: str
    trade_id: str
    venue_order_id: str
    client_order_id: str | None
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_asset: str
    is_maker: bool
    venue_ms: int = 0


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    asset: str
    free: Decimal
    locked: Decimal


# ---------------------------------------------------------------------------------------
# Errors an adapter raises. Each says what the caller may do next.
# ---------------------------------------------------------------------------------------


class VenueError(Exception):
    """The venue answered and refused. Safe to treat as final for that request."""

    def __init__(self, code: int | str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


class OrderRejected(VenueError):
    """The venue refused a new order (filters, balance, post-only would take, duplicate id)."""


class OrderNotFound(VenueError):
    """Query or cancel of an order the venue does not know (or no longer has open)."""


class UnknownOutcome(Exception):
    """The request may or may not have been executed (timeout, 5xx, -1007).

    Never retry an order POST after this: query by client order id instead.
    """


class RateLimited(Exception):
    """Over the venue's limits (HTTP 429): send nothing for `retry_after` seconds."""

    def __init__(self, retry_after: float, detail: str = "") -> None:
        super().__init__(f"rate limited for {retry_after:.1f}s {detail}".strip())
        self.retry_after = retry_after


class VenueBanned(RateLimited):
    """HTTP 418: the venue has banned us; halt that venue and alert the operator."""


class VenueUnavailable(Exception):
    """Could not reach the venue at all (connection refused, DNS, TLS)."""


# ---------------------------------------------------------------------------------------
# The adapter interface
# ---------------------------------------------------------------------------------------


@runtime_checkable
class VenueAdapter(Protocol):
    """What the feed and gateway actors need from a venue."""

    name: str

    async def instruments(self) -> list[Instrument]:
        """Every instrument with its filters (Binance: exchangeInfo)."""
        ...

    async def server_time_ms(self) -> int: ...

    # market data ------------------------------------------------------------------------
    async def book_snapshot(self, symbol: str, depth: int = 100) -> BookSnapshot: ...

    def market_stream(self, symbols: Sequence[str]) -> AbstractAsyncContextManager[AsyncIterator[MarketEvent]]:
        """One connection carrying depth diffs and trades for `symbols`.

        Leaving the context closes the connection. The iterator ends or raises
        when the connection is lost; the feed reconnects.
        """
        ...

    # order entry ------------------------------------------------------------------------
    async def place_order(self, order: OrderRequest) -> OrderState:
        """Raises OrderRejected, UnknownOutcome, RateLimited, VenueUnavailable."""
        ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    async def cancel_all(self, symbol: str) -> list[OrderState]: ...

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState:
        """Raises OrderNotFound when the venue never saw the order."""
        ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]: ...

    async def balances(self) -> list[Balance]: ...

    async def my_trades(self, symbol: str, from_trade_id: str | None = None) -> list[AccountTrade]: ...

    def user_stream(self) -> AbstractAsyncContextManager[AsyncIterator[UserEvent]]:
        """Our order updates, fills and balance changes, as they happen."""
        ...

    async def emergency_cancel_all(self, symbol: str) -> list[OrderState]:
        """Cancel-all over a connection reserved for it, so a busy order path cannot block it."""
        ...

    async def aclose(self) -> None: ...
