"""The in-process sim venue under trio's MockClock: world driver, adapter, streams."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
import trio
import trio.testing

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import OrderStatus, OrderType, Side, TimeInForce
from venues.base import (
    BookDiff,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    PublicTrade,
    VenueAdapter,
    VenueError,
    VenueUnavailable,
)
from venues.sim.adapter import SimVenue
from venues.sim.config import SimConfig
from venues.sim.world import SimWorld, build_world

START_MS = 1_700_000_000_000


def limit(side: Side, qty: str, price: D, cid: str, tif: TimeInForce | None = TimeInForce.GTC) -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT",
        client_order_id=cid,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=D(qty),
        price=price,
        time_in_force=tif,
    )


class LocalBook:
    """The documented snapshot + diff procedure, as a client would run it."""

    def __init__(self) -> None:
        self.levels: dict[tuple[str, D], D] = {}
        self.update_id = -1
        self.buffer: list[BookDiff] = []
        self.applied = 0

    def on_diff(self, diff: BookDiff) -> None:
        if self.update_id < 0:
            self.buffer.append(diff)
        else:
            self._apply(diff)

    def on_snapshot(self, snapshot) -> None:
        self.levels = {("b", p): q for p, q in snapshot.bids} | {("a", p): q for p, q in snapshot.asks}
        self.update_id = snapshot.last_update_id
        for diff in self.buffer:
            if diff.last_id > self.update_id:
                self._apply(diff)
        self.buffer.clear()

    def _apply(self, diff: BookDiff) -> None:
        if diff.last_id <= self.update_id:
            return  # already in the snapshot
        gap = f"gap: book at {self.update_id}, diff {diff.first_id}..{diff.last_id}"
        assert diff.first_id == self.update_id + 1, gap
        for side, levels in (("b", diff.bids), ("a", diff.asks)):
            for price, qty in levels:
                if qty:
                    self.levels[(side, price)] = qty
                else:
                    self.levels.pop((side, price), None)
        self.update_id = diff.last_id
        self.applied += 1

    def same_as(self, snapshot) -> bool:
        expected = {("b", p): q for p, q in snapshot.bids} | {("a", p): q for p, q in snapshot.asks}
        return self.update_id == snapshot.last_update_id and self.levels == expected


async def test_an_hour_of_market_passes_on_trio_time(autojump_clock):
    world = build_world(SimConfig(seed=1, start_ms=START_MS))
    async with trio.open_nursery() as nursery:
        await nursery.start(world.run)
        assert world.engine.best_bid("BTCUSDT") is not None and world.engine.best_ask("ETHUSDT") is not None
        start = trio.current_time()
        await trio.sleep(3600.5)  # not on a step: the market and this task would wake together
        assert trio.current_time() - start == pytest.approx(3600.5)
        assert world.steps == 3600
        assert world.engine.now_ms() == START_MS + 3_600_500
        assert world.engine.last_trade_id("BTCUSDT") > 2000
        assert world.engine.audit() == []
        nursery.cancel_scope.cancel()


async def run_until_stopped(world: SimWorld, stop: trio.CancelScope, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """world.run under its own cancel scope, so a test can stop the market and carry on."""
    with stop:
        await world.run(task_status=task_status)


async def test_stream_diffs_rebuild_the_engines_book(autojump_clock):
    world = build_world(SimConfig(seed=2))
    venue = world.venue()
    books = {"BTCUSDT": LocalBook(), "ETHUSDT": LocalBook()}
    trades = 0
    stop = trio.CancelScope()

    async with venue.market_stream(["BTCUSDT", "ETHUSDT"]) as stream:

        async def consume() -> None:
            nonlocal trades
            async for event in stream:
                if isinstance(event, BookDiff):
                    books[event.symbol].on_diff(event)
                elif isinstance(event, PublicTrade):
                    trades += 1

        async with trio.open_nursery() as nursery:
            await nursery.start(run_until_stopped, world, stop)
            nursery.start_soon(consume)
            await trio.sleep(5.5)  # diffs are buffered until the snapshots arrive, as on a real connection
            for symbol, book in books.items():
                book.on_snapshot(await venue.book_snapshot(symbol, depth=5000))
            await trio.sleep(300)
            stop.cancel()
            await trio.sleep(1)  # the reader drains what is left
            nursery.cancel_scope.cancel()
    for symbol, book in books.items():
        assert book.applied > 100
        assert book.same_as(world.engine.snapshot(symbol, depth=None)), symbol
    assert trades > 100


async def test_diffs_before_the_snapshot_are_skipped_by_update_id(autojump_clock):
    world = build_world(SimConfig(seed=3))
    venue = world.venue()
    book = LocalBook()
    async with trio.open_nursery() as nursery:
        await nursery.start(world.run)
        async with venue.market_stream(["BTCUSDT"]) as stream:
            await trio.sleep(10)
            snapshot = await venue.book_snapshot("BTCUSDT", depth=5000)
            nursery.cancel_scope.cancel()
            with trio.move_on_after(1):
                async for event in stream:
                    if isinstance(event, BookDiff):
                        book.on_diff(event)
            assert book.buffer and book.buffer[0].first_id <= snapshot.last_update_id
            book.on_snapshot(snapshot)
            assert book.same_as(world.engine.snapshot("BTCUSDT", depth=None))


async def test_user_stream_delivers_taker_and_maker_fills(autojump_clock):
    world = build_world(SimConfig(seed=4))
    venue = world.venue("demo")
    async with trio.open_nursery() as nursery:
        await nursery.start(world.run)
        async with venue.user_stream() as stream:
            ask = world.engine.best_ask("BTCUSDT")
            assert ask is not None
            state = await venue.place_order(limit(Side.BUY, "0.05", ask[0] + 100, "cross", TimeInForce.IOC))
            assert state.status is OrderStatus.FILLED
            now = trio.current_time()
            with trio.fail_after(1):
                events = [await stream.__anext__() for _ in range(5)]
            assert [type(e) for e in events] == [OrderUpdate, Fill, OrderUpdate, BalanceUpdate, BalanceUpdate]
            assert events[0].status is OrderStatus.NEW and events[2].status is OrderStatus.FILLED
            fill = events[1]
            assert fill.client_order_id == "cross" and fill.qty == D("0.05") and not fill.is_maker
            assert fill.price <= ask[0] + 100 and fill.ts == now and fill.venue == "sim"

            # A passive bid at the touch is filled by the other participants' selling.
            bid = world.engine.best_bid("BTCUSDT")
            assert bid is not None
            await venue.place_order(limit(Side.BUY, "0.01", bid[0], "passive"))
            maker_fill = None
            with trio.move_on_after(3600):
                async for event in stream:
                    if isinstance(event, Fill) and event.client_order_id == "passive":
                        maker_fill = event
                        break
            assert maker_fill is not None and maker_fill.is_maker and maker_fill.price == bid[0]
            assert maker_fill.fee_asset == "BTC"
        nursery.cancel_scope.cancel()


def _scripted_session(seed: int) -> tuple[list, object]:
    """A fixed sequence of user actions at fixed trio times; returns what happened."""

    async def main() -> tuple[list, object]:
        world = build_world(SimConfig(seed=seed, start_ms=START_MS))
        venue = world.venue()
        fills: list = []
        async with trio.open_nursery() as nursery:
            await nursery.start(world.run)
            async with venue.user_stream() as stream:

                async def record() -> None:
                    async for event in stream:
                        if isinstance(event, Fill):
                            e = event
                            fills.append((e.trade_id, e.price, e.qty, e.side, e.is_maker, e.venue_ms))

                nursery.start_soon(record)
                await trio.sleep(10)
                mid = world.engine.mid("BTCUSDT")
                assert mid is not None
                await venue.place_order(limit(Side.BUY, "0.2", D("0.01") * int(mid / D("0.01")), "p1"))
                await trio.sleep(90)
                await venue.place_order(
                    OrderRequest(
                        symbol="BTCUSDT",
                        client_order_id="m1",
                        side=Side.SELL,
                        order_type=OrderType.MARKET,
                        quantity=D("0.3"),
                    )
                )
                await trio.sleep(100)
                await venue.cancel_all("BTCUSDT")
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
        return fills, world.engine.snapshot("BTCUSDT", depth=None)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_seed_and_same_orders_give_the_same_fills():
    first = _scripted_session(21)
    assert first[0]
    assert _scripted_session(21) == first
    assert _scripted_session(22)[1] != first[1]


async def test_a_slow_consumer_is_dropped_and_the_engine_carries_on(autojump_clock):
    world = build_world(SimConfig(seed=5))
    slow = SimVenue(world.engine, "demo", stream_buffer=16)
    async with trio.open_nursery() as nursery:
        await nursery.start(world.run)
        async with slow.market_stream(["BTCUSDT", "ETHUSDT"]) as stream:
            await trio.sleep(60.5)  # not reading
            assert world.steps == 60
            received = 0
            with pytest.raises(VenueUnavailable, match="fell 16 events behind"):
                async for _ in stream:
                    received += 1
            assert received == 16  # what was buffered is delivered, then the drop
        # A new connection works.
        async with slow.market_stream(["BTCUSDT"]) as stream:
            event = await stream.__anext__()
            assert event.symbol == "BTCUSDT"
        assert world.engine.audit() == []
        nursery.cancel_scope.cancel()


async def test_calls_take_the_configured_latency_in_trio_time(autojump_clock):
    world = build_world(SimConfig(seed=6, latency=0.2))
    venue = world.venue()
    world.market.populate()
    start = trio.current_time()
    await venue.open_orders()
    assert trio.current_time() - start == pytest.approx(0.2)
    start = trio.current_time()
    with pytest.raises(OrderRejected):
        await venue.place_order(limit(Side.BUY, "100", D("60000"), "too-big"))
    assert trio.current_time() - start == pytest.approx(0.2)


async def test_order_entry_through_the_adapter(autojump_clock):
    world = build_world(SimConfig(seed=7, start_ms=START_MS))
    venue = world.venue()
    assert isinstance(venue, VenueAdapter)
    assert venue.name == "sim"
    world.market.populate()
    assert {i.symbol for i in await venue.instruments()} == {"BTCUSDT", "ETHUSDT"}
    assert await venue.server_time_ms() == START_MS
    bid = world.engine.best_bid("BTCUSDT")
    assert bid is not None

    # LIMIT without time in force rests as GTC; MARKET with GTC is accepted (GTC dropped).
    rest = await venue.place_order(limit(Side.BUY, "0.1", bid[0] - 100, "rest", tif=None))
    assert rest.status is OrderStatus.NEW and rest.time_in_force is TimeInForce.GTC
    taken = await venue.place_order(
        OrderRequest(
            symbol="BTCUSDT",
            client_order_id="mkt",
            side=Side.SELL,
            order_type=OrderType.MARKET,
            quantity=D("0.01"),
            time_in_force=TimeInForce.GTC,
        )
    )
    assert taken.status is OrderStatus.FILLED
    assert (await venue.query_order("BTCUSDT", "rest")).status is OrderStatus.NEW
    assert [o.client_order_id for o in await venue.open_orders("BTCUSDT")] == ["rest"]
    trades = await venue.my_trades("BTCUSDT")
    assert [t.client_order_id for t in trades] == ["mkt"]
    assert await venue.my_trades("BTCUSDT", from_trade_id=str(int(trades[-1].trade_id) + 1)) == []
    balances = {b.asset: b for b in await venue.balances()}
    assert balances["BTC"].free == D("1.99")
    assert balances["USDT"].locked == (bid[0] - 100) * D("0.1")

    cancelled = await venue.cancel_order("BTCUSDT", "rest")
    assert cancelled.status is OrderStatus.CANCELED
    with pytest.raises(OrderNotFound):
        await venue.cancel_order("BTCUSDT", "rest")
    with pytest.raises(OrderNotFound):
        await venue.query_order("BTCUSDT", "never-sent")
    await venue.place_order(limit(Side.SELL, "0.1", bid[0] + 10_000, "far-1"))
    await venue.place_order(limit(Side.SELL, "0.1", bid[0] + 10_001, "far-2"))
    assert [o.client_order_id for o in await venue.emergency_cancel_all("BTCUSDT")] == ["far-1", "far-2"]
    assert await venue.emergency_open_orders() == []
    assert await venue.cancel_all("BTCUSDT") == []
    with pytest.raises(VenueError) as info:
        venue.market_stream(["DOGEUSDT"])
    assert info.value.code == -1121


async def test_aclose_ends_streams_and_refuses_later_calls(autojump_clock):
    world = build_world(SimConfig(seed=8))
    venue = world.venue()
    received = []
    async with venue.user_stream() as stream:

        async def read() -> None:
            async for event in stream:
                received.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(1)
            await venue.aclose()  # the reader's loop ends normally
    assert received == []
    with pytest.raises(VenueUnavailable, match="closed"):
        await venue.balances()
    with pytest.raises(VenueUnavailable):
        async with venue.market_stream(["BTCUSDT"]):
            pass


async def test_the_market_runs_once_at_a_time_and_can_be_restarted(autojump_clock):
    world = build_world(SimConfig(seed=9))
    async with trio.open_nursery() as nursery:
        await nursery.start(world.run)
        with pytest.raises(RuntimeError, match="already running"):
            await world.run()
        await trio.sleep(10.5)
        nursery.cancel_scope.cancel()
    levels = len(world.engine.snapshot("BTCUSDT", depth=None).bids)
    async with trio.open_nursery() as nursery:
        await nursery.start(world.run)  # a restart does not lay the book out twice
        assert len(world.engine.snapshot("BTCUSDT", depth=None).bids) == levels
        await trio.sleep(10.5)
        nursery.cancel_scope.cancel()
    assert world.steps == 20
    assert world.engine.audit() == []


def test_world_refuses_the_market_account_and_unknown_accounts():
    world: SimWorld = build_world()
    with pytest.raises(ValueError, match="market's own account"):
        world.venue("market")
    with pytest.raises(ValueError, match="no account"):
        world.venue("nobody")
    assert world.venue().account == "demo"
