"""tradectl's layout of positions, PnL, fills, balances and reports: precision, empty states, CSV."""

import csv
import io
import math

from daemon.ctl_positions import exact, num, pct, render_balances, render_fills, render_positions, write_csv

SUMMARY = {
    "currency": "USDT", "equity": "1000", "equity_complete": False, "missing": ["BTC"], "realised_pnl": "-1.5",
    "unrealised_pnl": "0", "fees": "1.5", "gross_exposure": "0", "net_exposure": "0", "open_positions": 0,
    "utc_ms": 0, "ts": 0.0, "pending_fills": 2, "balance_mismatches": ["sim"],
}


def test_numbers_follow_the_instrument_precision():
    assert num("64025.123", 2) == "64,025.12"
    assert num("0.4", 5) == "0.40000"
    assert num("0", 8) == "0.00000000"
    assert num("1.28E+4", 2) == "12,800.00"
    assert num(None, 2) == "-"
    assert exact("74486.80000") == "74,486.8" and exact("1E+5") == "100,000" and exact("0E-8") == "0"
    assert pct(math.nan) == "-" and pct(0.1234) == "12.34%"


def test_positions_without_positions_still_say_what_is_wrong():
    out = render_positions({"money_decimals": 2, "positions": [], "summary": SUMMARY, "pending": ["sim:ETHUSDT"]})
    assert "no open positions" in out
    assert "equity 1,000.00 USDT" in out and "-1.50" in out
    assert "leave out what has no price: BTC" in out
    assert "2 fills wait" in out and "balances differ at sim" in out and "sim:ETHUSDT" in out


def test_fills_table_notes_when_it_shows_only_the_latest():
    row = {
        "seq": 9, "time_ms": 1_767_225_600_000, "venue": "sim", "symbol": "BTCUSDT", "side": "SELL", "qty": "0.2",
        "price": "64500", "fee": "0.01", "fee_asset": "BNB", "maker": True, "exec_id": None,
        "client_order_id": "manual-1", "trade_id": "77", "price_decimals": 2, "qty_decimals": 5,
    }
    out = render_fills({"fills": [row], "matched": 3})
    assert "2026-01-01 00:00:00 UTC" in out and "0.20000" in out and "64,500.00" in out and "0.01 BNB" in out
    assert "the latest 1 of 3" in out
    assert render_fills({"fills": [], "matched": 0}) == "no fills match"
    buffer = io.StringIO()
    write_csv({"fills": [row], "matched": 1}, buffer)
    [parsed] = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert parsed["time_utc"] == "2026-01-01 00:00:00" and parsed["maker"] == "1" and parsed["exec_id"] == ""
    assert (parsed["qty"], parsed["price"], parsed["trade_id"]) == ("0.2", "64500", "77")


def test_balances_explain_a_mismatch_and_how_to_clear_it():
    row = {
        "venue": "sim", "asset": "USDT", "ours": "100", "venue_total": "90", "venue_free": "90", "venue_locked": "0",
        "difference": "-10", "tolerance": "0", "venue_ms": 0, "status": "MISMATCH",
    }
    mismatch = {"venue": "sim", "differences": [{"asset": "USDT"}], "utc_ms": 0}
    out = render_balances({"currency": "USDT", "balance_grace": 10.0, "rows": [row], "mismatches": [mismatch]})
    assert "MISMATCH" in out and "ack-balances --venue sim" in out
    assert "no balances yet" in render_balances({"currency": "USDT", "balance_grace": 10.0, "rows": [], "mismatches": []})
