"""The whole daemon against the simulated venue served over the Binance protocol on loopback,
with every fault on at once: afterwards the daemon's orders, fills and balances are exactly
the venue's own records. And the feed's book, after gaps, equals the venue's book."""

from __future__ import annotations

import os
import random
from decimal import Decimal as D

import msgspec
import pytest
import trio

from actors.feed import Feed, FeedConfig, FeedState
from daemon import topics
from daemon.bus import Bus
from daemon.messages import Approval, CancelOrder, Denial, OrderIntent
from daemon.model import OrderStatus, OrderType, Side, TimeInForce, client_order_id
from sim_server_support import quiet_config
from venues.base import OrderNotFound
from venues.binance.adapter import BinanceAdapter
from venues.sim.config import BTCUSDT, ETHUSDT
from venues.sim.serve import open_binance_server
from venues.sim.server_config import Faults
from venues.sim.world import build_world

pytestmark = pytest.mark.slow


def busy(instrument):
    """A market that moves the book several times a second."""
    return msgspec.structs.replace(instrument, trades_per_second=5.0, refill_seconds=1.0)

S = OrderStatus
SYMBOL = "BTCUSDT"
QTY = D("0.001")


def daemon_config(server) -> str:
    return f"""
[venues.binance]
type = "binance"
rest_url = "{server.rest_url}"
market_stream_url = "{server.stream_url}"
ws_api_url = "{server.ws_api_url}"
request_timeout = 2.0
connect_timeout = 2.0
emergency_timeout = 2.0
retry_backoff = 0.05
ws_open_timeout = 3.0

[feed]
stale_after = 30.0
silence_timeout = 30.0
snapshot_retry = 0.1
reconnect = {{ initial = 0.1, maximum = 1.0, jitter = 0.2, reset_after = 5.0 }}

[feed.symbols]
binance = ["{SYMBOL}"]

[gateway]
unknown_grace = 3.0
order_max_wait = 20.0
down_after = 30.0
reconcile_interval = 1.0
settle = {{ initial = 0.2, maximum = 1.0 }}
retry = {{ initial = 0.05, maximum = 0.5 }}
reconnect = {{ initial = 0.1, maximum = 1.0, jitter = 0.2, reset_after = 5.0 }}

[risk]
price_collar_bps = "5000"
prevent_self_trade = false  # random sides at crossing prices: this test is about the protocol, not wash trades
max_orders_per_second = 1000
max_orders_per_minute = 100000
max_open_orders_per_instrument = 1000
max_open_orders = 1000
stale_quote_seconds = 30.0
rejects = {{ enabled = false }}
stale_data = {{ enabled = false }}
venue_down = {{ enabled = false }}

[positions]
balance_grace = 30.0
"""


def every_fault() -> Faults:
    return Faults(
        error_rate=0.05,  # 5xx, nothing done
        error_after_rate=0.12,  # done, then 5xx: the order's fate is unknown
        timeout_rate=0.05,  # -1007, nothing done
        timeout_after_rate=0.08,  # done, then -1007
        paths=("/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades"),
        latency=0.005,
        latency_jitter=0.02,
        ws_drop_rate=0.01,  # streams and the WebSocket API drop without a close frame
        depth_gap_rate=0.05,
        stale_snapshot_rate=0.3,
        user_duplicate_rate=0.15,
        user_reorder_rate=0.15,
    )


def calm(faults: Faults) -> None:
    quiet = Faults()
    for name in Faults.__struct_fields__:
        setattr(faults, name, getattr(quiet, name))


async def wait_until(condition, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_chaos_the_daemon_agrees_with_the_venue_exactly(start_daemon, monkeypatch):
    world = build_world(quiet_config(seed=int(os.environ.get("TRADINGD_CHAOS_SEED", "23")), market_step=0.2))
    faults = Faults()
    async with open_binance_server(world, faults=faults) as server:
        creds = server.credentials("demo")
        monkeypatch.setenv("TRADINGD_BINANCE_API_KEY", creds.api_key)
        monkeypatch.setenv("TRADINGD_BINANCE_API_SECRET", creds.secret)
        d = await start_daemon(daemon_config(server))
        gateway, feed, journal = d.services["gateways"]["binance"], d.services["feeds"]["binance"], d.services["journal"]
        engine = server.engine
        await wait_until(lambda: feed.last_quote(SYMBOL) is not None, 15, "a live book")

        fills_published = []
        rng = random.Random(world.config.seed)
        intents: list[OrderIntent] = []
        resting: list[str] = []
        with d.bus.subscribe(topics.FILL, maxsize=100_000, name="chaos") as fills_sub:
            # --- every fault at once while many small orders go out -----------------------
            chaos = every_fault()
            for name in Faults.__struct_fields__:
                setattr(server.faults, name, getattr(chaos, name))
            for n in range(80):
                if n % 20 == 5:
                    server.faults.burst_429 = 2  # a 429 burst: the next two calls are refused
                await wait_until(lambda: feed.last_quote(SYMBOL) is not None, 15, "the book to be live again")
                quote = feed.last_quote(SYMBOL)
                side = rng.choice([Side.BUY, Side.SELL])
                kind = rng.random()
                if kind < 0.4:  # crosses the book at once
                    price = quote.ask + 20 if side is Side.BUY else quote.bid - 20
                    spec = dict(order_type=OrderType.LIMIT, price=price, time_in_force=TimeInForce.IOC)
                elif kind < 0.8:  # rests near the touch; may fill as the market moves
                    off = D(5) * rng.randint(0, 3)
                    price = quote.bid - off if side is Side.BUY else quote.ask + off
                    spec = dict(order_type=OrderType.LIMIT, price=price, time_in_force=TimeInForce.GTC)
                elif kind < 0.9:  # post-only at the touch (refused if it would take)
                    price = quote.bid if side is Side.BUY else quote.ask
                    spec = dict(order_type=OrderType.LIMIT_MAKER, price=price, time_in_force=None)
                else:
                    spec = dict(order_type=OrderType.MARKET, price=None, time_in_force=None)
                intent = OrderIntent(
                    client_order_id=client_order_id("chaos", n), exec_id="chaos", seq=n, venue="binance",
                    symbol=SYMBOL, side=side, quantity=QTY, **spec,
                )  # fmt: skip
                reply = await d.bus.request(topics.RISK_SUBMIT, intent, timeout=10)
                assert isinstance(reply, Approval | Denial)
                if isinstance(reply, Approval):
                    intents.append(intent)
                    if spec["time_in_force"] is TimeInForce.GTC:
                        resting.append(intent.client_order_id)
                if resting and rng.random() < 0.3:  # cancel one of the resting ones
                    cid = resting.pop(rng.randrange(len(resting)))
                    await d.bus.publish(topics.orders("binance"), CancelOrder(venue="binance", symbol=SYMBOL, client_order_id=cid))
                await trio.sleep(rng.uniform(0.02, 0.15))
            assert len(intents) >= 60

            # --- faults off: the daemon must settle everything by itself ------------------
            calm(server.faults)

            def settled() -> bool:
                for i in intents:
                    order = gateway.table.get(i.client_order_id)
                    if order is None or order.status is None or order.status in (S.PENDING_NEW, S.UNKNOWN, S.PENDING_CANCEL):
                        return False
                return True

            await wait_until(settled, 30, "every order settled")
            reconciled = gateway.reconciles
            await wait_until(lambda: gateway.reconciles >= reconciled + 2, 15, "two reconciliations after the faults")
            await trio.sleep(0.5)
            while True:
                try:
                    fills_published.append(fills_sub.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

        account = engine._account("demo")
        venue_orders = [o for book in account.open.values() for o in book.values()] + list(account.closed.values())
        ours = {i.client_order_id for i in intents}

        # no order the daemon does not know about, and none twice
        venue_cids = [o.client_order_id for o in venue_orders]
        assert len(venue_cids) == len(set(venue_cids)), "an order was placed twice"
        assert set(venue_cids) <= ours, set(venue_cids) - ours

        # every order's state is the venue's
        for intent in intents:
            journaled = await journal.order(intent.client_order_id)
            assert journaled is not None, intent.client_order_id
            try:
                truth = engine.query_order("demo", SYMBOL, client_order_id=intent.client_order_id)
            except OrderNotFound:
                # never placed: refused before sending, or cancelled before it left
                assert journaled.status in (S.REJECTED, S.CANCELED) and journaled.venue_order_id is None, journaled
                continue
            assert (journaled.status, journaled.filled_qty) == (truth.status, truth.filled_qty), intent.client_order_id
            assert journaled.venue_order_id == truth.venue_order_id

        # every fill once, exactly as the venue lists it
        trades = engine.my_trades("demo", SYMBOL)
        journaled_fills = [jf.fill for jf in await journal.fills(venue="binance")]
        assert sorted((f.trade_id, f.price, f.qty, f.fee, f.fee_asset) for f in journaled_fills) == sorted(
            (t.trade_id, t.price, t.qty, t.fee, t.fee_asset) for t in trades
        )
        assert len(trades) > 10
        assert sorted(f.trade_id for f in fills_published) == sorted(t.trade_id for t in trades)

        # balances as the venue holds them
        balances = {b.asset: b for b in await journal.latest_balances("binance")}
        for b in engine.balances("demo", include_zero=True):
            assert (balances[b.asset].free, balances[b.asset].locked) == (b.free, b.locked), b.asset

        assert engine.audit() == []
        risk = d.services["risk"].status()
        assert risk["state"] == "ACTIVE" and not risk["trips"], risk  # e.g. no balance mismatch along the way
        # the faults did happen, and were survived
        assert gateway.stream_reconnects + feed.reconnects >= 1 or gateway.counts["unknown"] >= 1
        assert gateway.counts["unknown"] >= 1


async def test_after_depth_gaps_the_feed_rebuilds_the_venues_book(nursery):
    world = build_world(quiet_config(seed=31, market_step=0.05, instruments=(busy(BTCUSDT), busy(ETHUSDT))))
    stop_market = trio.CancelScope()

    async def market(task_status=trio.TASK_STATUS_IGNORED):
        with stop_market:
            await world.run(task_status=task_status)

    await nursery.start(market)
    faults = Faults(depth_gap_rate=0.05, stale_snapshot_rate=0.5)
    async with open_binance_server(world, faults=faults, run_market=False) as server:
        adapter = BinanceAdapter(server.binance_config(), server.signer())
        try:
            instruments = {("binance", i.symbol): i for i in await adapter.instruments()}
            feed = Feed(
                "binance", adapter, ["BTCUSDT", "ETHUSDT"], bus=Bus(), instruments=instruments,
                config=FeedConfig(stale_after=30.0, snapshot_retry=0.05),
            )  # fmt: skip
            async with trio.open_nursery() as inner:
                await inner.start(feed.run)
                await wait_until(lambda: feed.resyncs >= 3 and feed.state is FeedState.LIVE, 20, "resyncs after gaps")
                faults.depth_gap_rate = 0.0
                faults.stale_snapshot_rate = 0.0
                engine = server.engine

                def caught_up() -> bool:
                    return feed.state is FeedState.LIVE and all(
                        (book := feed.book(s)) is not None and book.update_id == engine.last_update_id(s)
                        for s in ("BTCUSDT", "ETHUSDT")
                    )

                marks = {s: engine.last_update_id(s) for s in ("BTCUSDT", "ETHUSDT")}

                def past_the_faults() -> bool:
                    # a lost diff shows only when the next one arrives: wait for diffs sent after the faults
                    return feed.state is FeedState.LIVE and all(
                        (book := feed.book(s)) is not None and book.update_id > mark for s, mark in marks.items()
                    )

                await wait_until(past_the_faults, 30, "the feed to pass the last fault")
                stop_market.cancel()  # the market stops; the last diffs reach the feed
                await wait_until(caught_up, 10, "the feed to catch up after the market stopped")
                for symbol in ("BTCUSDT", "ETHUSDT"):
                    ours = feed.book(symbol)
                    theirs = server.engine.snapshot(symbol, depth=None)
                    assert ours is not None and ours.update_id == theirs.last_update_id, symbol
                    assert ours.bids() == tuple(theirs.bids) and ours.asks() == tuple(theirs.asks), symbol
                assert sum(s.gaps for s in feed.books.values()) >= 1
                inner.cancel_scope.cancel()
        finally:
            with trio.move_on_after(2, shield=True):
                await adapter.aclose()
