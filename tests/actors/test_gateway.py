"""gateway[venue] under MockClock against a simulated venue with faults: sending, unknown
outcomes, rate limits, cancels, duplicated and reordered events."""

from __future__ import annotations

import random
from decimal import Decimal as D

import msgspec
import pytest
import trio

from actors.gateway import Gateway, GatewayConfig, prepare_order
from actors.order_state import Source
from daemon import topics
from daemon.bus import Bus
from daemon.health import Health, Level
from daemon.messages import BalanceUpdate, CancelAllOrders, CancelOrder, OrderUpdate
from daemon.model import FilterViolation, OrderStatus, OrderType, Side, TimeInForce
from daemon.supervisor import Registry
from tests.actors.venue_fakes import (  # noqa: F401 (fresh_log: an autouse fixture)
    fresh_log,
    BTC,
    Collector,
    FaultyVenue,
    InlineJournal,
    intent,
    logged,
    make_engine,
    rest,
    wait_for,
)

S = OrderStatus
ALL_TOPICS = (topics.ORDER_UPDATE, topics.FILL, topics.BALANCE, topics.VENUE_STATUS, topics.INSTRUMENTS)


class Rig:
    """A gateway on a faulty simulated venue, with its journal and everything it published."""

    def __init__(self, venue: FaultyVenue, journal: InlineJournal | None = None, **config) -> None:
        self.venue = venue
        self.engine = venue.engine
        self.bus = Bus()
        self.journal = journal or InlineJournal()
        self.health = Health(Registry())
        self.instruments: dict = {}
        defaults = dict(unknown_grace=30.0, down_after=5.0)
        self.gateway = Gateway(
            "sim",
            venue,
            bus=self.bus,
            journal=self.journal,
            instruments=self.instruments,
            symbols=["BTCUSDT", "ETHUSDT"],
            config=GatewayConfig(**(defaults | config)),
            health=self.health,
            rng=random.Random(3),
        )
        self.seen = Collector(self.bus, *ALL_TOPICS)
        self.scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> Gateway:
        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with self.scope:
                await self.gateway.run(task_status=task_status)

        await nursery.start(run)
        return self.gateway

    async def submit(self, *intents) -> None:
        """As the risk sentinel does: journal the intent, then hand it to the gateway."""
        for i in intents:
            assert await self.journal.record_intent(i)
            await self.bus.publish(topics.orders("sim"), i)

    def updates(self, cid: str | None = None) -> list[OrderUpdate]:
        self._updates = getattr(self, "_updates", []) + self.seen.drain(topics.ORDER_UPDATE)
        return [u for u in self._updates if cid is None or u.client_order_id == cid]

    def statuses(self, cid: str) -> list[OrderStatus]:
        return [u.status for u in self.updates(cid)]

    def fills(self):
        self._fills = getattr(self, "_fills", []) + self.seen.drain(topics.FILL)
        return self._fills

    def venue_statuses(self):
        self._vs = getattr(self, "_vs", []) + self.seen.drain(topics.VENUE_STATUS)
        return self._vs

    def state(self, cid: str):
        return self.gateway.table.get(cid)


@pytest.fixture
def engine():
    return make_engine()


# --- rounding and local checks ------------------------------------------------------------------


def test_prepare_order_rounds_after_the_algorithm_and_checks_again():
    buy = intent(Side.BUY, "0.0123456", "59999.999")
    req = prepare_order(buy, BTC)
    assert (req.quantity, req.price, req.time_in_force) == (D("0.01234"), D("59999.99"), TimeInForce.GTC)
    sell = intent(Side.SELL, "0.0123456", "60000.001")
    assert prepare_order(sell, BTC).price == D("60000.01")  # a sell rounds up: never more aggressive
    with pytest.raises(FilterViolation) as err:
        prepare_order(intent(Side.BUY, "0.000004", "60000"), BTC)  # truncates to zero
    assert err.value.filter == "LOT_SIZE"
    with pytest.raises(FilterViolation) as err:
        prepare_order(intent(Side.BUY, "0.00005", "60000"), BTC)  # 3 USDT < 5
    assert err.value.filter == "NOTIONAL"
    market = intent(Side.BUY, "0.00005", None, order_type=OrderType.MARKET, tif=None)
    with pytest.raises(FilterViolation):
        prepare_order(market, BTC, reference_price=D("60000"))
    assert prepare_order(market, BTC).price is None  # without a reference the notional is the venue's to judge
    maker = prepare_order(intent(Side.BUY, "0.01", "60000", order_type=OrderType.LIMIT_MAKER), BTC)
    assert maker.time_in_force is None


async def test_orders_are_rounded_journaled_then_published(autojump_clock, nursery, engine):
    rest(engine, Side.SELL, "60000", "1")
    rig = Rig(FaultyVenue(engine))
    await rig.start(nursery)
    assert rig.gateway.ready.is_set() and rig.seen.drain(topics.INSTRUMENTS)
    resting, tiny = intent(Side.BUY, "0.0123456", "59999.999"), intent(Side.BUY, "0.000004", "60000")
    await rig.submit(resting, tiny)
    await wait_for(lambda: S.NEW in rig.statuses(resting.client_order_id) and rig.statuses(tiny.client_order_id))
    assert rig.statuses(resting.client_order_id) == [S.PENDING_NEW, S.NEW]
    (at_venue,) = engine.open_orders("demo")
    assert (at_venue.quantity, at_venue.price) == (D("0.01234"), D("59999.99"))
    journaled = await rig.journal.order(resting.client_order_id)
    assert journaled.status is S.NEW and journaled.venue_order_id == at_venue.venue_order_id
    # the order the filters refuse is rejected with the reason and never sent
    (rejected,) = rig.updates(tiny.client_order_id)
    assert rejected.status is S.REJECTED and "LOT_SIZE" in rejected.reason
    assert rig.venue.posts[tiny.client_order_id] == 0 and rig.venue.posts[resting.client_order_id] == 1
    assert (await rig.journal.order(tiny.client_order_id)).status is S.REJECTED
    assert await rig.journal.intents_without_ack("sim") == []


async def test_an_intent_delivered_twice_is_sent_once(autojump_clock, nursery, engine):
    rig = Rig(FaultyVenue(engine))
    await rig.start(nursery)
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await rig.bus.publish(topics.orders("sim"), order)
    await wait_for(lambda: S.NEW in rig.statuses(order.client_order_id))
    await trio.sleep(1)
    assert rig.venue.posts[order.client_order_id] == 1
    assert logged("order.duplicate_intent", cid=order.client_order_id)


# --- fills --------------------------------------------------------------------------------------


async def test_duplicated_and_reordered_user_events_give_each_fill_once(autojump_clock, nursery, engine):
    for i in range(10):
        rest(engine, Side.SELL, str(60000 + i), "0.003")
    venue = FaultyVenue(engine)
    venue.duplicate_events = True
    venue.reorder_window = 5
    rig = Rig(venue)
    await rig.start(nursery)
    orders = [intent(Side.BUY, "0.004", "60010", tif=TimeInForce.IOC) for _ in range(6)]
    await rig.submit(*orders)
    await wait_for(lambda: all(rig.state(o.client_order_id) and rig.state(o.client_order_id).is_final for o in orders))
    await trio.sleep(2)
    venue_trades = engine.my_trades("demo", "BTCUSDT")
    published = rig.fills()
    assert sorted(f.trade_id for f in published) == sorted(t.trade_id for t in venue_trades)
    assert len({f.trade_id for f in published}) == len(published) == len(venue_trades) > 6
    assert sorted(f.trade_id for f in rig.journal.fills(venue="sim")) == sorted(t.trade_id for t in venue_trades)
    for o in orders:
        assert rig.venue.posts[o.client_order_id] == 1
        final = engine.query_order("demo", "BTCUSDT", client_order_id=o.client_order_id)
        ours = rig.state(o.client_order_id)
        assert (ours.status, ours.filled_qty) == (final.status, final.filled_qty)
        assert (await rig.journal.order(o.client_order_id)).status is final.status
    assert logged("order.transition_invalid") == []


async def test_queued_stream_events_share_one_journal_transaction(autojump_clock, nursery, engine):
    rig = Rig(FaultyVenue(engine))
    await rig.start(nursery)
    await trio.sleep(1)
    rig.seen.drain(topics.BALANCE)  # the start's reconciliation
    events = [BalanceUpdate(venue="sim", asset="USDT", free=D(1000 + i), locked=D(0)) for i in range(50)]
    async with rig.gateway._lock:  # the journal is busy: events queue up meanwhile
        for event in events:
            rig.gateway._events_send.send_nowait((Source.EVENT, event))
        before = rig.journal.batches
    await wait_for(lambda: rig.journal.batches > before)
    await trio.sleep(1)
    assert rig.journal.batches - before == 1
    assert rig.seen.drain(topics.BALANCE) == events  # published after the journal, in order
    usdt = [b for b in rig.journal.store.latest_balances("sim") if b.asset == "USDT"]
    assert usdt[0].free == D(1049)


# --- unknown outcomes -------------------------------------------------------------------------


async def test_unknown_outcome_of_an_executed_post_is_settled_by_query(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    venue.mute_user_events = True  # only the query can tell
    venue.post_faults.append("unknown_after")
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await wait_for(lambda: S.NEW in rig.statuses(order.client_order_id))
    assert rig.statuses(order.client_order_id) == [S.PENDING_NEW, S.UNKNOWN, S.NEW]
    assert logged("order.unknown", cid=order.client_order_id)
    assert logged("order.settled", cid=order.client_order_id)
    assert venue.posts[order.client_order_id] == 1 and venue.calls["query_order"] >= 1
    assert len(engine.open_orders("demo")) == 1


async def test_unknown_outcome_of_a_post_that_never_arrived_becomes_rejected_after_grace(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue, unknown_grace=30.0)
    await rig.start(nursery)
    venue.post_faults.append("unknown_before")
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await wait_for(lambda: S.UNKNOWN in rig.statuses(order.client_order_id))
    unknown_at = trio.current_time()
    await wait_for(lambda: S.REJECTED in rig.statuses(order.client_order_id))
    assert trio.current_time() - unknown_at >= 30.0
    rejected = rig.updates(order.client_order_id)[-1]
    assert "never reached the venue" in rejected.reason
    assert venue.posts[order.client_order_id] == 1  # asked about, never sent again
    assert venue.calls["query_order"] >= 3 and venue.calls["my_trades"] >= 2
    assert engine.open_orders("demo") == []
    assert rig.state(order.client_order_id).inferred


async def test_a_duplicate_refusal_means_the_order_arrived(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    venue.mute_user_events = True
    order = intent(Side.BUY, "0.01", "50000")
    # an earlier attempt of this very id is resting at the venue already
    await venue.inner.place_order(prepare_order(order, BTC))
    await rig.submit(order)
    await wait_for(lambda: S.NEW in rig.statuses(order.client_order_id))
    assert logged("order.duplicate", cid=order.client_order_id)
    assert S.REJECTED not in rig.statuses(order.client_order_id)
    assert len(engine.open_orders("demo")) == 1


async def test_venue_unreachable_is_retried_with_the_same_id(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    venue.post_faults.extend(["unavailable", "unavailable"])
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await wait_for(lambda: S.NEW in rig.statuses(order.client_order_id))
    assert venue.posts[order.client_order_id] == 3  # never reached: the same id may go again
    assert len(engine.open_orders("demo")) == 1


# --- rate limits ------------------------------------------------------------------------------


async def test_a_429_pauses_sending_for_retry_after(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    venue.post_faults.append("rate_limited:5")
    first, second = intent(Side.BUY, "0.01", "50000"), intent(Side.BUY, "0.01", "50001")
    await rig.submit(first)
    await wait_for(lambda: rig.gateway.order_entry == "rate_limited")
    limited_at = venue.post_times[0]
    assert rig.health.summary()[0] is Level.DEGRADED
    await rig.submit(second)
    await wait_for(lambda: S.NEW in rig.statuses(first.client_order_id) and S.NEW in rig.statuses(second.client_order_id))
    assert all(t - limited_at >= 5.0 for t in venue.post_times[1:])
    assert venue.posts[first.client_order_id] == 2  # refused before the engine, then sent again
    states = [(s.state, s.retry_after) for s in rig.venue_statuses()]
    assert ("rate_limited", 5.0) in states and states[-1][0] == "up"
    assert logged("venue.rate_limited", venue="sim")
    assert rig.health.summary()[0] is Level.HEALTHY


async def test_an_order_that_cannot_be_sent_in_time_is_rejected(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue, order_max_wait=30.0)
    await rig.start(nursery)
    venue.post_faults.append("rate_limited:100")
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await wait_for(lambda: S.REJECTED in rig.statuses(order.client_order_id))
    assert trio.current_time() - venue.post_times[0] == pytest.approx(30.0, abs=0.1)
    assert "not sent within 30s" in rig.updates(order.client_order_id)[-1].reason
    assert venue.posts[order.client_order_id] == 1
    await trio.sleep(120)
    assert venue.posts[order.client_order_id] == 1 and engine.open_orders("demo") == []


async def test_a_ban_halts_the_venue_with_an_alert(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    venue.post_faults.append("banned:120")
    await rig.submit(intent(Side.BUY, "0.01", "50000"))
    await wait_for(lambda: rig.gateway.order_entry == "banned")
    assert rig.venue_statuses()[-1].state == "banned"
    level, reasons = rig.health.summary()
    assert level is Level.CRITICAL and any("banned" in r for r in reasons)
    assert logged("venue.banned", alert="true")


# --- cancels ----------------------------------------------------------------------------------


async def test_cancel_goes_pending_cancel_then_canceled(autojump_clock, nursery, engine):
    rig = Rig(FaultyVenue(engine))
    await rig.start(nursery)
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await wait_for(lambda: S.NEW in rig.statuses(order.client_order_id))
    await rig.bus.publish(topics.orders("sim"), CancelOrder(venue="sim", symbol="BTCUSDT", client_order_id=order.client_order_id, reason="test"))
    await wait_for(lambda: S.CANCELED in rig.statuses(order.client_order_id))
    assert rig.statuses(order.client_order_id)[-2:] == [S.PENDING_CANCEL, S.CANCELED]
    assert engine.open_orders("demo") == []
    assert (await rig.journal.order(order.client_order_id)).status is S.CANCELED


async def test_a_cancel_during_the_post_is_sent_once_the_venue_answers(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine, latency=2.0)
    rig = Rig(venue)
    await rig.start(nursery)
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await wait_for(lambda: venue.posts[order.client_order_id] == 1)
    await rig.bus.publish(topics.orders("sim"), CancelOrder(venue="sim", symbol="BTCUSDT", client_order_id=order.client_order_id))
    await wait_for(lambda: S.CANCELED in rig.statuses(order.client_order_id))
    assert logged("order.cancel_deferred", cid=order.client_order_id)
    assert engine.open_orders("demo") == []


async def test_a_cancel_before_sending_means_it_is_never_sent(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    venue.post_faults.append("rate_limited:10")
    blocker, queued = intent(Side.BUY, "0.01", "50000"), intent(Side.BUY, "0.01", "50001")
    await rig.submit(blocker, queued)
    await wait_for(lambda: rig.gateway.order_entry == "rate_limited")
    await rig.bus.publish(topics.orders("sim"), CancelOrder(venue="sim", symbol="BTCUSDT", client_order_id=queued.client_order_id))
    await wait_for(lambda: S.CANCELED in rig.statuses(queued.client_order_id))
    await trio.sleep(20)
    assert venue.posts[queued.client_order_id] == 0
    assert [o.client_order_id for o in engine.open_orders("demo")] == [blocker.client_order_id]


async def test_cancel_all_orders(autojump_clock, nursery, engine):
    rig = Rig(FaultyVenue(engine))
    await rig.start(nursery)
    orders = [intent(Side.BUY, "0.01", str(50000 + i)) for i in range(3)] + [intent(Side.BUY, "0.1", "3000", symbol="ETHUSDT")]
    await rig.submit(*orders)
    await wait_for(lambda: len(engine.open_orders("demo")) == 4)
    await rig.bus.publish(topics.orders("sim"), CancelAllOrders(venue="sim", symbol="BTCUSDT"))
    await wait_for(lambda: all(S.CANCELED in rig.statuses(o.client_order_id) for o in orders[:3]))
    assert [o.symbol for o in engine.open_orders("demo")] == ["ETHUSDT"]
    await rig.bus.publish(topics.orders("sim"), CancelAllOrders(venue="sim"))
    await wait_for(lambda: engine.open_orders("demo") == [])


# --- impossible transitions -------------------------------------------------------------------


async def test_an_impossible_event_is_logged_and_the_order_looked_up(autojump_clock, nursery, engine):
    venue = FaultyVenue(engine)
    rig = Rig(venue)
    await rig.start(nursery)
    order = intent(Side.BUY, "0.01", "50000")
    await rig.submit(order)
    await wait_for(lambda: S.NEW in rig.statuses(order.client_order_id))
    await rig.bus.publish(topics.orders("sim"), CancelOrder(venue="sim", symbol="BTCUSDT", client_order_id=order.client_order_id))
    await wait_for(lambda: S.CANCELED in rig.statuses(order.client_order_id))
    queries = venue.calls["query_order"]
    bogus = rig.updates(order.client_order_id)[-1]
    trades_after_cancel = msgspec.structs.replace(bogus, status=S.PARTIALLY_FILLED, filled_qty=D("0.005"))
    rig.gateway._events_send.send_nowait((Source.EVENT, trades_after_cancel))
    await wait_for(lambda: venue.calls["query_order"] > queries)
    assert logged("order.transition_invalid", cid=order.client_order_id)
    assert rig.state(order.client_order_id).status is S.CANCELED
    assert rig.statuses(order.client_order_id)[-1] is S.CANCELED  # nothing impossible was published
    assert rig.gateway.counts["invalid"] == 1
