"""A self-trade is two fills under one trade id, and each must be booked once.

When a buy and a sell of the same account meet (two executions working
opposite sides of one symbol, or an order placed by hand), a venue without
self-trade prevention (Binance's STP mode NONE, and the sim venue) reports one
trade id twice: once for the buyer's order, once for the seller's. Identified
by (venue, symbol, trade id) alone, the second leg was taken for a duplicate:
the journal dropped it (``journal.fill_differs``), the ledger never booked it,
and the daemon's balances parted from the venue's. Found by the crash test
(tests/integration/test_crash_recovery.py). A fill is now identified by
(venue, symbol, trade id, side), and recovery re-reads the venue's trades from
the last journaled id itself, so a leg missed by a kill between the two is found.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

from actors.gateway import prepare_order
from actors.ledger import Ledger
from actors.order_state import fill_from_trade, update_from_state
from actors.positions_core import FillOutcome, PositionKeeper, PositionsConfig
from actors.risk_exposure import ExposureBook
from daemon.journal_store import SCHEMA_VERSION, JournalStore, migrate
from daemon.messages import Fill
from daemon.model import Side
from tests.actors.test_gateway import Rig
from tests.actors.venue_fakes import BTC, FaultyVenue, InlineJournal, fresh_log, intent, make_engine  # noqa: F401 (autouse fixture)
from venues.base import Balance


def leg(side: Side, trade_id: str = "91") -> Fill:
    """One side of a self-trade of 0.5 BTC at 100: the buyer made it, the seller took it."""
    buyer = side is Side.BUY
    return Fill(
        venue="sim", symbol="BTCUSDT", client_order_id="td-b-1" if buyer else "td-s-1", trade_id=trade_id, side=side,
        price=D("100"), qty=D("0.5"), fee=D("0.0005") if buyer else D("0.05"), fee_asset="BTC" if buyer else "USDT",
        is_maker=buyer, venue_order_id="7" if buyer else "8", venue_ms=1_700_000_000_000,
    )  # fmt: skip


def test_the_journal_keeps_both_legs_and_still_ignores_a_repeat(tmp_path):
    with JournalStore.open(tmp_path / "journal.sqlite") as store:
        assert store.record_fill(leg(Side.BUY)) is True
        assert store.record_fill(leg(Side.SELL)) is True  # was False: taken for a repeat of the buy, lost
        assert store.record_fill(leg(Side.SELL)) is False
        assert store.record_fill(leg(Side.BUY)) is False
        assert sorted(f.fill.side for f in store.fills()) == [Side.BUY, Side.SELL]
        assert store.last_trade_id("sim", "BTCUSDT") == "91"


def test_an_older_journal_is_migrated_with_its_fills_and_their_order(tmp_path):
    path = tmp_path / "journal.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=3)
    for row_id, trade_id in ((4, "90"), (9, "91")):
        conn.execute(
            "INSERT INTO fills (id, venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset, "
            "is_maker, venue_ms, recorded_ms, exec_id) "
            f"VALUES ({row_id}, 'sim', 'BTCUSDT', 'td-b-1', '{trade_id}', 'BUY', '100', '0.5', '0.0005', 'BTC', "
            "1, 5, 6, 'b')"
        )
    conn.close()
    with JournalStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION > 3
        assert [(f.seq, f.fill.trade_id) for f in store.fills()] == [(4, "90"), (9, "91")]
        assert store.record_fill(leg(Side.SELL)) is True
        assert store.record_fill(leg(Side.BUY)) is False


def test_the_ledger_the_position_keeper_and_the_risk_book_book_both_legs():
    book = Ledger([BTC])
    book.set_balances("sim", [Balance(asset="BTC", free=D("1"), locked=D(0)), Balance(asset="USDT", free=D("1000"), locked=D(0))])
    assert not book.apply_fill(leg(Side.BUY)).duplicate
    assert not book.apply_fill(leg(Side.SELL)).duplicate
    assert book.apply_fill(leg(Side.SELL)).duplicate
    assert book.has_fill("sim", "91", "BTCUSDT")
    balances = book.balances("sim")
    assert (balances[("sim", "BTC")], balances[("sim", "USDT")]) == (D("0.9995"), D("999.95"))  # only the fees left

    keeper = PositionKeeper(PositionsConfig(), [BTC])
    outcomes = [keeper.apply_fill(leg(side))[0] for side in (Side.BUY, Side.SELL, Side.SELL)]
    assert outcomes == [FillOutcome.APPLIED, FillOutcome.APPLIED, FillOutcome.DUPLICATE]

    risk = ExposureBook()
    risk.add_instruments([BTC])
    assert [risk.on_fill(leg(side)) for side in (Side.BUY, Side.SELL, Side.SELL)] == [True, True, False]


async def test_recovery_finds_the_leg_a_kill_left_out(autojump_clock, nursery):
    """The daemon journaled the buyer's leg and was killed before the seller's: after the
    restart's reconciliation both are journaled and published, the seller's once."""
    engine = make_engine()
    venue = FaultyVenue(engine)
    journal = InlineJournal()
    buy = intent(Side.BUY, "0.01", "60000", seq=1)
    sell = intent(Side.SELL, "0.01", "60000", seq=2)
    for order in (buy, sell):
        await journal.record_intent(order)
        await journal.record_update(update_from_state("sim", await venue.inner.place_order(prepare_order(order, BTC))))
    (trade_a, trade_b) = engine.my_trades("demo", "BTCUSDT")
    assert trade_a.trade_id == trade_b.trade_id and {trade_a.side, trade_b.side} == {Side.BUY, Side.SELL}
    first = trade_a if trade_a.side is Side.BUY else trade_b
    assert await journal.record_fill(fill_from_trade("sim", first, buy.client_order_id))

    rig = Rig(venue, journal)
    await rig.start(nursery)
    journaled = sorted((f.trade_id, f.side, f.client_order_id) for f in journal.fills(venue="sim"))
    assert journaled == [(first.trade_id, Side.BUY, buy.client_order_id), (first.trade_id, Side.SELL, sell.client_order_id)]
    assert [(f.side, f.client_order_id) for f in rig.fills()] == [(Side.SELL, sell.client_order_id)]
