"""The position keeper's core: waiting fills, duplicates, balance adoption and mismatch checks."""

from decimal import Decimal as D

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.positions_core import (
    SOURCE_ADOPTED,
    SOURCE_BEFORE,
    Adoption,
    FillOutcome,
    PositionKeeper,
    PositionsConfig,
    decimals,
)
from daemon.config import ConfigError, parse
from daemon.journal_store import JournaledBalances
from daemon.messages import BalanceUpdate, Fill, Quote
from daemon.model import Instrument, Side

BTCUSDT = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"))
ETHUSDT = Instrument(venue="sim", symbol="ETHUSDT", base="ETH", quote="USDT", tick_size=D("0.01"), step_size=D("0.0001"))

_ids = iter(range(1, 10**9))


def fill(side=Side.BUY, qty="1", price="100", *, symbol="BTCUSDT", venue="sim", fee="0", fee_asset="USDT", trade_id=None):
    return Fill(
        venue=venue,
        symbol=symbol,
        client_order_id="td-e1-1",
        trade_id=str(trade_id if trade_id is not None else next(_ids)),
        side=side,
        price=D(price),
        qty=D(qty),
        fee=D(fee),
        fee_asset=fee_asset,
        is_maker=False,
        venue_ms=1_000,
    )


def balance(asset, total, venue="sim", locked="0"):
    return BalanceUpdate(venue=venue, asset=asset, free=D(total) - D(locked), locked=D(locked), venue_ms=5)


def keeper(instruments=(BTCUSDT, ETHUSDT), **config):
    return PositionKeeper(PositionsConfig(**config), instruments)


def adopt_all(k, updates, now=0.0):
    for adoption in k.on_balances(updates, now):
        k.apply_adoption(adoption)


# --- fills ------------------------------------------------------------------------------


def test_a_fill_is_booked_once_however_often_it_arrives():
    k = keeper()
    f = fill(qty="2")
    assert k.apply_fill(f)[0] is FillOutcome.APPLIED
    assert k.apply_fill(f)[0] is FillOutcome.DUPLICATE
    assert k.ledger.quantity("sim", "BTCUSDT") == D("2")
    assert (k.fills_applied, k.duplicates) == (1, 1)


def test_fills_of_an_unknown_instrument_wait_and_are_booked_in_order_when_it_arrives():
    k = keeper(instruments=(), method="fifo")
    first, second, third = fill(qty="1", price="100"), fill(qty="1", price="110"), fill(Side.SELL, "1", "120")
    for f in (first, second, third):
        assert k.apply_fill(f)[0] is FillOutcome.PENDING
    assert k.apply_fill(second)[0] is FillOutcome.DUPLICATE
    assert k.pending_count() == 3 and k.pending_keys() == ("sim:BTCUSDT",)
    assert k.ledger.positions() == []

    booked = k.add_instruments([BTCUSDT])

    assert [o for o, _ in booked] == [FillOutcome.APPLIED] * 3
    assert k.pending_count() == 0
    position = k.ledger.position("sim", "BTCUSDT")
    # FIFO closed the 100 lot: journal order was kept
    assert (position.quantity, position.realised_pnl, position.avg_entry_price) == (D("1"), D("20"), D("110"))


def test_a_fill_the_ledger_cannot_book_is_kept_aside_not_raised():
    k = keeper()
    bad = fill(qty="0")
    assert k.apply_fill(bad)[0] is FillOutcome.REFUSED
    assert k.refused_count == 1 and "positive price and quantity" in k.refused[0].error
    assert k.apply_fill(bad)[0] is FillOutcome.DUPLICATE  # not reported twice
    assert k.apply_fill(fill())[0] is FillOutcome.APPLIED


def test_quotes_mark_positions_and_bad_quotes_are_counted():
    k = keeper()
    k.apply_fill(fill(qty="2", price="100"))
    assert k.on_quote(Quote(venue="sim", symbol="BTCUSDT", bid=D("109"), bid_qty=D(1), ask=D("111"), ask_qty=D(1), ts=0))
    assert k.ledger.position("sim", "BTCUSDT").unrealised_pnl == D("20")
    assert not k.on_quote(Quote(venue="sim", symbol="BTCUSDT", bid=D("NaN"), bid_qty=D(1), ask=D("1"), ask_qty=D(1), ts=0))
    assert k.bad_quotes == 1
    assert k.ledger.mark("sim", "BTCUSDT") == D("110")


def test_summary_carries_equity_pnl_and_exposure_in_the_reporting_currency():
    k = keeper()
    adopt_all(k, [balance("USDT", "1000")])
    k.apply_fill(fill(qty="2", price="100", fee="0.2"))
    k.on_quote(Quote(venue="sim", symbol="BTCUSDT", bid=D("104"), bid_qty=D(1), ask=D("106"), ask_qty=D(1), ts=0))
    s = k.summary(utc_ms=123, ts=4.5)
    # cash 1000 - 200 - 0.2, plus 2 BTC at 105
    assert s.equity == D("1009.8") and s.equity_complete
    assert (s.realised_pnl, s.unrealised_pnl, s.fees) == (D("-0.2"), D("10"), D("0.2"))
    assert (s.gross_exposure, s.net_exposure, s.open_positions) == (D("210"), D("210"), 1)
    assert (s.utc_ms, s.ts, s.balance_mismatches, s.pending_fills) == (123, 4.5, (), 0)


def test_summary_says_when_equity_leaves_something_out():
    k = keeper()
    adopt_all(k, [balance("USDT", "1000")])
    k.apply_fill(fill(qty="1", price="100"))  # BTC held, no quote yet
    s = k.summary(0, 0.0)
    assert not s.equity_complete and "BTC" in s.missing


# --- balances: adoption -------------------------------------------------------------------


def test_the_first_figure_for_an_asset_is_adopted():
    k = keeper()
    adoptions = k.on_balances([balance("USDT", "1000"), balance("BTC", "2")], now=0.0)
    assert [a.venue for a in adoptions] == ["sim"]
    assert {b.asset for b in adoptions[0].after} == {"USDT", "BTC"}
    for adoption in adoptions:
        k.apply_adoption(adoption)
    assert k.ledger.balances() == {("sim", "BTC"): D("2"), ("sim", "USDT"): D("1000")}
    assert k.on_balances([balance("USDT", "1000")], now=1.0) == []  # known now: compared, not adopted


def test_an_adoption_is_a_difference_so_a_fill_booked_meanwhile_is_kept():
    k = keeper()
    adopt_all(k, [balance("USDT", "1000")])
    k.on_balances([balance("USDT", "900")], now=0.0)
    adoption = k.adoption("sim", by="op", reason="deposit")
    k.apply_fill(fill(qty="1", price="100"))  # arrives while the adoption is being journaled
    k.apply_adoption(adoption)
    assert k.ledger.balance("sim", "USDT") == D("800")
    assert k.ledger.balance("sim", "BTC") == D("1")


def test_balances_are_not_compared_while_fills_of_the_venue_wait():
    k = keeper(instruments=(), balance_grace=0)
    adopt_all(k, [balance("USDT", "1000")])
    k.apply_fill(fill(qty="1", price="100"))  # waits: BTCUSDT unknown
    assert k.on_balances([balance("USDT", "900"), balance("BTC", "1")], now=0.0) == []  # nothing adopted either
    assert k.due(10.0, 0) == []
    k.add_instruments([BTCUSDT])
    k.recheck("sim", 10.0, all_live=True)
    # booked at last, the fill explains both figures the venue reported meanwhile
    assert k.due(10.0, 0) == []
    assert {r.asset: r.status for r in k.balance_rows()} == {"BTC": "ok", "USDT": "ok"}


def test_restore_reapplies_journaled_adoptions_as_differences():
    snapshots = [
        JournaledBalances(seq=1, recorded_ms=0, venue="sim", source=SOURCE_BEFORE, balances=(balance("USDT", "0"),)),
        JournaledBalances(seq=2, recorded_ms=0, venue="sim", source=SOURCE_ADOPTED, balances=(balance("USDT", "1000"),)),
        JournaledBalances(seq=3, recorded_ms=0, venue="sim", source=SOURCE_BEFORE, balances=(balance("USDT", "800"),)),
        JournaledBalances(seq=4, recorded_ms=0, venue="sim", source=SOURCE_ADOPTED, balances=(balance("USDT", "850"),)),
    ]
    k = keeper()
    k.apply_fill(fill(qty="2", price="100"))  # -200 USDT; fills and adoptions commute
    assert k.restore(snapshots, [balance("USDT", "850")]) == 2
    assert k.ledger.balance("sim", "USDT") == D("850")
    row = k.balance_rows()[-1]
    assert (row.asset, row.venue_total, row.status) == ("USDT", D("850"), "unchecked")  # restored, not live


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("fill"), st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 50), st.integers(90, 110)),
            st.tuples(st.just("adopt"), st.integers(0, 5000), st.integers(0, 30)),
        ),
        max_size=25,
    )
)
def test_replaying_fills_then_adoptions_rebuilds_the_live_balances(events):
    """Whatever the interleaving live, all fills then all adoptions (the replay) gives the same balances."""
    live = keeper()
    fills, adoptions = [], []
    for event in events:
        if event[0] == "fill":
            _, side, qty, price = event
            f = fill(side, str(D(qty) / 10), str(price))
            live.apply_fill(f)
            fills.append(f)
        else:
            _, usdt, btc = event
            live.on_balances([balance("USDT", str(usdt)), balance("BTC", str(D(btc) / 10))], 0.0)
            adoption = live.adoption("sim", by="op", reason="test")
            live.apply_adoption(adoption)
            adoptions.append(adoption)
    replay = keeper()
    for f in fills:
        replay.apply_fill(f)
    snapshots = []
    for i, a in enumerate(adoptions):
        snapshots.append(JournaledBalances(seq=2 * i, recorded_ms=0, venue="sim", source=SOURCE_BEFORE, balances=a.before))
        snapshots.append(JournaledBalances(seq=2 * i + 1, recorded_ms=0, venue="sim", source=SOURCE_ADOPTED, balances=a.after))
    replay.restore(snapshots, [])
    assert replay.ledger.balances() == live.ledger.balances()


# --- balances: checks ---------------------------------------------------------------------


def test_a_difference_is_declared_only_after_the_grace_period():
    k = keeper(balance_grace=10.0)
    adopt_all(k, [balance("USDT", "1000")])
    k.on_balances([balance("USDT", "990")], now=100.0)
    assert k.due(105.0, 0) == []
    assert [r.status for r in k.balance_rows()] == ["suspect"]
    [mismatch] = k.due(110.0, utc_ms=777)
    assert mismatch.venue == "sim" and mismatch.utc_ms == 777
    [difference] = mismatch.differences
    assert (difference.asset, difference.ours, difference.venue_total, difference.difference) == (
        "USDT",
        D("1000"),
        D("990"),
        D("-10"),
    )
    assert k.mismatched_venues() == ("sim",)
    assert [r.status for r in k.balance_rows()] == ["MISMATCH"]


def test_a_fill_arriving_after_the_venues_balance_clears_the_suspect():
    k = keeper(balance_grace=10.0)
    adopt_all(k, [balance("USDT", "1000"), balance("BTC", "0")])
    k.on_balances([balance("USDT", "900"), balance("BTC", "1")], now=0.0)  # the venue was faster
    k.apply_fill(fill(qty="1", price="100"))
    k.recheck("sim", 1.0)
    assert k.suspects() == {}
    assert k.due(60.0, 0) == []


def test_tolerance_is_per_asset():
    k = keeper(balance_grace=0, balance_tolerance={"USDT": D("0.5")}, default_tolerance=D("0"))
    adopt_all(k, [balance("USDT", "1000"), balance("BTC", "1")])
    k.on_balances([balance("USDT", "1000.4"), balance("BTC", "1.00001")], now=0.0)
    [mismatch] = k.due(0.0, 0)
    assert [d.asset for d in mismatch.differences] == ["BTC"]


def test_a_declared_mismatch_stays_latched_until_acknowledged():
    k = keeper(balance_grace=0)
    adopt_all(k, [balance("USDT", "1000")])
    k.on_balances([balance("USDT", "990")], now=0.0)
    assert len(k.due(0.0, 0)) == 1
    k.on_balances([balance("USDT", "1000")], now=1.0)  # agrees again: still latched
    assert k.mismatched_venues() == ("sim",)
    k.on_balances([balance("USDT", "990")], now=2.0)
    adoption = k.adoption("sim", by="op", reason="fee rebate", live_only=True)
    k.apply_adoption(adoption)
    assert k.acknowledge("sim")
    assert k.mismatched_venues() == () and k.ledger.balance("sim", "USDT") == D("990")
    assert [r.status for r in k.balance_rows()] == ["ok"]


def test_adoption_of_live_figures_leaves_out_restored_ones():
    k = keeper()
    k.restore([], [balance("USDT", "5")])
    assert k.adoption("sim", by="op", reason="r", live_only=True) is None
    assert k.adoption("sim", by="op", reason="r") is not None


# --- config -----------------------------------------------------------------------------


def test_config_section_decodes_and_rejects_bad_values():
    cfg = parse('[positions]\nmethod = "fifo"\nbalance_grace = 5.0\n[positions.balance_tolerance]\nBTC = "0.0001"\n')
    section = cfg.section("positions")
    assert section.method == "fifo" and section.tolerance("BTC") == D("0.0001") and section.tolerance("ETH") == D(0)
    with pytest.raises(ConfigError, match="positions.equity_interval: must be positive"):
        parse("[positions]\nequity_interval = 0.0\n")
    with pytest.raises(ConfigError, match="positions.method"):
        parse('[positions]\nmethod = "hifo"\n')
    with pytest.raises(ConfigError, match="positions.bogus: unknown key"):
        parse("[positions]\nbogus = 1\n")


def test_decimals_of_tick_and_step_sizes():
    assert [decimals(D(x)) for x in ("0.01", "1", "0.00001", "10", "0.50")] == [2, 0, 5, 0, 1]


def test_adoption_differences():
    a = Adoption(venue="sim", before=(balance("USDT", "10"),), after=(balance("USDT", "12", locked="3"), balance("BTC", "1")))
    assert a.deltas() == {"USDT": D("2"), "BTC": D("1")}
    assert msgspec.json.decode(msgspec.json.encode(a), type=Adoption) == a
