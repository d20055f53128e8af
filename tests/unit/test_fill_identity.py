"""A fill is identified by (venue, symbol, trade id, side), everywhere it is deduplicated.

Binance (and the sim venue, which mirrors it) numbers trades per symbol, so a
BTCUSDT trade and an ETHUSDT trade at one venue routinely share a trade id.
Keyed by (venue, trade id), the second one was taken for a duplicate: the
journal dropped it, so it was never published and no position saw it.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

from actors.ledger import Ledger
from actors.positions_core import FillOutcome, PositionKeeper, PositionsConfig
from actors.risk_exposure import ExposureBook
from daemon.journal_store import SCHEMA_VERSION, JournalStore, migrate
from daemon.messages import Fill
from daemon.model import Instrument, Side

BTC = Instrument(venue="bnb", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"))
ETH = Instrument(venue="bnb", symbol="ETHUSDT", base="ETH", quote="USDT", tick_size=D("0.01"), step_size=D("0.0001"))


def fill(symbol: str, trade_id: str = "7", qty: str = "0.5", venue: str = "bnb") -> Fill:
    return Fill(
        venue=venue, symbol=symbol, client_order_id=f"td-x-{symbol}", trade_id=trade_id, side=Side.BUY,
        price=D("100"), qty=D(qty), fee=D("0.1"), fee_asset="USDT", is_maker=True, venue_ms=1_700_000_000_000,
    )  # fmt: skip


def test_the_journal_keeps_two_symbols_trades_that_share_an_id(tmp_path):
    with JournalStore.open(tmp_path / "journal.sqlite") as store:
        assert store.record_fill(fill("BTCUSDT")) is True
        assert store.record_fill(fill("ETHUSDT")) is True  # was False: taken for a duplicate, lost
        assert store.record_fill(fill("ETHUSDT")) is False  # a real duplicate is still one
        assert store.record_fill(fill("BTCUSDT", venue="other")) is True
        kept = [(f.fill.venue, f.fill.symbol, f.fill.trade_id) for f in store.fills()]
        assert kept == [("bnb", "BTCUSDT", "7"), ("bnb", "ETHUSDT", "7"), ("other", "BTCUSDT", "7")]
        assert store.last_trade_ids() == {("bnb", "BTCUSDT"): "7", ("bnb", "ETHUSDT"): "7", ("other", "BTCUSDT"): "7"}


def test_a_version_2_journal_is_rebuilt_with_its_fills_and_their_order(tmp_path):
    path = tmp_path / "journal.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=2)
    for row_id, trade_id in ((5, "10"), (9, "3")):
        conn.execute(
            "INSERT INTO fills (id, venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset, "
            "is_maker, venue_ms, recorded_ms, exec_id) "
            f"VALUES ({row_id}, 'bnb', 'BTCUSDT', 'td-e1-0', '{trade_id}', 'BUY', '100', '1', '0', 'USDT', "
            "0, 5, 6, 'e1')"
        )
    conn.close()

    with JournalStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 3
        assert [(f.seq, f.fill.trade_id) for f in store.fills(exec_id="e1")] == [(5, "10"), (9, "3")]
        assert store.record_fill(fill("ETHUSDT", trade_id="10")) is True
        assert store.record_fill(fill("BTCUSDT", trade_id="10")) is False
        indexes = {row[0] for row in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"fills_by_instrument", "fills_by_order", "fills_by_execution"} <= indexes


def test_the_ledger_books_both_and_still_ignores_a_repeat():
    book = Ledger([BTC, ETH])
    assert not book.apply_fill(fill("BTCUSDT")).duplicate
    assert not book.apply_fill(fill("ETHUSDT")).duplicate
    assert book.apply_fill(fill("ETHUSDT")).duplicate
    assert book.has_fill("bnb", "7", "ETHUSDT") and not book.has_fill("bnb", "7", "SOLUSDT")
    assert book.has_fill("bnb", "7") and not book.has_fill("bnb", "8")


def test_the_position_keeper_and_the_risk_book_count_both():
    keeper = PositionKeeper(PositionsConfig(), [BTC, ETH])
    assert [keeper.apply_fill(fill(s))[0] for s in ("BTCUSDT", "ETHUSDT", "ETHUSDT")] == [
        FillOutcome.APPLIED,
        FillOutcome.APPLIED,
        FillOutcome.DUPLICATE,
    ]
    exposure = ExposureBook()
    exposure.add_instruments([BTC, ETH])
    assert [exposure.on_fill(fill(s)) for s in ("BTCUSDT", "ETHUSDT", "ETHUSDT")] == [True, True, False]
    assert exposure.positions[("bnb", "ETHUSDT")] == D("0.5")
