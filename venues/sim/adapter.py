"""`SimVenue`: one account of an in-process `SimEngine` behind the venue adapter interface.

The feed and gateway actors cannot tell it from a network venue except that
it is fast and never loses a message silently:

- Every call takes the configured `latency` (half on the way in, half on the
  way back, in trio time) and checkpoints even when the latency is zero, so
  callers get the cancellation behaviour of real I/O.
- Streams are fed by engine observers through bounded trio memory channels.
  The engine never waits for a consumer: if one falls `stream_buffer` events
  behind, its connection is dropped, like a venue drops a slow WebSocket
  client. The consumer first receives everything that was buffered, then
  `VenueUnavailable`; the feed resyncs the book, the gateway reconciles.
- Orders are normalised the way the Binance adapter sends them: a LIMIT
  without time in force is GTC, and GTC on MARKET or LIMIT_MAKER is dropped.
  Everything else is judged by the engine, with Binance's codes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import msgspec
import trio

from daemon.logs import get_logger
from daemon.messages import Fill, OrderUpdate
from daemon.model import Instrument, OrderType, TimeInForce
from venues.base import (
    AccountTrade,
    Balance,
    BookSnapshot,
    MarketEvent,
    OrderRequest,
    OrderState,
    UserEvent,
    VenueError,
    VenueUnavailable,
)
from venues.sim.engine import SimEngine

log = get_logger("venue.sim")

MY_TRADES_LIMIT = 1000  # as Binance's myTrades


class _EngineStream:
    """One "connection": engine events in, an async iterator out."""

    def __init__(self, venue: str, kind: str, buffer: int, stamp: bool) -> None:
        self.venue = venue
        self.kind = kind
        self.buffer = buffer
        self._stamp = stamp
        self._send, self._receive = trio.open_memory_channel[Any](buffer)
        self._unsubscribe: Callable[[], None] | None = None
        self.dropped = False
        self.delivered = 0

    def attach(self, unsubscribe: Callable[[], None]) -> None:
        self._unsubscribe = unsubscribe

    def push(self, event: Any) -> None:
        """Engine observer: must never block or raise."""
        if self._stamp and type(event) in (OrderUpdate, Fill):
            event = msgspec.structs.replace(event, ts=trio.current_time())
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped = True
            log.warning("sim.stream_dropped", venue=self.venue, stream=self.kind, buffer=self.buffer)
            self.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.close()

    def close(self) -> None:
        """Hang up: no more events; a reader gets what is buffered, then the end."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._send.close()

    def discard(self) -> None:
        """The consumer left: close both ends."""
        self.close()
        self._receive.close()

    def __aiter__(self) -> _EngineStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.dropped:
                raise VenueUnavailable(
                    f"sim venue {self.venue} dropped the {self.kind} stream: the consumer fell "
                    f"{self.buffer} events behind; reconnect and resync"
                ) from None
            raise StopAsyncIteration from None
        self.delivered += 1
        return event


class SimVenue:
    """The `VenueAdapter` of one account at an in-process sim venue."""

    def __init__(
        self,
        engine: SimEngine,
        account: str,
        *,
        name: str | None = None,
        latency: float = 0.0,
        stream_buffer: int = 10_000,
    ) -> None:
        if not engine.has_account(account):
            raise ValueError(f"sim venue {engine.venue!r} has no account {account!r}")
        if latency < 0:
            raise ValueError(f"latency must not be negative, got {latency}")
        if stream_buffer < 1:
            raise ValueError(f"stream_buffer must be at least 1, got {stream_buffer}")
        self.engine = engine
        self.account = account
        self.name = name or engine.venue
        self.latency = latency
        self.stream_buffer = stream_buffer
        self._streams: set[_EngineStream] = set()
        self._closed = False

    # --- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an engine call as if it went over the wire."""
        if self._closed:
            raise VenueUnavailable(f"the sim venue adapter {self.name} is closed")
        half = self.latency / 2
        if half:
            await trio.sleep(half)
        else:
            await trio.lowlevel.checkpoint()
        try:
            result = fn(*args, **kwargs)
        except VenueError:
            if half:
                await trio.sleep(half)
            raise
        if half:
            await trio.sleep(half)
        return result

    @asynccontextmanager
    async def _stream(
        self, kind: str, subscribe: Callable[[Callable[[Any], None]], Callable[[], None]], stamp: bool
    ) -> AsyncIterator[_EngineStream]:
        if self._closed:
            raise VenueUnavailable(f"the sim venue adapter {self.name} is closed")
        stream = _EngineStream(self.name, kind, self.stream_buffer, stamp)
        stream.attach(subscribe(stream.push))
        self._streams.add(stream)
        try:
            yield stream
        finally:
            stream.discard()
            self._streams.discard(stream)

    # --- reference data -----------------------------------------------------------------

    async def instruments(self) -> list[Instrument]:
        return await self._call(self.engine.instruments)

    async def server_time_ms(self) -> int:
        return await self._call(self.engine.now_ms)

    # --- market data --------------------------------------------------------------------

    async def book_snapshot(self, symbol: str, depth: int = 100) -> BookSnapshot:
        return await self._call(self.engine.snapshot, symbol, depth)

    def market_stream(self, symbols: Sequence[str]) -> AbstractAsyncContextManager[AsyncIterator[MarketEvent]]:
        """Depth diffs and trades of `symbols`; see the module docstring for slow consumers."""
        symbols = list(symbols)
        if not symbols:
            raise ValueError("market_stream needs at least one symbol")
        for symbol in symbols:
            self.engine.instrument(symbol)  # VenueError -1121 for an unknown symbol, now
        return self._stream("market", lambda push: self.engine.subscribe_market(push, symbols), stamp=False)

    # --- order entry --------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Raises OrderRejected (Binance codes) or VenueUnavailable once closed."""
        return await self._call(self.engine.place_order, self.account, _normalised(order))

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        return await self._call(self.engine.cancel_order, self.account, symbol, client_order_id=client_order_id)

    async def cancel_all(self, symbol: str) -> list[OrderState]:
        return await self._call(self.engine.cancel_all, self.account, symbol)

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState:
        return await self._call(self.engine.query_order, self.account, symbol, client_order_id=client_order_id)

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        return await self._call(self.engine.open_orders, self.account, symbol)

    async def balances(self) -> list[Balance]:
        """Every asset the account holds or has held (zeros included, like Binance's /account)."""
        return await self._call(self.engine.balances, self.account, include_zero=True)

    async def my_trades(self, symbol: str, from_trade_id: str | None = None) -> list[AccountTrade]:
        """Our trades in `symbol`, from `from_trade_id` inclusive, oldest first, at most 1000."""
        return await self._call(
            self.engine.my_trades, self.account, symbol, from_trade_id=from_trade_id, limit=MY_TRADES_LIMIT
        )

    def user_stream(self) -> AbstractAsyncContextManager[AsyncIterator[UserEvent]]:
        """Our OrderUpdate, Fill and BalanceUpdate events, stamped with trio time on arrival."""
        return self._stream("user", lambda push: self.engine.subscribe_account(self.account, push), stamp=True)

    async def emergency_cancel_all(self, symbol: str) -> list[OrderState]:
        """Cancel-all; in process there is no busy connection to avoid, so same path as cancel_all."""
        return await self._call(self.engine.cancel_all, self.account, symbol)

    async def emergency_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Open orders for the kill's verification step (mirrors the Binance adapter)."""
        return await self._call(self.engine.open_orders, self.account, symbol)

    async def aclose(self) -> None:
        """Close the adapter: open streams end, later calls raise VenueUnavailable."""
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()
        await trio.lowlevel.checkpoint()


def _normalised(order: OrderRequest) -> OrderRequest:
    tif = order.time_in_force
    if order.order_type is OrderType.LIMIT and tif is None:
        return msgspec.structs.replace(order, time_in_force=TimeInForce.GTC)
    if order.order_type is not OrderType.LIMIT and tif is TimeInForce.GTC:
        return msgspec.structs.replace(order, time_in_force=None)
    return order

