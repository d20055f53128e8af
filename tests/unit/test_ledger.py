"""Position accounting: cost methods, fees, flips, balances, equity, curve."""

from decimal import Decimal as D

import msgspec
import pytest

from actors.ledger import (
    CostMethod,
    EquityCurve,
    InvalidFill,
    Ledger,
    PositionSide,
    UnknownInstrument,
)
from daemon.messages import BalanceUpdate, Fill, Quote
from daemon.model import Instrument, Side
from venues.base import Balance

BTCUSDT = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"))
ETHBTC = Instrument(venue="sim", symbol="ETHBTC", base="ETH", quote="BTC", tick_size=D("0.00001"), step_size=D("0.0001"))
BNBUSDT = Instrument(venue="sim", symbol="BNBUSDT", base="BNB", quote="USDT", tick_size=D("0.01"), step_size=D("0.001"))

_ids = iter(range(1, 10**9))


def fill(side, qty, price, *, fee="0", fee_asset="USDT", symbol="BTCUSDT", venue="sim", trade_id=None, ms=0):
    return Fill(
        venue=venue,
        symbol=symbol,
        client_order_id="td-x-1",
        trade_id=str(trade_id if trade_id is not None else next(_ids)),
        side=side,
        price=D(price),
        qty=D(qty),
        fee=D(fee),
        fee_asset=fee_asset,
        is_maker=False,
        venue_ms=ms,
    )


def ledger(method=CostMethod.AVERAGE, **kw):
    return Ledger([BTCUSDT, ETHBTC, BNBUSDT], method=method, **kw)


# --- cost methods -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, realised, entry_left",
    [
        (CostMethod.AVERAGE, D("15"), D("105")),  # 120 - avg 105
        (CostMethod.FIFO, D("20"), D("110")),  # closes the 100 lot
        (CostMethod.LIFO, D("10"), D("100")),  # closes the 110 lot
    ],
)
def test_cost_methods_split_realised_and_unrealised_differently(method, realised, entry_left):
    book = ledger(method)
    book.apply_fill(fill(Side.BUY, "1", "100"))
    book.apply_fill(fill(Side.BUY, "1", "110"))
    book.apply_fill(fill(Side.SELL, "1", "120"))
    book.set_mark("sim", "BTCUSDT", D("130"))
    pos = book.position("sim", "BTCUSDT")
    assert pos.quantity == 1
    assert pos.realised_pnl == realised
    assert pos.avg_entry_price == entry_left
    assert pos.unrealised_pnl == D("130") - entry_left
    # Cash flows: -100 -110 +120, plus 1 BTC at 130 = 40, whatever the method.
    assert pos.realised_pnl + pos.unrealised_pnl == 40


def test_average_entry_only_moves_when_the_position_grows():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "2", "100"))
    book.apply_fill(fill(Side.BUY, "1", "130"))
    assert book.position("sim", "BTCUSDT").avg_entry_price == 110
    book.apply_fill(fill(Side.SELL, "1", "90"))
    pos = book.position("sim", "BTCUSDT")
    assert pos.avg_entry_price == 110
    assert pos.realised_pnl == -20


def test_short_position_gains_when_price_falls():
    book = ledger()
    book.apply_fill(fill(Side.SELL, "2", "100"))
    pos = book.position("sim", "BTCUSDT")
    assert (pos.side, pos.quantity, pos.avg_entry_price) == (PositionSide.SHORT, D(-2), D(100))
    book.set_mark("sim", "BTCUSDT", D("95"))
    assert book.position("sim", "BTCUSDT").unrealised_pnl == 10
    book.apply_fill(fill(Side.BUY, "1", "90"))
    pos = book.position("sim", "BTCUSDT")
    assert pos.realised_pnl == 10
    assert pos.quantity == -1


@pytest.mark.parametrize("method", list(CostMethod))
def test_flip_long_to_short_through_zero(method):
    book = ledger(method)
    book.apply_fill(fill(Side.BUY, "1", "100", ms=1))
    book.apply_fill(fill(Side.BUY, "1", "104", ms=2))
    result = book.apply_fill(fill(Side.SELL, "5", "110", ms=3))
    pos = book.position("sim", "BTCUSDT")
    assert pos.side is PositionSide.SHORT
    assert pos.quantity == -3
    assert pos.avg_entry_price == 110  # the flipping fill's price, for every method
    assert pos.realised_pnl == 16  # (110-100) + (110-104)
    assert result.position == -3
    trade = result.closed_trade
    assert trade.side is PositionSide.LONG
    assert (trade.quantity, trade.entry_price, trade.exit_price) == (D(2), D(102), D(110))
    assert trade.realised_pnl == 16
    assert (trade.opened_ms, trade.closed_ms, trade.fills) == (1, 3, 3)
    assert pos.opened_ms == 3  # a new round trip started with the flip


def test_flip_shares_the_fee_between_the_closing_and_the_opening_part():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100", ms=1))
    result = book.apply_fill(fill(Side.SELL, "4", "100", fee="0.4", ms=2))  # closes 1, opens 3
    assert result.closed_trade.fees == D("0.1")
    assert result.closed_trade.realised_pnl == D("-0.1")
    book.apply_fill(fill(Side.BUY, "3", "100", ms=3))
    short_trip = book.closed_trades[-1]
    assert short_trip.side is PositionSide.SHORT
    assert short_trip.fees == D("0.3")
    assert sum(t.realised_pnl for t in book.closed_trades) == book.position("sim", "BTCUSDT").realised_pnl


def test_closed_trades_record_round_trips_only_when_flat_again():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100", ms=10))
    book.apply_fill(fill(Side.SELL, "0.5", "110", ms=20))
    assert book.closed_trades == ()
    done = book.apply_fill(fill(Side.SELL, "0.5", "90", ms=30)).closed_trade
    assert done.realised_pnl == 0  # +5 then -5
    assert (done.exit_price, done.opened_ms, done.closed_ms) == (D(100), 10, 30)
    assert book.closed_trade_count == 1
    assert book.position("sim", "BTCUSDT").opened_ms == 0


def test_closed_trade_list_is_bounded_but_counted():
    book = ledger(max_closed_trades=3)
    for _ in range(5):
        book.apply_fill(fill(Side.BUY, "1", "100"))
        book.apply_fill(fill(Side.SELL, "1", "101"))
    assert len(book.closed_trades) == 3
    assert book.closed_trade_count == 5


# --- fees ---------------------------------------------------------------------------------


def test_quote_fee_reduces_realised_pnl_and_cash_on_opening_fills_too():
    book = ledger()
    result = book.apply_fill(fill(Side.BUY, "1", "100", fee="0.1", fee_asset="USDT"))
    pos = book.position("sim", "BTCUSDT")
    assert pos.realised_pnl == D("-0.1")
    assert pos.fees == D("0.1")
    assert (result.fee_quote, result.fee_rate) == (D("0.1"), D(1))
    assert book.balance("sim", "USDT") == D("-100.1")
    assert book.balance("sim", "BTC") == 1


def test_base_fee_on_a_buy_reduces_the_quantity_received():
    book = ledger()
    result = book.apply_fill(fill(Side.BUY, "1", "100", fee="0.001", fee_asset="BTC"))
    pos = book.position("sim", "BTCUSDT")
    assert pos.quantity == D("0.999")
    assert result.quantity_change == D("0.999")
    assert book.balance("sim", "BTC") == D("0.999")
    assert book.balance("sim", "USDT") == -100  # the cash spent is price x gross quantity
    assert pos.fees_by_asset == {"BTC": D("0.001")}
    assert pos.fees == D("0.1")  # valued at the fill price
    book.set_mark("sim", "BTCUSDT", D("100"))
    pos = book.position("sim", "BTCUSDT")
    # Holding 0.999 BTC at 100 for 100 USDT spent: 0.1 down.
    assert pos.realised_pnl + pos.unrealised_pnl == D("-0.1")


def test_base_fee_on_a_sell_is_an_extra_outflow_of_the_base():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "2", "100"))
    book.apply_fill(fill(Side.SELL, "1", "110", fee="0.001", fee_asset="BTC"))
    pos = book.position("sim", "BTCUSDT")
    assert pos.quantity == D("0.999")
    assert book.balance("sim", "BTC") == D("0.999")
    assert book.balance("sim", "USDT") == -200 + 110
    book.set_mark("sim", "BTCUSDT", D("110"))
    pos = book.position("sim", "BTCUSDT")
    assert pos.realised_pnl + pos.unrealised_pnl == D("0.999") * 110 - 90


def test_third_asset_fee_is_converted_at_the_given_rate_and_both_amounts_kept():
    book = ledger()
    result = book.apply_fill(fill(Side.BUY, "1", "100", fee="0.01", fee_asset="BNB"), fee_rate=D("300"))
    pos = book.position("sim", "BTCUSDT")
    assert (result.fee_quote, result.fee_rate) == (D("3.00"), D("300"))
    assert pos.fees == 3
    assert pos.fees_by_asset == {"BNB": D("0.01")}
    assert pos.realised_pnl == -3
    assert pos.unconverted_fees == {}
    assert book.balance("sim", "BNB") == D("-0.01")
    assert book.balance("sim", "BTC") == 1  # quantity untouched


def test_third_asset_fee_without_a_rate_is_kept_unconverted_not_lost():
    book = ledger()
    result = book.apply_fill(fill(Side.BUY, "1", "100", fee="0.01", fee_asset="BNB"))
    pos = book.position("sim", "BTCUSDT")
    assert result.fee_quote is None and result.fee_rate is None
    assert pos.realised_pnl == 0
    assert pos.unconverted_fees == {"BNB": D("0.01")}
    assert book.balance("sim", "BNB") == D("-0.01")
    assert book.pnl().unconverted_fees == {"BNB": D("0.01")}


def test_rate_from_marks_can_price_a_third_asset_fee():
    book = ledger()
    book.set_mark("sim", "BNBUSDT", D("250"))
    rate = book.rate("BNB", "USDT", venue="sim")
    result = book.apply_fill(fill(Side.BUY, "1", "100", fee="0.02", fee_asset="BNB"), fee_rate=rate)
    assert result.fee_quote == 5


def test_negative_fee_is_a_rebate():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100", fee="-0.02", fee_asset="USDT"))
    assert book.position("sim", "BTCUSDT").realised_pnl == D("0.02")
    assert book.balance("sim", "USDT") == D("-99.98")


def test_zero_fee_without_asset_is_accepted():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100", fee="0", fee_asset=""))
    assert book.balances("sim") == {("sim", "BTC"): D(1), ("sim", "USDT"): D(-100)}


# --- idempotency, replay, bad input ------------------------------------------------------


def test_duplicate_fill_is_ignored():
    book = ledger()
    first = fill(Side.BUY, "1", "100", fee="0.1", trade_id="42")
    assert not book.apply_fill(first).duplicate
    again = book.apply_fill(first)
    assert again.duplicate
    assert book.position("sim", "BTCUSDT").quantity == 1
    assert book.balance("sim", "USDT") == D("-100.1")
    assert book.has_fill("sim", "42")
    # The same trade id at another venue is another fill.
    other = Instrument(venue="other", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.001"))
    book.add_instrument(other)
    assert not book.apply_fill(fill(Side.BUY, "1", "100", trade_id="42", venue="other")).duplicate


def test_replaying_the_same_fills_rebuilds_the_same_state():
    fills = [
        (fill(Side.BUY, "1", "100", fee="0.001", fee_asset="BTC", ms=1), None),
        (fill(Side.BUY, "0.5", "104", fee="0.05", fee_asset="USDT", ms=2), None),
        (fill(Side.SELL, "3", "101", fee="0.003", fee_asset="BNB", ms=3), D("310")),
        (fill(Side.BUY, "1.5", "99", ms=4, symbol="BTCUSDT"), None),
        (fill(Side.SELL, "2", "0.05", fee="0.0001", fee_asset="BTC", symbol="ETHBTC", ms=5), None),
    ]

    def build():
        book = ledger(CostMethod.FIFO)
        book.set_balances("sim", [Balance(asset="USDT", free=D(1000), locked=D(0))])
        for f, rate in fills:
            book.apply_fill(f, fee_rate=rate)
        book.set_mark("sim", "BTCUSDT", D("100"))
        book.set_mark("sim", "ETHBTC", D("0.051"))
        return book

    a, b = build(), build()
    assert a.positions(include_flat=True) == b.positions(include_flat=True)
    assert a.balances() == b.balances()
    assert a.closed_trades == b.closed_trades
    assert a.pnl() == b.pnl()


def test_unknown_instrument_is_refused_without_changing_anything():
    book = ledger()
    with pytest.raises(UnknownInstrument, match="add the instrument"):
        book.apply_fill(fill(Side.BUY, "1", "100", symbol="DOGEUSDT", trade_id="7"))
    assert not book.has_fill("sim", "7")
    assert book.balances() == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"qty": "0"}, "positive"),
        ({"price": "-1"}, "positive"),
        ({"price": "NaN"}, "non-finite"),
        ({"fee": "0.1", "fee_asset": ""}, "no fee asset"),
    ],
)
def test_invalid_fill_is_refused_without_changing_anything(kwargs, message):
    book = ledger()
    args = {"qty": "1", "price": "100"} | kwargs
    bad = fill(Side.BUY, args.pop("qty"), args.pop("price"), trade_id="9", **args)
    with pytest.raises(InvalidFill, match=message):
        book.apply_fill(bad)
    assert not book.has_fill("sim", "9")
    assert book.position("sim", "BTCUSDT") is None
    assert book.balances() == {}


def test_bad_fee_rate_is_refused():
    book = ledger()
    with pytest.raises(InvalidFill, match="fee rate"):
        book.apply_fill(fill(Side.BUY, "1", "100", fee="0.01", fee_asset="BNB"), fee_rate=D(0))


# --- balances -----------------------------------------------------------------------------


def test_reconcile_reports_mismatches_beyond_tolerance_as_values():
    book = ledger()
    book.set_balances("sim", [Balance(asset="USDT", free=D(1000), locked=D(0)), Balance(asset="BTC", free=D(0), locked=D(0))])
    book.apply_fill(fill(Side.BUY, "1", "100", fee="0.1"))
    venue_view = [
        Balance(asset="USDT", free=D("800"), locked=D("99.9")),  # 899.9, as ours
        Balance(asset="BTC", free=D("1.0000001"), locked=D(0)),  # off by dust
        Balance(asset="ETH", free=D("2"), locked=D(0)),  # we know nothing of it
    ]
    within_dust = book.reconcile("sim", venue_view, tolerance=D("0.00001"))
    assert [(m.asset, m.ours, m.venue_total) for m in within_dust] == [("ETH", D(0), D(2))]
    found = book.reconcile("sim", venue_view)
    assert {m.asset: m.difference for m in found} == {"BTC": D("0.0000001"), "ETH": D(2)}
    per_asset = book.reconcile("sim", venue_view, tolerance={"BTC": D("0.001"), "ETH": D(5)})
    assert per_asset == []


def test_reconcile_treats_an_omitted_asset_as_zero_only_for_a_complete_snapshot():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100"))
    snapshot = [Balance(asset="BTC", free=D(1), locked=D(0))]
    assert [m.asset for m in book.reconcile("sim", snapshot)] == ["USDT"]
    assert book.reconcile("sim", snapshot, complete=False) == []
    mismatch = book.check_balance(BalanceUpdate(venue="sim", asset="BTC", free=D("0.5"), locked=D(0)))
    assert (mismatch.ours, mismatch.venue_total, mismatch.difference) == (D(1), D("0.5"), D("-0.5"))
    assert "sim BTC" in mismatch.describe()
    assert book.check_balance(BalanceUpdate(venue="sim", asset="BTC", free=D("0.4"), locked=D("0.6"))) is None


def test_set_balances_adopts_the_venue_view():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100"))
    book.set_balances("sim", [Balance(asset="BTC", free=D(2), locked=D(0))])
    assert book.balances("sim") == {("sim", "BTC"): D(2), ("sim", "USDT"): D(0)}
    book.set_balances("sim", [BalanceUpdate(venue="sim", asset="USDT", free=D(5), locked=D(1))], replace=False)
    assert book.balance("sim", "USDT") == 6
    assert book.balance("sim", "BTC") == 2


# --- marks, rates, equity, pnl ------------------------------------------------------------


def test_equity_values_balances_at_marks_and_flags_missing_prices():
    book = ledger()
    book.set_balances("sim", [Balance(asset="USDT", free=D(1000), locked=D(0))])
    book.apply_fill(fill(Side.BUY, "1", "100"))
    book.apply_fill(fill(Side.BUY, "10", "0.05", symbol="ETHBTC", fee="0.01", fee_asset="ETH"))
    # 0.5 BTC spent on ETH: BTC 0.5, ETH 9.99, USDT 900.
    eq = book.equity()
    assert eq.missing == ("BTC", "ETH")
    assert not eq.complete
    book.mark_quote(Quote(venue="sim", symbol="BTCUSDT", bid=D(109), bid_qty=D(1), ask=D(111), ask_qty=D(1), ts=0.0))
    assert book.equity().missing == ("ETH",)
    book.set_mark("sim", "ETHBTC", D("0.06"))
    eq = book.equity()
    assert eq.complete
    assert eq.value == 900 + D("0.5") * 110 + D("9.99") * D("0.06") * 110
    assert book.equity("BTC").value == D(900) / 110 + D("0.5") + D("9.99") * D("0.06")


def test_fixed_rates_and_inverse_rates():
    book = Ledger(currency="USDT", rates={("USDC", "USDT"): D("1")})
    assert book.rate("USDC", "USDT") == 1
    assert book.rate("USDT", "USDC") == 1
    book.set_rate("EUR", "USDT", D("1.25"))
    assert book.rate("USDT", "EUR") == D("0.8")
    assert book.rate("XYZ", "USDT") is None
    with pytest.raises(ValueError, match="positive"):
        book.set_rate("EUR", "USDT", D(0))


def test_one_sided_quote_does_not_move_the_mark():
    book = ledger()
    book.set_mark("sim", "BTCUSDT", D(100))
    book.mark_quote(Quote(venue="sim", symbol="BTCUSDT", bid=D(0), bid_qty=D(0), ask=D(120), ask_qty=D(1), ts=0.0))
    assert book.mark("sim", "BTCUSDT") == 100


def test_pnl_summary_converts_quote_currencies_and_names_missing_marks():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100", fee="1"))
    book.apply_fill(fill(Side.SELL, "1", "110"))
    book.apply_fill(fill(Side.BUY, "10", "0.05", symbol="ETHBTC"))
    summary = book.pnl()
    assert summary.missing == ("BTC", "sim:ETHBTC")  # no BTC->USDT rate, no ETHBTC mark
    assert summary.realised == 9  # the BTCUSDT round trip, less its fee
    book.set_mark("sim", "BTCUSDT", D(100))
    book.set_mark("sim", "ETHBTC", D("0.06"))
    summary = book.pnl()
    assert summary.missing == ()
    assert summary.unrealised == 10 * (D("0.06") - D("0.05")) * 100
    assert summary.total == 9 + summary.unrealised
    assert summary.fees == 1


def test_exposure_gross_and_net():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100"))
    book.apply_fill(fill(Side.SELL, "4", "300", symbol="BNBUSDT"))
    assert book.exposure().missing == ("sim:BNBUSDT", "sim:BTCUSDT")
    book.set_mark("sim", "BTCUSDT", D(100))
    book.set_mark("sim", "BNBUSDT", D(250))
    exposure = book.exposure()
    assert (exposure.gross, exposure.net) == (D(1100), D(-900))


def test_snapshots_encode_to_json():
    book = ledger()
    book.apply_fill(fill(Side.BUY, "1", "100", fee="0.01", fee_asset="BNB"))
    encoded = msgspec.json.decode(msgspec.json.encode(book.positions()))
    assert encoded[0]["quantity"] == "1"
    assert encoded[0]["unconverted_fees"] == {"BNB": "0.01"}


def test_mark_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        ledger().set_mark("sim", "BTCUSDT", D(0))


# --- equity curve -------------------------------------------------------------------------


def test_equity_curve_keeps_one_sample_per_interval():
    curve = EquityCurve(interval_ms=1000, max_points=100)
    assert curve.record(0, D(100))
    assert not curve.record(500, D(101))
    assert curve.record(1000, D(102))
    assert not curve.record(900, D(90))  # the wall clock stepped back
    assert curve.points() == [(0, D(100)), (1000, D(102))]
    assert (curve.peak, curve.peak_ms) == (D(102), 1000)


def test_equity_curve_memory_is_bounded_over_a_day_and_spans_all_of_it():
    curve = EquityCurve(interval_ms=1000, max_points=500)
    day = 86_400
    for second in range(day):
        curve.record(second * 1000, D(1000 + (second % 7)))
        assert len(curve) <= 500
    times, values = curve.columns()
    assert times[0] == 0  # the baseline survives thinning
    assert times[-1] >= (day - 1) * 1000 - curve.interval_ms
    assert curve.interval_ms > 1000
    gaps = {b - a for a, b in zip(times[1:], times[2:])}
    assert len(gaps) == 1  # still a regular grid after the first point
    assert curve.peak == 1006


def test_equity_curve_thinning_keeps_the_newest_point():
    curve = EquityCurve(interval_ms=1, max_points=4)
    for t in range(5):
        curve.record(t, D(t))
    assert curve.points()[0] == (0, D(0))
    assert curve.last == (4, D(4))
    assert len(curve) <= 4


def test_equity_curve_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        EquityCurve(interval_ms=0)
    with pytest.raises(ValueError):
        EquityCurve(max_points=2)


def test_sample_equity_skips_incomplete_valuations():
    book = ledger(curve=EquityCurve(interval_ms=1000))
    book.set_balances("sim", [Balance(asset="USDT", free=D(1000), locked=D(0))])
    book.apply_fill(fill(Side.BUY, "1", "100"))
    eq = book.sample_equity(0)
    assert eq.missing == ("BTC",)
    assert len(book.curve) == 0
    book.set_mark("sim", "BTCUSDT", D(90))
    assert book.sample_equity(1000).value == 990
    assert book.curve.points() == [(1000, D(990))]
