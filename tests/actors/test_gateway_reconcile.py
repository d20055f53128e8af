"""gateway[venue] reconciliation: at start and after the user stream was lost, the journal is
brought in line with the venue: missed fills recovered once, unknown orders adopted or
cancelled, orders closed while we were away settled."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
import trio

from actors.gateway import prepare_order
from actors.order_state import update_from_state
from daemon import topics
from daemon.model import OrderStatus, OrderType, Side, TimeInForce
from tests.actors.test_gateway import Rig
from tests.actors.venue_fakes import BTC, FaultyVenue, InlineJournal, intent, logged, make_engine, rest, wait_for, fresh_log  # noqa: F401 (autouse fixture)
from venues.base import OrderRequest

S = OrderStatus


async def place(venue: FaultyVenue, order):
    return await venue.inner.place_order(prepare_order(order, BTC))


async def away_from_the_venue(engine, venue: FaultyVenue, journal: InlineJournal):
    """What happened at the venue while the daemon was down, and what the journal knew."""
    rest(engine, Side.SELL, "60000", "0.02")
    rest(engine, Side.SELL, "60001", "0.02")
    # A: journaled, sent, crossed the book; the daemon died before any answer was journaled
    a = intent(Side.BUY, "0.03", "60001")
    await journal.record_intent(a)
    assert (await place(venue, a)).status is S.FILLED
    # B: acknowledged as NEW, then cancelled at the venue (by hand) while we were down
    b = intent(Side.BUY, "0.01", "50000")
    await journal.record_intent(b)
    await journal.record_update(update_from_state("sim", await place(venue, b)))
    engine.cancel_order("demo", "BTCUSDT", client_order_id=b.client_order_id)
    # C: acknowledged as NEW, then partly filled by someone selling into it while we were down
    c = intent(Side.BUY, "0.02", "59000")
    await journal.record_intent(c)
    await journal.record_update(update_from_state("sim", await place(venue, c)))
    engine.place_order(
        "maker",
        OrderRequest(
            symbol="BTCUSDT", client_order_id="mk-hit", side=Side.SELL, order_type=OrderType.LIMIT,
            quantity=D("0.005"), price=D("59000"), time_in_force=TimeInForce.IOC,
        ),
    )  # fmt: skip
    # E: the POST's answer (FILLED) was journaled, the daemon died before the stream's fills
    rest(engine, Side.SELL, "60002", "0.01")
    e = intent(Side.BUY, "0.01", "60002")
    await journal.record_intent(e)
    assert (await journal.record_update(update_from_state("sim", await place(venue, e))))
    assert (await journal.order(e.client_order_id)).status is S.FILLED
    # D: journaled, but the POST never left
    d = intent(Side.BUY, "0.01", "40000")
    await journal.record_intent(d)
    # an order someone placed by hand on the same account
    foreign = await venue.inner.place_order(
        OrderRequest(
            symbol="BTCUSDT", client_order_id="web_1", side=Side.SELL, order_type=OrderType.LIMIT,
            quantity=D("0.01"), price=D("70000"), time_in_force=TimeInForce.GTC,
        )
    )  # fmt: skip
    return a, b, c, d, e, foreign


@pytest.mark.parametrize("strip_cids", [True, False], ids=["trades-without-client-ids", "trades-with-client-ids"])
async def test_start_reconciles_before_ready_and_adopts_unknown_orders(autojump_clock, nursery, strip_cids):
    engine = make_engine()
    venue = FaultyVenue(engine)
    venue.strip_trade_cids = strip_cids  # Binance's trade list names orders only by the venue's id
    journal = InlineJournal()
    a, b, c, d, e, foreign = await away_from_the_venue(engine, venue, journal)
    rig = Rig(venue, journal, unknown_orders="adopt", unknown_grace=20.0)
    await rig.start(nursery)

    # ready means reconciled: no waiting needed for anything the venue could tell
    assert (await journal.order(a.client_order_id)).status is S.FILLED
    assert (await journal.order(b.client_order_id)).status is S.CANCELED
    c_now = await journal.order(c.client_order_id)
    assert (c_now.status, c_now.filled_qty) == (S.PARTIALLY_FILLED, D("0.005"))
    adopted = await journal.order("web_1")
    assert adopted is not None and adopted.status is S.NEW and adopted.venue_order_id == foreign.venue_order_id
    assert logged("order.adopted", cid="web_1")
    assert rig.state(d.client_order_id).status is S.UNKNOWN

    trades = engine.my_trades("demo", "BTCUSDT")
    fills = rig.fills()
    assert sorted(f.trade_id for f in fills) == sorted(t.trade_id for t in trades)
    assert {f.client_order_id for f in fills} == {a.client_order_id, c.client_order_id, e.client_order_id}
    assert sorted(f.trade_id for f in journal.fills(venue="sim")) == sorted(t.trade_id for t in trades)
    balances = {b.asset: b for b in rig.seen.drain(topics.BALANCE)}
    assert balances["BTC"].free == engine.balance("demo", "BTC").free
    journaled = {b.asset: b for b in journal.store.latest_balances("sim")}
    assert journaled["USDT"].free == engine.balance("demo", "USDT").free

    # D never reached the venue: after the grace period it is rejected, never sent
    await wait_for(lambda: rig.state(d.client_order_id).status is S.REJECTED)
    assert venue.posts[d.client_order_id] == 0
    assert await journal.intents_without_ack("sim") == []
    assert logged("recovery.done", venue="sim")


async def test_unknown_orders_are_cancelled_when_configured(autojump_clock, nursery):
    engine = make_engine()
    venue = FaultyVenue(engine)
    journal = InlineJournal()
    await away_from_the_venue(engine, venue, journal)
    rig = Rig(venue, journal, unknown_orders="cancel")
    await rig.start(nursery)
    await wait_for(lambda: all(o.client_order_id != "web_1" for o in engine.open_orders("demo")))
    assert logged("order.foreign", cid="web_1", action="cancel")
    assert (await journal.order("web_1")).status is S.CANCELED


async def test_a_restart_publishes_nothing_twice(autojump_clock, nursery):
    engine = make_engine()
    venue = FaultyVenue(engine)
    journal = InlineJournal()
    await away_from_the_venue(engine, venue, journal)
    first = Rig(venue, journal)
    await first.start(nursery)
    assert first.fills()
    first.scope.cancel()
    await trio.sleep(1)
    second = Rig(venue, journal)
    await second.start(nursery)
    await trio.sleep(5)
    assert second.fills() == []
    assert [u for u in second.updates() if u.status is S.FILLED] == []


async def test_fills_missed_while_the_user_stream_was_down_are_recovered_once(autojump_clock, nursery):
    engine = make_engine()
    venue = FaultyVenue(engine)
    venue.strip_trade_cids = True
    rig = Rig(venue, down_after=5.0)
    await rig.start(nursery)
    orders = [intent(Side.BUY, "0.01", "59000"), intent(Side.BUY, "0.01", "58000")]
    await rig.submit(*orders)
    await wait_for(lambda: len(engine.open_orders("demo")) == 2)

    venue.user_stream_down = True
    venue.drop_user_stream()
    # while nobody listens, both bids are hit
    engine.place_order(
        "maker",
        OrderRequest(
            symbol="BTCUSDT", client_order_id="mk-sweep", side=Side.SELL, order_type=OrderType.LIMIT,
            quantity=D("0.02"), price=D("58000"), time_in_force=TimeInForce.IOC,
        ),
    )  # fmt: skip
    await wait_for(lambda: rig.gateway.order_entry == "down")
    assert rig.venue_statuses()[-1].state == "down"
    assert rig.fills() == []

    venue.user_stream_down = False
    await wait_for(lambda: len(rig.fills()) == 2)
    await trio.sleep(5)
    trades = engine.my_trades("demo", "BTCUSDT")
    assert sorted(f.trade_id for f in rig.fills()) == sorted(t.trade_id for t in trades)
    for o in orders:
        assert rig.state(o.client_order_id).status is S.FILLED
        assert (await rig.journal.order(o.client_order_id)).status is S.FILLED
    assert rig.gateway.order_entry == "up" and rig.gateway.stream_reconnects >= 1
    assert logged("recovery.done", fills_recovered="2")


async def test_a_malformed_stream_frame_triggers_a_reconciliation(autojump_clock, nursery):
    from venues.base import StreamNotice

    engine = make_engine()
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    before = rig.gateway.reconciles
    order = intent(Side.BUY, "0.01", "59000")
    await rig.submit(order)
    await wait_for(lambda: len(engine.open_orders("demo")) == 1)
    venue.mute_user_events = True  # the fill's frame is "unreadable"
    rest(engine, Side.SELL, "59000", "0.01")
    for stream in venue._user_streams:
        stream.inner.push(StreamNotice(kind="malformed_frame", detail="test"))
    await wait_for(lambda: rig.gateway.reconciles > before and rig.fills())
    assert rig.state(order.client_order_id).status is S.FILLED


async def test_the_journal_maps_venue_order_ids_per_symbol():
    journal = InlineJournal()
    for symbol, cid in (("BTCUSDT", "btc-order"), ("ETHUSDT", "eth-order")):
        await journal.record_update(
            update_from_state(
                "sim",
                await FaultyVenue(make_engine()).inner.place_order(
                    OrderRequest(
                        symbol=symbol, client_order_id=cid, side=Side.BUY, order_type=OrderType.LIMIT,
                        quantity=D("0.1"), price=D("1000"), time_in_force=TimeInForce.GTC,
                    )
                ),
            )
        )  # fmt: skip
    btc = await journal.orders_by_venue_order_id("sim", "BTCUSDT", ["1", "2"])
    eth = await journal.orders_by_venue_order_id("sim", "ETHUSDT", ["1"])
    assert {k: v.client_order_id for k, v in btc.items()} == {"1": "btc-order"}
    assert {k: v.client_order_id for k, v in eth.items()} == {"1": "eth-order"}
