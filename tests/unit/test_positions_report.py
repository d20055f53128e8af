"""What `pnl` and `report` compute: time parsing, TCA per execution and venue, shortfall, performance."""

import math
from decimal import Decimal as D

import msgspec
import pytest

from actors.ledger import CostMethod, EquityCurve, Ledger
from actors.positions_report import build_report, execution_prices, parse_since, pnl_view
from daemon.journal_store import ExecutionRecord, JournaledFill
from daemon.messages import ExecutionCheckpoint, Fill, Quote
from daemon.model import Instrument, Side

BTCUSDT = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"))
ETHUSDT = Instrument(venue="bin", symbol="ETHUSDT", base="ETH", quote="USDT", tick_size=D("0.01"), step_size=D("0.0001"))
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def fill(trade_id, side, qty, price, *, venue="sim", symbol="BTCUSDT", fee="0", fee_asset="USDT", ms=NOW):
    return Fill(
        venue=venue,
        symbol=symbol,
        client_order_id=f"td-x-{trade_id}",
        trade_id=str(trade_id),
        side=side,
        price=D(price),
        qty=D(qty),
        fee=D(fee),
        fee_asset=fee_asset,
        is_maker=False,
        venue_ms=ms,
    )


def journaled(seq, f, exec_id):
    return JournaledFill(seq=seq, recorded_ms=f.venue_ms, exec_id=exec_id, fill=f)


def execution(exec_id, *, venue="sim", symbol="BTCUSDT", side=Side.BUY, qty="2", state=None, params=None, created=NOW):
    checkpoint = None
    if state is not None:
        checkpoint = ExecutionCheckpoint(exec_id=exec_id, next_seq=3, filled_qty=D(0), algo_state=state)
    return ExecutionRecord(
        exec_id=exec_id,
        algo="twap",
        venue=venue,
        symbol=symbol,
        side=side,
        quantity=D(qty),
        params=msgspec.json.encode(params or {"duration": 600}),
        state="COMPLETED",
        by="op",
        created_ms=created,
        updated_ms=created,
        checkpoint=checkpoint,
        checkpoint_ms=created if checkpoint else None,
    )


# --- since ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("24h", NOW - 24 * HOUR),
        ("7d", NOW - 7 * 24 * HOUR),
        ("30m", NOW - 30 * 60_000),
        (" 90s ", NOW - 90_000),
        ("2w", NOW - 14 * 24 * HOUR),
        ("1.5h", NOW - 90 * 60_000),
        ("2025-12-31", NOW - 24 * HOUR),
        ("2025-12-31T12:00", NOW - 12 * HOUR),
        ("2025-12-31 12:00:00Z", NOW - 12 * HOUR),
        ("2025-12-31T14:00:00+02:00", NOW - 12 * HOUR),
    ],
)
def test_since_accepts_ages_dates_and_times(text, expected):
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "24x", "", "2025-13-01", "-3h"])
def test_since_explains_what_it_accepts(text):
    with pytest.raises(ValueError, match="an age like 24h"):
        parse_since(text, NOW)


# --- report -------------------------------------------------------------------------------


def ledger():
    book = Ledger([BTCUSDT, ETHUSDT], method=CostMethod.AVERAGE, currency="USDT")
    return book


def test_fills_are_judged_against_their_executions_arrival_mid():
    book = ledger()
    e1 = execution("e1", state={"arrival_mid": "100", "decision_price": "100"})
    e2 = execution("e2", venue="bin", symbol="ETHUSDT", side=Side.SELL, qty="1", params={"arrival_mid": 50.0})
    rows = [
        journaled(1, fill(1, Side.BUY, "1", "100.10", fee="0.1"), "e1"),  # +10 bps
        journaled(2, fill(2, Side.BUY, "1", "100.00"), "e1"),  # 0 bps
        journaled(3, fill(3, Side.SELL, "1", "49.95", venue="bin", symbol="ETHUSDT"), "e2"),  # +10 bps
        journaled(4, fill(4, Side.BUY, "1", "101"), None),  # a manual order: no benchmark
    ]
    report = build_report(
        ledger=book,
        fills=rows,
        executions={"e1": e1, "e2": e2},
        execution_fills={"e1": [rows[0].fill, rows[1].fill], "e2": [rows[2].fill]},
        since_ms=NOW - HOUR,
        until_ms=NOW,
    )
    e1_tca = report.tca_by_execution["e1"]
    assert e1_tca.fills == 2
    assert e1_tca.slippage == pytest.approx(0.10)
    assert e1_tca.slippage_bps == pytest.approx(5.0)  # 0.10 over 200 of benchmark notional
    assert e1_tca.fee_bps == pytest.approx(5.0)
    assert report.tca_by_execution["e2"].slippage_bps == pytest.approx(10.0)
    assert set(report.tca_by_venue) == {"sim", "bin"}
    assert report.unbenchmarked_fills == 1
    assert report.fills == 4 and report.volume == pytest.approx(100.10 + 100 + 49.95 + 101)
    assert report.fees == pytest.approx(0.1)
    # e1 bought all 2 at 100.05 on average against a decision price of 100: 0.10 trading + 0.1 fees
    assert report.shortfall_by_execution["e1"].shortfall == pytest.approx(0.20)
    assert report.shortfall_by_execution["e1"].fill_rate == pytest.approx(1.0)


def test_shortfall_comes_from_the_final_report_when_the_execution_journaled_one():
    book = ledger()
    final = {"ordered": 2.0, "filled": 1.0, "decision_price": 100.0, "arrival_mid": 100.5, "shortfall": {"total": 3.0, "fees": 0.5}}
    e1 = execution("e1", state={"report": final})
    assert execution_prices(e1).arrival_mid == 100.5
    report = build_report(
        ledger=book,
        fills=[],
        executions={"e1": e1},
        execution_fills={"e1": []},
        since_ms=NOW - HOUR,
        until_ms=NOW,
    )
    summary = report.shortfall_by_execution["e1"]
    assert (summary.shortfall, summary.fees, summary.fill_rate) == (3.0, 0.5, 0.5)
    assert summary.shortfall_bps == pytest.approx(3.0 / 200 * 1e4)


def test_an_execution_without_benchmarks_is_left_out_of_costs_not_guessed():
    report = build_report(
        ledger=ledger(),
        fills=[journaled(1, fill(1, Side.BUY, "1", "100"), "e1")],
        executions={"e1": execution("e1")},
        execution_fills={"e1": []},
        since_ms=NOW - HOUR,
        until_ms=NOW,
    )
    assert report.tca_by_execution == {} and report.shortfall_by_execution == {}
    assert report.unbenchmarked_fills == 1


def test_fees_in_a_third_asset_without_a_rate_are_named():
    report = build_report(
        ledger=ledger(),
        fills=[journaled(1, fill(1, Side.BUY, "1", "100", fee="0.01", fee_asset="BNB"), None)],
        executions={},
        execution_fills={},
        since_ms=NOW - HOUR,
        until_ms=NOW,
    )
    assert report.unpriced == ["BNB"] and report.fees == 0.0


def test_report_performance_covers_the_curve_and_round_trips_inside_the_window():
    curve = EquityCurve(interval_ms=1)
    book = Ledger([BTCUSDT], currency="USDT", curve=curve)
    for i, value in enumerate(["1000", "1100", "990", "1050"]):
        curve.record(NOW - (10 - i) * 24 * HOUR, D(value))
    book.apply_fill(fill(1, Side.BUY, "1", "100", ms=NOW - 10 * 24 * HOUR))
    book.apply_fill(fill(2, Side.SELL, "1", "110", ms=NOW - 9 * 24 * HOUR - 1))  # +10, just before the window
    book.apply_fill(fill(3, Side.BUY, "1", "100", ms=NOW - 2 * HOUR))
    book.apply_fill(fill(4, Side.SELL, "1", "95", ms=NOW - HOUR))  # -5, inside
    report = build_report(ledger=book, fills=[], executions={}, execution_fills={}, since_ms=NOW - 9 * 24 * HOUR, until_ms=NOW)
    assert report.performance.trades.count == 1 and report.realised_pnl == -5.0
    assert report.performance.start_equity == 1100.0 and report.performance.end_equity == 1050.0
    assert report.performance.drawdown.max_drawdown == pytest.approx(990 / 1100 - 1)


# --- pnl ----------------------------------------------------------------------------------


def test_pnl_view_totals_positions_and_performance():
    curve = EquityCurve(interval_ms=1)
    book = Ledger([BTCUSDT], currency="USDT", curve=curve)
    book.apply_fill(fill(1, Side.BUY, "2", "100", fee="0.2"))
    book.apply_fill(fill(2, Side.SELL, "1", "110"))
    book.mark_quote(Quote(venue="sim", symbol="BTCUSDT", bid=D("119"), bid_qty=D(1), ask=D("121"), ask_qty=D(1), ts=0))
    for day, value in enumerate(["1000", "1010", "1005"]):
        curve.record(NOW + day * 24 * HOUR, D(value))
    view = pnl_view(book, money_decimals=2)
    assert (view.realised, view.unrealised, view.fees, view.total) == (D("9.8"), D("20"), D("0.2"), D("29.8"))
    [position] = view.positions
    assert (position.quantity, position.price_decimals, position.qty_decimals) == (D("1"), 2, 5)
    assert view.performance.total_return == pytest.approx(0.005)
    assert view.curve_points == 3 and view.closed_trades == 0
    assert math.isnan(view.performance.trades.win_rate)

