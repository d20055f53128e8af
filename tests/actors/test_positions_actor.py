"""The position keeper actor: replay after a restart, duplicates, marks, balance mismatches, sampling.

Fills reach the keeper the way the gateway sends them: journaled first, then
published on topics.FILL. Most tests run on trio's real clock because the
journal works in a worker thread (an autojumping clock would jump while a
commit is in flight); waits are bounded by `fail_after`. The sampling test
uses an autojumping MockClock with a journal that is only read at start-up.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
import trio
import trio.testing

from actors.positions import PositionsActor, PositionsHandle
from actors.positions_views import AckRequest
from actors.positions_core import SOURCE_ADOPTED, SOURCE_BEFORE, PositionsConfig
from daemon import topics
from daemon.bus import Bus
from daemon.control import CommandError
from daemon.health import Health, Level
from daemon.journal import Journal
from daemon.journal_store import BalanceSnapshot
from daemon.messages import BalanceMismatch, BalancesAcknowledged, BalanceUpdate, Fill, PositionsSummary, Quote
from daemon.model import Instrument, Side
from daemon.supervisor import Registry

LIMIT = 15
BTCUSDT = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"))
ETHUSDT = Instrument(venue="sim", symbol="ETHUSDT", base="ETH", quote="USDT", tick_size=D("0.01"), step_size=D("0.0001"))
BNBUSDT = Instrument(venue="sim", symbol="BNBUSDT", base="BNB", quote="USDT", tick_size=D("0.01"), step_size=D("0.001"))

_ids = iter(range(1, 10**9))


def fill(side, qty, price, *, symbol="BTCUSDT", fee="0", fee_asset="USDT", trade_id=None):
    return Fill(
        venue="sim",
        symbol=symbol,
        client_order_id="td-e1-1",
        trade_id=str(trade_id if trade_id is not None else next(_ids)),
        side=side,
        price=D(price),
        qty=D(qty),
        fee=D(fee),
        fee_asset=fee_asset,
        is_maker=True,
        venue_ms=1_700_000_000_000,
    )


def quote(symbol, bid, ask):
    return Quote(venue="sim", symbol=symbol, bid=D(bid), bid_qty=D(1), ask=D(ask), ask_qty=D(1), ts=0.0)


def balance(asset, total):
    return BalanceUpdate(venue="sim", asset=asset, free=D(total), locked=D(0), venue_ms=1)


class World:
    """A bus, a journal and keepers, started and stopped like the daemon would."""

    def __init__(self, nursery: trio.Nursery, path, instruments=None, **config) -> None:
        self.nursery = nursery
        self.path = path
        self.instruments = {} if instruments is None else instruments
        self.config = PositionsConfig(**config)
        self.bus = Bus()
        self.health = Health(Registry())
        self.journal: Journal | None = None
        self.actor: PositionsActor | None = None
        self._scope: trio.CancelScope | None = None

    async def start(self) -> PositionsActor:
        if self.journal is None:
            self.journal = Journal(self.path, durable=False)
            await self.nursery.start(self.journal.run)
        actor = PositionsActor(
            self.bus,
            self.journal,
            config=self.config,
            instruments=self.instruments,
            health=self.health,
        )
        scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await actor.run(task_status=task_status)

        await self.nursery.start(run)
        self.actor, self._scope = actor, scope
        return actor

    async def restart_process(self) -> PositionsActor:
        """Stop keeper and journal, then start both afresh on the same file (a new process)."""
        self._scope.cancel()
        journal, self.journal = self.journal, None
        journal.stop()
        with trio.fail_after(LIMIT):
            while journal.stats().running:
                await trio.sleep(0.01)
        self.bus = Bus()
        return await self.start()

    async def gateway_fill(self, f: Fill) -> bool:
        new = await self.journal.record_fill(f)
        if new:
            await self.bus.publish(topics.FILL, f)
        return new

    async def settle(self, booked: int) -> None:
        with trio.fail_after(LIMIT):
            while self.actor.keeper is None or self.actor.keeper.fills_applied < booked:
                await trio.sleep(0.005)
        await trio.testing.wait_all_tasks_blocked()

    async def control(self, body):
        return await self.bus.request(topics.POSITIONS_CONTROL, body, timeout=LIMIT)


def state(actor: PositionsActor):
    ledger = actor.keeper.ledger
    return (
        ledger.positions(include_flat=True),
        ledger.balances(),
        ledger.closed_trades,
        ledger.closed_trade_count,
        ledger.pnl(),
        ledger.equity(),
    )


async def test_positions_after_a_restart_equal_those_before(nursery, tmp_path):
    world = World(nursery, tmp_path / "journal.sqlite", {k: i for i in (BTCUSDT, ETHUSDT, BNBUSDT) for k in [(i.venue, i.symbol)]},
                  method="fifo", balance_grace=0)
    actor = await world.start()
    await world.bus.publish(topics.BALANCE, balance("USDT", "100000"))
    await world.bus.publish(topics.BALANCE, balance("BTC", "1"))
    fills = [
        fill(Side.BUY, "0.5", "64000", fee="0.0005", fee_asset="BTC"),
        fill(Side.BUY, "0.25", "64100.5", fee="6.4", fee_asset="USDT"),
        fill(Side.SELL, "0.6", "64300", fee="0.01", fee_asset="BNB"),  # no conversion rate: kept unconverted
        fill(Side.SELL, "1.2", "64200", symbol="BTCUSDT"),  # flips to short
        fill(Side.BUY, "2", "3200", symbol="ETHUSDT", fee="0.002", fee_asset="ETH"),
        fill(Side.SELL, "0.5", "3250.25", symbol="ETHUSDT"),
    ]
    for f in fills[:3]:
        assert await world.gateway_fill(f)
    await world.settle(3)
    # a venue figure that differs, then an operator adopts it (the adoption must survive the restart)
    await world.bus.publish(topics.BALANCE, balance("USDT", "90000"))
    with trio.fail_after(LIMIT):
        while not actor.keeper.mismatched_venues():
            await trio.sleep(0.005)
    await world.control(AckRequest(venue="sim", by="alice", reason="withdrawal of 10000 USDT"))
    for f in fills[3:]:
        assert await world.gateway_fill(f)
    await world.bus.publish(topics.FILL, fills[0])  # a duplicate from the stream
    await world.settle(6)
    for q in (quote("BTCUSDT", "64400", "64402"), quote("ETHUSDT", "3300", "3300.5"), quote("BNBUSDT", "600", "600.2")):
        await world.bus.publish(topics.QUOTE, q)
    await trio.testing.wait_all_tasks_blocked()
    before = state(actor)
    assert before[0][0].quantity == D("-1.0505")  # 0.5 - 0.0005 + 0.25 - 0.6 - 1.2
    assert actor.keeper.ledger.balance("sim", "BNB") == D("-0.01")

    actor = await world.restart_process()
    assert actor.keeper.fills_applied == 6 and actor.keeper.pending_count() == 0
    for q in (quote("BTCUSDT", "64400", "64402"), quote("ETHUSDT", "3300", "3300.5"), quote("BNBUSDT", "600", "600.2")):
        await world.bus.publish(topics.QUOTE, q)
    await trio.testing.wait_all_tasks_blocked()
    assert state(actor) == before
    assert actor.keeper.ledger.balance("sim", "USDT") == before[1][("sim", "USDT")]


async def test_fills_replayed_before_their_instrument_is_known_are_booked_when_it_appears(nursery, tmp_path):
    instruments = {("sim", "BTCUSDT"): BTCUSDT}
    world = World(nursery, tmp_path / "journal.sqlite", instruments)
    actor = await world.start()
    for f in (fill(Side.BUY, "1", "100"), fill(Side.BUY, "2", "3000", symbol="ETHUSDT"), fill(Side.SELL, "1", "3100", symbol="ETHUSDT")):
        await world.gateway_fill(f)
    await world.settle(1)
    with trio.fail_after(LIMIT):
        while actor.keeper.pending_count() < 2:
            await trio.sleep(0.005)
    assert world.health.summary()[0] is Level.DEGRADED

    instruments.clear()  # the new process knows nothing until the gateways load their venues
    actor = await world.restart_process()
    assert actor.keeper.pending_count() == 3 and actor.keeper.ledger.positions() == []
    reply = await PositionsHandle(world.bus, actor).query()
    assert reply.pending == ("sim:BTCUSDT", "sim:ETHUSDT")

    instruments.update({("sim", "BTCUSDT"): BTCUSDT, ("sim", "ETHUSDT"): ETHUSDT})
    reply = await PositionsHandle(world.bus, actor).query()  # a query picks up new instruments at once
    assert reply.pending == ()
    assert {(p.symbol, p.quantity, p.realised_pnl) for p in reply.positions} == {
        ("BTCUSDT", D("1"), D("0")),
        ("ETHUSDT", D("1"), D("100")),
    }
    assert world.health.summary()[0] is Level.HEALTHY


async def test_a_fill_is_booked_once_from_replay_and_stream_together(nursery, tmp_path):
    world = World(nursery, tmp_path / "journal.sqlite", {("sim", "BTCUSDT"): BTCUSDT})
    world.journal = Journal(world.path, durable=False)
    await nursery.start(world.journal.run)
    f = fill(Side.BUY, "1", "100")
    assert await world.journal.record_fill(f)
    actor = await world.start()
    assert actor.keeper.fills_applied == 1
    await world.bus.publish(topics.FILL, f)  # the stream delivers it again
    await world.bus.publish(topics.FILL, f)
    await world.bus.publish(topics.FILL, quote("BTCUSDT", "1", "2"))  # garbage on the fill topic is ignored
    await world.bus.publish(topics.FILL, fill(Side.BUY, "1", "100"))
    await world.settle(2)
    assert actor.keeper.ledger.quantity("sim", "BTCUSDT") == D("2")
    assert actor.keeper.duplicates == 2


async def test_marks_move_unrealised_pnl_and_equity(nursery, tmp_path):
    world = World(nursery, tmp_path / "journal.sqlite", {("sim", "BTCUSDT"): BTCUSDT})
    actor = await world.start()
    handle = PositionsHandle(world.bus, actor)
    await world.bus.publish(topics.BALANCE, balance("USDT", "1000"))
    await world.gateway_fill(fill(Side.BUY, "2", "100"))
    await world.settle(1)
    await world.bus.publish(topics.QUOTE, quote("BTCUSDT", "109", "111"))
    await trio.testing.wait_all_tasks_blocked()
    reply = await handle.query()
    assert [(p.quantity, p.unrealised_pnl, p.mark) for p in reply.positions] == [(D("2"), D("20"), D("110"))]
    assert (reply.summary.equity, reply.summary.equity_complete, reply.summary.gross_exposure) == (D("1020"), True, D("220"))
    await world.bus.publish(topics.QUOTE, quote("BTCUSDT", "89", "91"))
    await trio.testing.wait_all_tasks_blocked()
    assert (await handle.query()).positions[0].unrealised_pnl == D("-20")
    assert await handle.quantity("sim", "BTCUSDT") == D("2")
    assert await handle.quantity("sim", "ETHUSDT") == D("0")


async def test_a_balance_mismatch_is_published_and_cleared_by_an_acknowledgement(nursery, tmp_path):
    world = World(nursery, tmp_path / "journal.sqlite", {("sim", "BTCUSDT"): BTCUSDT}, balance_grace=0, publish_interval=0.05)
    actor = await world.start()
    with world.bus.subscribe(topics.BALANCE_CHECK) as checks, world.bus.subscribe_conflated(
        topics.POSITIONS, key=type
    ) as summaries:
        with pytest.raises(CommandError, match="no venue has a balance mismatch"):
            await world.control(AckRequest(venue=None, by="alice", reason="nothing"))
        await world.bus.publish(topics.BALANCE, balance("USDT", "1000"))
        with trio.fail_after(LIMIT):
            while actor.keeper.ledger.balance("sim", "USDT") != D("1000"):  # adopted on sight
                await trio.sleep(0.005)
        await world.bus.publish(topics.BALANCE, balance("USDT", "1000"))
        await world.bus.publish(topics.BALANCE, balance("USDT", "997.5"))  # 2.5 USDT gone at the venue
        with trio.fail_after(LIMIT):
            mismatch = await checks.receive()
        assert isinstance(mismatch, BalanceMismatch) and mismatch.venue == "sim"
        assert [(d.asset, d.ours, d.venue_total, d.difference) for d in mismatch.differences] == [
            ("USDT", D("1000"), D("997.5"), D("-2.5"))
        ]
        level, reasons = world.health.summary()
        assert level is Level.CRITICAL and "ack-balances" in reasons[0]
        with trio.fail_after(LIMIT):
            while True:
                summary = (await summaries.receive_batch())[-1]
                if isinstance(summary, PositionsSummary) and summary.balance_mismatches == ("sim",):
                    break

        reply = await world.control(AckRequest(venue=None, by="alice", reason="fee rebate reversed"))
        [ack] = reply.acknowledged
        with trio.fail_after(LIMIT):
            assert await checks.receive() == ack
        assert isinstance(ack, BalancesAcknowledged)
        assert (ack.venue, ack.by, ack.reason, [b.free for b in ack.adopted]) == ("sim", "alice", "fee rebate reversed", [D("997.5")])
        assert world.health.summary()[0] is Level.HEALTHY
        assert actor.keeper.ledger.balance("sim", "USDT") == D("997.5")

    snapshots = await world.journal.balance_snapshots(sources=(SOURCE_BEFORE, SOURCE_ADOPTED))
    assert [(s.source, [b.free for b in s.balances]) for s in snapshots] == [
        (SOURCE_BEFORE, [D("0")]),
        (SOURCE_ADOPTED, [D("1000")]),  # the first figure, adopted on sight
        (SOURCE_BEFORE, [D("1000")]),
        (SOURCE_ADOPTED, [D("997.5")]),  # the operator's acknowledgement
    ]
    actor = await world.restart_process()
    assert actor.keeper.ledger.balance("sim", "USDT") == D("997.5")
    assert actor.keeper.mismatched_venues() == ()


async def test_acknowledging_a_venue_that_reported_nothing_is_refused(nursery, tmp_path):
    world = World(nursery, tmp_path / "journal.sqlite")
    await world.start()
    with pytest.raises(CommandError, match="has reported no balances"):
        await world.control(AckRequest(venue="binance", by="alice", reason="r"))


async def test_equity_is_sampled_on_the_interval_and_summaries_are_rate_limited(nursery, autojump_clock):
    start_ms = 1_767_225_600_000
    journal = Journal(":memory:", durable=False)
    await nursery.start(journal.run)
    # balances adopted in an earlier run, so nothing is written to the journal after start-up
    await journal.record_batch(
        [
            BalanceSnapshot(venue="sim", balances=(balance("USDT", "0"),), source=SOURCE_BEFORE),
            BalanceSnapshot(venue="sim", balances=(balance("USDT", "1000"),), source=SOURCE_ADOPTED),
        ]
    )
    bus = Bus()
    actor = PositionsActor(
        bus,
        journal,
        config=PositionsConfig(equity_interval=60.0, publish_interval=5.0),
        instruments={("sim", "BTCUSDT"): BTCUSDT},
        clock_ms=lambda: start_ms + int(trio.current_time() * 1000),
    )
    with bus.subscribe(topics.POSITIONS, maxsize=10_000) as summaries:
        await nursery.start(actor.run)
        t0 = trio.current_time()
        await trio.sleep(150)  # samples at +0, +60, +120
        await bus.publish(topics.FILL, fill(Side.BUY, "1", "100"))
        await bus.publish(topics.QUOTE, quote("BTCUSDT", "119", "121"))
        await trio.sleep(131)  # +180, +240
        times, values = actor.keeper.ledger.curve.columns()
        assert times == [start_ms + int((t0 + s) * 1000) for s in (0, 60, 120, 180, 240)]
        assert values == [D("1000"), D("1000"), D("1000"), D("1020"), D("1020")]

        published = actor.published
        await bus.publish(topics.FILL, fill(Side.BUY, "0.01", "120"))
        await trio.sleep(1)
        assert actor.published == published + 1  # the first change after a quiet spell goes out at once
        for _ in range(50):  # a burst of fills, 1 s after that summary
            await bus.publish(topics.FILL, fill(Side.BUY, "0.01", "120"))
        await trio.sleep(3.9)
        assert actor.published == published + 1  # at most one summary per 5 s
        await trio.sleep(0.2)
        assert actor.published == published + 2
        assert actor.keeper.fills_applied == 52
        received = await summaries.receive_batch(limit=10_000)
    assert all(isinstance(s, PositionsSummary) for s in received) and len(received) == actor.published
    assert [s.utc_ms for s in received] == sorted(s.utc_ms for s in received)
    assert {s.utc_ms for s in received} >= set(times)  # a summary with every sample
    assert received[-1].open_positions == 1 and received[-1].equity == D("1020")  # bought at the mark


async def test_instruments_announced_on_the_bus_book_the_fills_that_waited(nursery, tmp_path):
    world = World(nursery, tmp_path / "journal.sqlite", {})
    actor = await world.start()
    await world.gateway_fill(fill(Side.BUY, "2", "3000", symbol="ETHUSDT"))
    with trio.fail_after(LIMIT):
        while actor.keeper.pending_count() < 1:
            await trio.sleep(0.005)
    await world.bus.publish(topics.INSTRUMENTS, [ETHUSDT])
    await world.settle(1)
    assert actor.keeper.ledger.quantity("sim", "ETHUSDT") == D("2") and actor.keeper.pending_count() == 0
