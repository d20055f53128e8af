"""feed[venue] under MockClock: books, publishing, resyncs, reconnects, silence, staleness."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
import pytest
import trio

from actors.feed import Feed, FeedConfig, FeedState
from daemon import topics
from daemon.bus import Bus
from daemon.health import Health, Level
from daemon.messages import Depth, FeedStatus, MarketTrade
from daemon.model import Side
from daemon.supervisor import Backoff, Registry
from tests.actors.venue_fakes import BTC, ETH, Collector, FaultyVenue, ScriptedMarket, logged, wait_for, fresh_log  # noqa: F401 (autouse fixture)
from venues.sim.config import SimConfig
from venues.sim.world import build_world
from venues.base import BookDiff, BookSnapshot, PublicTrade, StreamNotice, VenueUnavailable

INSTRUMENTS = {("sim", "BTCUSDT"): BTC, ("sim", "ETHUSDT"): ETH}


def snap(update_id: int, bids=(("100.00", "1"), ("99.99", "2")), asks=(("100.01", "1"), ("100.02", "3")), symbol="BTCUSDT"):
    return BookSnapshot(
        symbol=symbol,
        last_update_id=update_id,
        bids=tuple((D(p), D(q)) for p, q in bids),
        asks=tuple((D(p), D(q)) for p, q in asks),
    )


def diff(first: int, last: int | None = None, bids=(), asks=(), symbol="BTCUSDT") -> BookDiff:
    return BookDiff(
        symbol=symbol,
        first_id=first,
        last_id=first if last is None else last,
        bids=[(D(p), D(q)) for p, q in bids],
        asks=[(D(p), D(q)) for p, q in asks],
    )


def make_feed(market, symbols=("BTCUSDT",), **config):
    defaults = dict(
        reconnect=Backoff(initial=1.0, multiplier=2.0, maximum=30.0, jitter=0.0, reset_after=60.0),
        silence_timeout=1000.0,
        stale_after=5.0,
        snapshot_retry=0.5,
    )
    bus = Bus()
    health = Health(Registry())
    feed = Feed("sim", market, symbols, bus=bus, instruments=INSTRUMENTS, config=FeedConfig(**(defaults | config)), health=health)
    return feed, bus, health


async def test_book_syncs_and_publishes_quotes_depth_and_trades(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(100)})
    feed, bus, health = make_feed(market)
    seen = Collector(bus, topics.QUOTE, topics.DEPTH, topics.TRADE, topics.FEED_STATUS)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    conn = market.connections[0]
    assert conn.symbols == ("BTCUSDT",)
    quote = seen.drain(topics.QUOTE)[-1]
    assert (quote.bid, quote.bid_qty, quote.ask, quote.ask_qty) == (D("100.00"), D(1), D("100.01"), D(1))

    conn.push(
        diff(101, bids=[("100.00", "3")]),
        diff(99),  # older than the book: ignored
        diff(102, asks=[("100.01", "0")]),  # the best ask leaves
        PublicTrade(symbol="BTCUSDT", trade_id=5, price=D("100.01"), qty=D("0.5"), taker_side=Side.BUY, venue_ms=7),
    )
    await trio.sleep(0.1)
    quotes = seen.drain(topics.QUOTE)
    assert [(q.bid_qty, q.ask) for q in quotes] == [(D(3), D("100.01")), (D(3), D("100.02"))]
    depth: Depth = seen.drain(topics.DEPTH)[-1]
    assert depth.update_id == 102 and depth.bids == ((D("100.00"), D(3)), (D("99.99"), D(2))) and depth.asks == ((D("100.02"), D(3)),)
    (trade,) = seen.drain(topics.TRADE)
    assert isinstance(trade, MarketTrade) and (trade.trade_id, trade.qty, trade.taker_side) == (5, D("0.5"), Side.BUY)
    status: FeedStatus = seen.drain(topics.FEED_STATUS)[-1]
    assert status.state == "live" and status.symbols == ("BTCUSDT",)
    assert health.summary()[0] is Level.HEALTHY
    assert feed.last_quote("BTCUSDT").ask == D("100.02")


async def test_a_gap_discards_the_book_and_a_new_snapshot_rebuilds_it(autojump_clock, nursery):
    fresh = snap(104, bids=(("100.00", "5"),), asks=(("100.05", "1"),))
    market = ScriptedMarket({"BTCUSDT": lambda n: snap(100) if n == 1 else fresh})
    feed, bus, _ = make_feed(market)
    seen = Collector(bus, topics.FEED_STATUS)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    conn = market.connections[0]
    conn.push(diff(101, bids=[("99.98", "1")]), diff(103, bids=[("99.50", "9")]), diff(104, asks=[("100.05", "1")]))
    await wait_for(lambda: market.snapshot_calls["BTCUSDT"] == 2 and feed.state is FeedState.LIVE)
    assert logged("book.resync", symbol="BTCUSDT")
    assert feed.resyncs == 1 and feed.books["BTCUSDT"].gaps == 1
    book = feed.book("BTCUSDT")
    assert book is not None and book.to_snapshot() == BookSnapshot(
        symbol="BTCUSDT", last_update_id=104, bids=fresh.bids, asks=fresh.asks
    )
    states = [s.state for s in seen.drain(topics.FEED_STATUS)]
    assert "syncing" in states and states[-1] == "live" and "stale" not in states


async def test_snapshot_older_than_buffered_diffs_is_refetched(autojump_clock, nursery):
    calls = []

    def snapshots(n):
        calls.append(trio.current_time())
        return snap(150) if n == 1 else snap(300)

    market = ScriptedMarket({"BTCUSDT": snapshots})
    feed, _, _ = make_feed(market)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    sync = feed.books["BTCUSDT"]
    # force the documented case: a gap, then diffs buffered from 290 while a stale snapshot (150) comes back
    market.snapshots["BTCUSDT"] = lambda n: snap(150) if n == 2 else snap(300)
    market.connections[0].push(diff(290, 299), diff(300, 301, asks=[("100.03", "2")]))
    await wait_for(lambda: feed.state is FeedState.LIVE and sync.book.update_id == 301)
    assert sync.stale_snapshots == 1
    assert logged("book.resync", reason="stale_snapshot")
    assert market.snapshot_calls["BTCUSDT"] == 3


async def test_reconnect_backs_off_exponentially_and_resets_after_a_stable_connection(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(1)})
    market.plan.extend(["refuse", "refuse", "refuse"])
    feed, _, _ = make_feed(market)
    await nursery.start(feed.run)
    await wait_for(lambda: len(market.connections) == 1)
    times = [t for t, _ in market.attempts]
    assert [round(b - a, 6) for a, b in zip(times, times[1:])] == [1.0, 2.0, 4.0]

    # up for longer than reset_after: the next failure starts from the first delay again
    conn = market.connections[0]
    for _ in range(70):
        await trio.sleep(1)
        conn.push(diff(2 + _, bids=[("100.00", str(_ + 1))]))
    conn.fail()
    await wait_for(lambda: len(market.connections) == 2)
    lost_at = market.attempts[-2][0] + 70
    assert market.attempts[-1][0] - lost_at == pytest.approx(1.0, abs=0.05)

    # connections dropped at once do not reset it: 2, then 4
    market.connections[-1].fail()
    await wait_for(lambda: len(market.connections) == 3)
    first_gap = market.attempts[-1][0] - market.attempts[-2][0]
    market.connections[-1].fail()
    await wait_for(lambda: len(market.connections) == 4)
    second_gap = market.attempts[-1][0] - market.attempts[-2][0]
    assert first_gap == pytest.approx(2.0, abs=0.05) and second_gap == pytest.approx(4.0, abs=0.05)
    assert feed.reconnects == len(market.attempts) - 1
    # every new connection asks for every symbol again and rebuilds the book from a snapshot
    assert all(symbols == ("BTCUSDT",) for _, symbols in market.attempts)
    assert market.snapshot_calls["BTCUSDT"] == 4


async def test_a_429_on_connect_waits_at_least_retry_after(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(1)})
    market.plan.extend(["ratelimit:20"])
    feed, _, _ = make_feed(market)
    await nursery.start(feed.run)
    await wait_for(lambda: len(market.connections) == 1)
    assert market.attempts[1][0] - market.attempts[0][0] == pytest.approx(20.0, abs=0.01)


async def test_a_silent_connection_is_dead(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(1)})
    feed, bus, health = make_feed(market, silence_timeout=10.0, stale_after=4.0)
    seen = Collector(bus, topics.FEED_STATUS)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    start = market.attempts[0][0]
    await wait_for(lambda: feed.state is FeedState.STALE)
    assert trio.current_time() - start >= 4.0
    assert health.summary()[0] is Level.DEGRADED
    await wait_for(lambda: len(market.attempts) == 2)
    assert market.connections[0].closed
    assert market.attempts[1][0] - start == pytest.approx(11.0, abs=0.05)  # 10 s of silence, then 1 s back-off
    assert logged("feed.silent", venue="sim")
    await wait_for(lambda: feed.state is FeedState.LIVE)
    states = [s.state for s in seen.drain(topics.FEED_STATUS)]
    assert "stale" in states and states[-1] == "live"


async def test_server_shutdown_reconnects_at_once_without_going_stale(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(1), "ETHUSDT": snap(1, bids=(("10.00", "1"),), asks=(("10.01", "1"),), symbol="ETHUSDT")})
    feed, bus, _ = make_feed(market, symbols=("BTCUSDT", "ETHUSDT"))
    seen = Collector(bus, topics.FEED_STATUS)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    await trio.sleep(3)
    market.connections[0].push(StreamNotice(kind="server_shutdown"))
    await wait_for(lambda: len(market.connections) == 2 and feed.state is FeedState.LIVE)
    assert market.attempts[1][0] - market.attempts[0][0] == pytest.approx(3.0, abs=0.05)
    assert market.attempts[1][1] == ("BTCUSDT", "ETHUSDT")
    assert logged("venue.reconnect", planned="true")
    states = {s.state for s in seen.drain(topics.FEED_STATUS)}
    assert not states & {"stale", "down"}


async def test_connection_is_replaced_before_its_maximum_age(autojump_clock, nursery):
    book_id = [1]
    market = ScriptedMarket({"BTCUSDT": lambda n: snap(book_id[0])})
    feed, _, _ = make_feed(market, max_connection_age=300.0, stale_after=30.0)
    await nursery.start(feed.run)
    await wait_for(lambda: len(market.connections) == 1)
    for _ in range(40):  # keep it talking
        await trio.sleep(10)
        book_id[0] += 1
        market.connections[-1].push(diff(book_id[0]))
    await trio.sleep(0.1)
    assert len(market.attempts) == 2
    assert market.attempts[1][0] - market.attempts[0][0] == pytest.approx(300.0, abs=0.05)
    assert feed.reconnects == 1
    assert feed.state is FeedState.LIVE and feed.book("BTCUSDT").update_id == book_id[0]


async def test_an_outage_is_published_as_down(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(1)})
    market.plan.extend(["refuse"] * 10)
    feed, bus, health = make_feed(market, stale_after=5.0)
    seen = Collector(bus, topics.FEED_STATUS)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.DOWN)
    statuses = seen.drain(topics.FEED_STATUS)
    assert statuses[0].state == "connecting" and statuses[-1].state == "down"
    assert "connection refused" in statuses[-1].detail
    level, reasons = health.summary()
    assert level is Level.DEGRADED and any("feed.sim: down" in r for r in reasons)
    await wait_for(lambda: feed.state is FeedState.LIVE, timeout=600, step=1.0)
    assert statuses[-1].reconnects >= 1


async def test_bad_levels_and_crossed_books_resync_instead_of_crashing(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(10)})
    feed, _, _ = make_feed(market)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    market.snapshots["BTCUSDT"] = snap(20)
    market.connections[0].push(diff(11, bids=[("100.005", "1")]))  # off the 0.01 tick
    await wait_for(lambda: market.snapshot_calls["BTCUSDT"] == 2 and feed.state is FeedState.LIVE)
    market.snapshots["BTCUSDT"] = snap(30)
    market.connections[0].push(diff(21, bids=[("100.50", "1")]))  # bid above the ask: cannot be right
    await wait_for(lambda: market.snapshot_calls["BTCUSDT"] == 3 and feed.state is FeedState.LIVE)
    assert feed.book("BTCUSDT").update_id == 30
    assert len(logged("book.resync", symbol="BTCUSDT")) >= 2


async def test_unknown_symbols_are_reported_and_the_rest_streamed(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(1)})
    feed, _, _ = make_feed(market, symbols=("BTCUSDT", "NOPEUSDT"))
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    assert market.attempts[0][1] == ("BTCUSDT",)
    assert logged("feed.unknown_symbols", venue="sim")


async def test_failing_snapshots_are_retried_and_published_as_stale(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": VenueUnavailable("snapshot endpoint down (test)")})
    feed, _, _ = make_feed(market, stale_after=3.0)
    await nursery.start(feed.run)
    await wait_for(lambda: bool(market.connections))

    async def talk():  # frames keep coming: only the book is missing
        for i in range(1000):
            market.connections[-1].push(PublicTrade(symbol="BTCUSDT", trade_id=i, price=D(100), qty=D(1), taker_side=Side.SELL))
            await trio.sleep(0.5)

    nursery.start_soon(talk)
    await wait_for(lambda: market.snapshot_calls["BTCUSDT"] >= 3)
    assert feed.state is FeedState.SYNCING
    await wait_for(lambda: feed.state is FeedState.STALE)  # connected, but no live book for too long
    assert "books not live" in feed.detail
    market.snapshots["BTCUSDT"] = snap(1)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    assert logged("book.snapshot_failed", symbol="BTCUSDT")
    assert len(market.attempts) == 1  # the connection itself was never in question


async def run_market(world, scope, task_status=trio.TASK_STATUS_IGNORED):
    with scope:
        await world.run(task_status=task_status)


async def test_after_a_lost_diff_the_book_is_rebuilt_equal_to_the_venues(autojump_clock, nursery):
    world = build_world(SimConfig(seed=11, start_ms=1_700_000_000_000, market_step=0.5))
    venue = FaultyVenue(world.engine)
    instruments = {("sim", i.symbol): i for i in world.engine.instruments()}
    feed = Feed(
        "sim", venue, ["BTCUSDT", "ETHUSDT"], bus=Bus(), instruments=instruments,
        config=FeedConfig(stale_after=30.0, silence_timeout=60.0),
    )  # fmt: skip
    market = trio.CancelScope()
    await nursery.start(run_market, world, market)
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    await trio.sleep(30)
    for _ in range(3):  # lose a diff of each book, three times over
        for symbol in ("BTCUSDT", "ETHUSDT"):
            venue.drop_diffs.add(world.engine.last_update_id(symbol) + 2)
        await trio.sleep(20)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    market.cancel()  # the market stops; the feed catches up with what was sent
    await trio.sleep(5)
    assert feed.resyncs >= 3 and not venue.drop_diffs
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ours = feed.book(symbol)
        theirs = world.engine.snapshot(symbol, depth=None)
        assert ours is not None and ours.update_id == theirs.last_update_id, symbol
        assert ours.bids() == tuple(theirs.bids) and ours.asks() == tuple(theirs.asks), symbol


async def test_a_changed_tick_size_is_picked_up_on_the_next_resync(autojump_clock, nursery):
    market = ScriptedMarket({"BTCUSDT": snap(10)})
    instruments = dict(INSTRUMENTS)
    feed = Feed("sim", market, ["BTCUSDT"], bus=Bus(), instruments=instruments, config=FeedConfig(stale_after=30.0))
    await nursery.start(feed.run)
    await wait_for(lambda: feed.state is FeedState.LIVE)
    # the venue moves to a finer tick; the gateway's refresh updates the shared instruments
    instruments[("sim", "BTCUSDT")] = msgspec.structs.replace(BTC, tick_size=D("0.001"))
    market.snapshots["BTCUSDT"] = snap(20, bids=(("100.005", "1"),), asks=(("100.007", "2"),))
    market.connections[0].push(diff(11, bids=[("100.005", "1")]))
    await wait_for(lambda: market.snapshot_calls["BTCUSDT"] == 2 and feed.state is FeedState.LIVE)
    assert feed.book("BTCUSDT").tick_size == D("0.001")
    assert feed.last_quote("BTCUSDT").bid == D("100.005")
    assert logged("book.tick_changed", symbol="BTCUSDT")
