"""Test doubles for the feed and gateway actors, for tests under trio's MockClock.

- `InlineJournal`: the real `JournalStore` (SQLite in memory) behind the
  `Journal` methods the gateway calls, without the worker thread, so the
  autojump clock never jumps while a write is in flight.
- `FaultyVenue`: a simulated venue's adapter with faults switched on by the
  test: order POSTs whose outcome is lost (after or before the engine saw
  them), 429 / 418, unreachable venue, duplicated and reordered user events,
  dropped streams, trade lists without client order ids (as Binance's),
  failing emergency cancels, and gaps in the depth stream. It counts every
  POST per client order id, which is how the tests prove none was repeated.
- `ScriptedMarket`: a market-data adapter whose connections the test opens,
  feeds and breaks by hand, to check reconnect timing exactly.
"""

from __future__ import annotations

import collections
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal as D
from typing import Any

import msgspec
import pytest
import trio

from daemon.bus import Bus
from daemon.journal import JournalBatchError
from daemon.journal_store import BalanceSnapshot, JournalStore
from daemon.logs import sink
from daemon.messages import BalanceUpdate, Fill, OrderIntent, OrderUpdate
from daemon.model import Instrument, OrderType, Side, TimeInForce, client_order_id
from venues.base import (
    AccountTrade,
    BookDiff,
    BookSnapshot,
    OrderRequest,
    OrderState,
    RateLimited,
    StreamNotice,
    UnknownOutcome,
    VenueBanned,
    VenueUnavailable,
)
from venues.sim.adapter import SimVenue
from venues.sim.engine import SimEngine

BTC = Instrument(
    venue="sim",
    symbol="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick_size=D("0.01"),
    step_size=D("0.00001"),
    min_qty=D("0.00001"),
    max_qty=D("9000"),
    min_notional=D("5"),
)
ETH = Instrument(
    venue="sim",
    symbol="ETHUSDT",
    base="ETH",
    quote="USDT",
    tick_size=D("0.01"),
    step_size=D("0.0001"),
    min_qty=D("0.0001"),
    max_qty=D("9000"),
    min_notional=D("5"),
)
START_MS = 1_700_000_000_000


# ---------------------------------------------------------------------------------------
# Journal
# ---------------------------------------------------------------------------------------


class InlineJournal:
    """`daemon.journal.Journal`'s interface over an in-memory store, without threads."""

    def __init__(self) -> None:
        self.store = JournalStore.open(":memory:")
        self.batches = 0

    async def _write(self, records: Sequence[Any]) -> list[Any]:
        await trio.lowlevel.checkpoint()
        self.batches += 1
        return self.store.apply(list(records))

    async def record_batch(self, records: Sequence[Any]) -> list[Any]:
        if not records:
            return []
        results = await self._write(records)
        if any(isinstance(r, Exception) for r in results):
            raise JournalBatchError(results)
        return results

    async def _one(self, record: Any) -> Any:
        (result,) = await self._write([record])
        if isinstance(result, Exception):
            raise result
        return result

    async def record_intent(self, intent: OrderIntent) -> bool:
        return await self._one(intent)

    async def record_update(self, update: OrderUpdate) -> bool:
        return await self._one(update)

    async def record_fill(self, fill: Fill) -> bool:
        return await self._one(fill)

    async def record_fills(self, fills: Sequence[Fill]) -> list[bool]:
        return await self.record_batch(fills)

    async def record_balances(self, venue: str, balances: Sequence[BalanceUpdate], *, source: str = "reconcile") -> int:
        return await self._one(BalanceSnapshot(venue=venue, balances=tuple(balances), source=source))

    async def _read(self, name: str, *args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return getattr(self.store, name)(*args, **kwargs)

    async def open_orders(self, venue: str | None = None, symbol: str | None = None) -> list[OrderUpdate]:
        return await self._read("open_orders", venue, symbol)

    async def intents_without_ack(self, venue: str | None = None) -> list[OrderIntent]:
        return await self._read("intents_without_ack", venue)

    async def intent(self, cid: str) -> OrderIntent | None:
        return await self._read("intent", cid)

    async def order(self, cid: str) -> OrderUpdate | None:
        return await self._read("order", cid)

    async def last_trade_ids(self) -> dict[tuple[str, str], str]:
        return await self._read("last_trade_ids")

    async def orders_by_venue_order_id(self, venue: str, symbol: str, ids: Sequence[str]) -> dict[str, OrderUpdate]:
        return await self._read("orders_by_venue_order_id", venue, symbol, ids)

    def fills(self, **kwargs: Any) -> list[Fill]:
        return [jf.fill for jf in self.store.fills(**kwargs)]


# ---------------------------------------------------------------------------------------
# A simulated venue with faults
# ---------------------------------------------------------------------------------------


def make_engine(*, clock_ms=None, usdt: str = "1000000", btc: str = "10", eth: str = "100") -> SimEngine:
    engine = SimEngine([BTC, ETH], venue="sim", clock_ms=clock_ms or (lambda: START_MS), maker_fee=D("0.001"), taker_fee=D("0.001"))
    engine.open_account("demo")
    engine.open_account("maker", unlimited=True, maker_fee=D(0), taker_fee=D(0))
    for asset, amount in (("USDT", usdt), ("BTC", btc), ("ETH", eth)):
        engine.deposit("demo", asset, D(amount))
    return engine


def rest(engine: SimEngine, side: Side, price: str, qty: str, symbol: str = "BTCUSDT", cid: str | None = None) -> OrderState:
    """A resting order of the other participants, for ours to trade against."""
    cid = cid or f"mk{rest.counter}"
    rest.counter += 1
    return engine.place_order(
        "maker",
        OrderRequest(
            symbol=symbol,
            client_order_id=cid,
            side=side,
            order_type=OrderType.LIMIT,
            quantity=D(qty),
            price=D(price),
            time_in_force=TimeInForce.GTC,
        ),
    )


rest.counter = 0  # type: ignore[attr-defined]


class FaultyVenue:
    """A `SimVenue` with faults the test switches on; see the module docstring."""

    def __init__(self, engine: SimEngine, account: str = "demo", *, seed: int = 7, latency: float = 0.0) -> None:
        self.inner = SimVenue(engine, account, name="sim", latency=latency)
        self.engine = engine
        self.account = account
        self.name = "sim"
        self.rng = random.Random(seed)
        self.posts: collections.Counter[str] = collections.Counter()
        self.post_faults: collections.deque[str] = collections.deque()
        self.cancel_all_faults: collections.deque[str] = collections.deque()
        self.query_faults: collections.deque[str] = collections.deque()
        self.duplicate_events = False
        self.reorder_window = 0  # shuffle user events within windows of this many
        self.strip_trade_cids = False  # like Binance's myTrades
        self.user_stream_down = False  # refuse to (re)connect the user stream
        self.mute_user_events = False  # the user stream stays up but delivers nothing
        self.post_times: list[float] = []
        self.drop_diffs: set[int] = set()  # depth update ids the market stream loses
        self.user_connects = 0
        self.market_connects = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self._user_streams: set[_Events] = set()
        self._market_streams: set[_Events] = set()

    # --- faults the test triggers ---------------------------------------------------------
    def drop_user_stream(self) -> None:
        """Break the user stream: events not yet delivered are lost, as on a dead connection."""
        for stream in list(self._user_streams):
            stream.drop()

    def drop_market_stream(self) -> None:
        for stream in list(self._market_streams):
            stream.drop()

    # --- the adapter interface ------------------------------------------------------------
    async def instruments(self) -> list[Instrument]:
        return await self.inner.instruments()

    async def server_time_ms(self) -> int:
        return await self.inner.server_time_ms()

    async def book_snapshot(self, symbol: str, depth: int = 100) -> BookSnapshot:
        self.calls["book_snapshot"] += 1
        return await self.inner.book_snapshot(symbol, depth)

    @asynccontextmanager
    async def market_stream(self, symbols: Sequence[str]) -> AsyncIterator[AsyncIterator[Any]]:
        self.market_connects += 1
        async with self.inner.market_stream(symbols) as stream:
            events = _Events(self, stream, "market")
            self._market_streams.add(events)
            try:
                yield events
            finally:
                self._market_streams.discard(events)

    async def place_order(self, order: OrderRequest) -> OrderState:
        self.posts[order.client_order_id] += 1
        self.post_times.append(trio.current_time())
        fault = self.post_faults.popleft() if self.post_faults else ""
        if fault == "unknown_before":
            await trio.sleep(0.01)
            raise UnknownOutcome(f"POST {order.client_order_id}: read timeout (test)")
        if fault.startswith("rate_limited"):
            raise RateLimited(float(fault.split(":")[1]), "(test 429)")
        if fault.startswith("banned"):
            raise VenueBanned(float(fault.split(":")[1]), "(test 418)")
        if fault == "unavailable":
            raise VenueUnavailable("connection refused (test)")
        state = await self.inner.place_order(order)
        if fault == "unknown_after":
            raise UnknownOutcome(f"POST {order.client_order_id}: 502 after execution (test)")
        return state

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        self.calls["cancel_order"] += 1
        return await self.inner.cancel_order(symbol, client_order_id)

    async def cancel_all(self, symbol: str) -> list[OrderState]:
        self.calls["cancel_all"] += 1
        return await self.inner.cancel_all(symbol)

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState:
        self.calls["query_order"] += 1
        fault = self.query_faults.popleft() if self.query_faults else ""
        if fault == "unavailable":
            raise VenueUnavailable("query failed (test)")
        return await self.inner.query_order(symbol, client_order_id)

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        self.calls["open_orders"] += 1
        return await self.inner.open_orders(symbol)

    async def balances(self):
        self.calls["balances"] += 1
        return await self.inner.balances()

    async def my_trades(self, symbol: str, from_trade_id: str | None = None) -> list[AccountTrade]:
        self.calls["my_trades"] += 1
        trades = await self.inner.my_trades(symbol, from_trade_id)
        if self.strip_trade_cids:
            trades = [msgspec.structs.replace(t, client_order_id=None) for t in trades]
        return trades

    @asynccontextmanager
    async def user_stream(self) -> AsyncIterator[AsyncIterator[Any]]:
        if self.user_stream_down:
            await trio.sleep(0.01)
            raise VenueUnavailable("user stream refused (test)")
        self.user_connects += 1
        async with self.inner.user_stream() as stream:
            events = _Events(self, stream, "user")
            self._user_streams.add(events)
            try:
                yield events
            finally:
                self._user_streams.discard(events)

    async def emergency_cancel_all(self, symbol: str) -> list[OrderState]:
        self.calls["emergency_cancel_all"] += 1
        fault = self.cancel_all_faults.popleft() if self.cancel_all_faults else ""
        if fault == "unavailable":
            raise VenueUnavailable("emergency cancel failed (test)")
        if fault.startswith("rate_limited"):
            raise RateLimited(float(fault.split(":")[1]), "(test 429)")
        if fault == "hang":
            await trio.sleep_forever()
        return await self.inner.emergency_cancel_all(symbol)

    async def emergency_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        self.calls["emergency_open_orders"] += 1
        return await self.inner.emergency_open_orders(symbol)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Events:
    """One connection's events with the venue's faults applied (an async iterator)."""

    def __init__(self, venue: FaultyVenue, inner: Any, kind: str) -> None:
        self.venue = venue
        self.inner = inner
        self.kind = kind
        self.dropped = False
        self.pending: collections.deque[Any] = collections.deque()

    def drop(self) -> None:
        self.dropped = True
        self.pending.clear()
        self.inner.close()

    def __aiter__(self) -> _Events:
        return self

    async def _next_raw(self) -> Any:
        while True:
            try:
                event = await self.inner.__anext__()
            except StopAsyncIteration:
                if self.dropped:
                    raise VenueUnavailable(f"{self.kind} stream dropped by the test") from None
                raise
            if self.kind == "user" and self.venue.mute_user_events and type(event) is not StreamNotice:
                continue
            if self.kind == "market" and type(event) is BookDiff and event.first_id in self.venue.drop_diffs:
                self.venue.drop_diffs.discard(event.first_id)
                continue  # lost on the way: the feed must find the gap
            return event

    async def __anext__(self) -> Any:
        venue = self.venue
        while not self.pending:
            if self.dropped:
                raise VenueUnavailable(f"{self.kind} stream dropped by the test")
            event = await self._next_raw()
            batch = [event]
            if self.kind == "user" and venue.reorder_window > 1:
                while len(batch) < venue.reorder_window:
                    got: Any = None
                    with trio.move_on_after(0.05):
                        try:
                            got = await self._next_raw()
                        except StopAsyncIteration:
                            break
                    if got is None:
                        break
                    batch.append(got)
                venue.rng.shuffle(batch)
            for e in batch:
                self.pending.append(e)
                if self.kind == "user" and venue.duplicate_events:
                    self.pending.append(e)
        return self.pending.popleft()


# ---------------------------------------------------------------------------------------
# A market-data adapter driven by hand
# ---------------------------------------------------------------------------------------

_END = object()


class ScriptedConnection:
    """One market-data connection: the test pushes events, ends it or breaks it."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self.opened_at = trio.current_time()
        self.closed = False
        self._send, self._receive = trio.open_memory_channel[Any](10_000)

    def push(self, *events: Any) -> None:
        for event in events:
            self._send.send_nowait(event)

    def end(self) -> None:
        self._send.send_nowait(_END)

    def fail(self) -> None:
        self._send.send_nowait(VenueUnavailable("connection reset (test)"))

    def __aiter__(self) -> ScriptedConnection:
        return self

    async def __anext__(self) -> Any:
        item = await self._receive.receive()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return item


class ScriptedMarket:
    """Market data whose connections the test opens, feeds and breaks.

    `plan` says what each connection attempt does ("refuse", "ratelimit:N" or
    "accept"; accept once it is empty). `snapshots[symbol]` is returned by
    `book_snapshot` (a callable is called with the number of the fetch).
    """

    name = "sim"

    def __init__(self, snapshots: dict[str, Any] | None = None) -> None:
        self.plan: collections.deque[str] = collections.deque()
        self.attempts: list[tuple[float, tuple[str, ...]]] = []
        self.connections: list[ScriptedConnection] = []
        self.snapshots: dict[str, Any] = dict(snapshots or {})
        self.snapshot_calls: collections.Counter[str] = collections.Counter()

    @asynccontextmanager
    async def market_stream(self, symbols: Sequence[str]) -> AsyncIterator[ScriptedConnection]:
        self.attempts.append((trio.current_time(), tuple(symbols)))
        action = self.plan.popleft() if self.plan else "accept"
        await trio.lowlevel.checkpoint()
        if action == "refuse":
            raise VenueUnavailable("connection refused (test)")
        if action.startswith("ratelimit"):
            raise RateLimited(float(action.split(":")[1]), "(test handshake 429)")
        conn = ScriptedConnection(symbols)
        self.connections.append(conn)
        try:
            yield conn
        finally:
            conn.closed = True

    async def book_snapshot(self, symbol: str, depth: int = 100) -> BookSnapshot:
        self.snapshot_calls[symbol] += 1
        await trio.lowlevel.checkpoint()
        snap = self.snapshots[symbol]
        if callable(snap):
            snap = snap(self.snapshot_calls[symbol])
        if isinstance(snap, Exception):
            raise snap
        return snap


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

_exec_ids = iter(range(1, 1_000_000))


def intent(
    side: Side = Side.BUY,
    qty: str = "0.01",
    price: str | None = "60000",
    *,
    symbol: str = "BTCUSDT",
    order_type: OrderType = OrderType.LIMIT,
    tif: TimeInForce | None = TimeInForce.GTC,
    exec_id: str | None = None,
    seq: int = 0,
) -> OrderIntent:
    exec_id = exec_id or f"x{next(_exec_ids)}"
    return OrderIntent(
        client_order_id=client_order_id(exec_id, seq),
        exec_id=exec_id,
        seq=seq,
        venue="sim",
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=D(qty),
        price=None if price is None else D(price),
        time_in_force=tif,
    )


class Collector:
    """Everything published on some topics, in order, for assertions."""

    def __init__(self, bus: Bus, *topics: str) -> None:
        self.subs = {t: bus.subscribe(t, maxsize=100_000, name="test") for t in topics}

    def drain(self, topic: str) -> list[Any]:
        sub = self.subs[topic]
        out = []
        while True:
            try:
                out.append(sub.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return out


@pytest.fixture(autouse=True)
def fresh_log() -> None:
    """Each test reads only its own log lines (the sink's ring is process-wide)."""
    sink.ring.clear()


def logged(event: str, **fields: Any) -> list[str]:
    """Log lines (from the sink's ring) with this event name and these key=value fields."""
    lines = []
    for record in list(sink.ring):
        if record.event != event:
            continue
        if all(f"{k}={v}" in record.line for k, v in fields.items()):
            lines.append(record.line)
    return lines


async def settle(seconds: float = 1.0) -> None:
    """Let the actors run (on the autojump clock this costs no real time)."""
    await trio.sleep(seconds)


async def wait_for(condition: Any, timeout: float = 60.0, step: float = 0.01) -> None:
    """Poll `condition()` on trio's clock until it holds; fail after `timeout` (virtual) seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(step)
