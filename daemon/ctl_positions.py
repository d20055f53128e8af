"""tradectl's commands over positions and PnL: positions, pnl, fills, report, balances, ack-balances.

The daemon answers with exact decimals (as strings) and the precision of
each instrument; this module only lays them out: prices to the tick,
quantities to the step, money in the reporting currency to `money_decimals`,
times in UTC. ``--json`` prints the daemon's answer as it is, and
``fills --csv`` writes every matching fill as CSV with exact figures.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from daemon import ctl_format as fmt
from daemon.ctl import EXIT_OK, EXIT_REFUSED, Ctl, confirm, emit_json
from daemon.ctl_client import Client

# ---------------------------------------------------------------------------------------
# Number formatting
# ---------------------------------------------------------------------------------------


def num(value: Any, places: int) -> str:
    """A decimal (string or number) to `places` digits, with thousands separators; "-" for none."""
    if value is None or value == "":
        return "-"
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not d.is_finite():
        return str(d)
    quantum = Decimal(1).scaleb(-places)
    return f"{d.quantize(quantum, rounding=ROUND_HALF_EVEN):,f}"


def exact(value: Any) -> str:
    """A decimal as it is, without exponent or trailing zeros (for balances, where every digit counts)."""
    if value is None or value == "":
        return "-"
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not d.is_finite():
        return str(d)
    return f"{d.normalize():,f}" if d else "0"


def signed(value: Any, places: int) -> str:
    text = num(value, places)
    if text == "-":
        return text
    coloured = "green" if not text.startswith("-") and Decimal(str(value)) > 0 else ("red" if text.startswith("-") else "dim")
    return fmt.paint(("+" if coloured == "green" else "") + text, coloured)


def ratio(value: float | None, places: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{places}f}"


def pct(value: float | None, places: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 100:.{places}f}%"


def bps(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}"


def money_float(value: float | None, places: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{places}f}"


def _call(client: Client, args: argparse.Namespace, cmd: str, payload: dict[str, Any], render: Callable[[Any], str]) -> int:
    result = client.call(cmd, payload)
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(render(result) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# positions
# ---------------------------------------------------------------------------------------


def summary_lines(s: dict[str, Any], places: int) -> list[str]:
    cur = s["currency"]
    lines = [
        f"equity {num(s['equity'], places)} {cur}   realised {signed(s['realised_pnl'], places)}   "
        f"unrealised {signed(s['unrealised_pnl'], places)}   fees {num(s['fees'], places)}   "
        f"gross exposure {num(s['gross_exposure'], places)}   net {num(s['net_exposure'], places)}"
    ]
    if not s.get("equity_complete", True):
        lines.append(fmt.paint(f"  figures leave out what has no price: {', '.join(s.get('missing') or [])}", "yellow"))
    if s.get("pending_fills"):
        lines.append(fmt.paint(f"  {s['pending_fills']} fills wait for their instrument definitions", "yellow"))
    if s.get("balance_mismatches"):
        lines.append(
            fmt.paint(
                f"  balances differ at {', '.join(s['balance_mismatches'])}: see `tradectl balances`", "red"
            )
        )
    return lines


def render_positions(r: dict[str, Any]) -> str:
    places = r["money_decimals"]
    rows = []
    for p in r["positions"]:
        rows.append(
            (
                p["venue"],
                p["symbol"],
                fmt.paint(p["side"], {"LONG": "green", "SHORT": "red"}.get(p["side"], "dim")),
                num(p["quantity"], p["qty_decimals"]),
                num(p["avg_entry_price"], p["price_decimals"]),
                num(p["mark"], p["price_decimals"]),
                num(p["notional"], places),
                signed(p["unrealised_pnl"], places),
                signed(p["realised_pnl"], places),
                num(p["fees"], places),
                p["quote"],
                fmt.utc(p["opened_ms"]),
            )
        )
    out = []
    if rows:
        out.append(
            fmt.table(
                ["VENUE", "SYMBOL", "SIDE", "QTY", "AVG ENTRY", "MARK", "NOTIONAL", "UNREALISED", "REALISED", "FEES", "IN", "OPENED"],
                rows,
                right=[3, 4, 5, 6, 7, 8, 9],
            )
        )
    else:
        out.append("no open positions" + ("" if r["positions"] else " (--all shows flat ones too)"))
    out.append("")
    out.extend(summary_lines(r["summary"], places))
    if r.get("pending"):
        out.append(fmt.paint(f"  not shown yet (waiting for instruments): {', '.join(r['pending'])}", "yellow"))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# pnl and report: the performance block
# ---------------------------------------------------------------------------------------


def render_performance(perf: dict[str, Any], currency: str, places: int) -> str:
    dd = perf.get("drawdown") or {}
    trades = perf.get("trades") or {}
    period = "-"
    if perf.get("start_ms"):
        period = f"{fmt.utc(perf['start_ms'])} .. {fmt.utc(perf['end_ms'])} ({perf['periods']} daily returns)"
    drawdown = pct(dd.get("max_drawdown"))
    if dd.get("trough_ms"):
        drawdown += f" (peak {fmt.utc(dd.get('peak_ms'))}, trough {fmt.utc(dd.get('trough_ms'))}"
        drawdown += f", recovered {fmt.utc(dd['recovery_ms'])})" if dd.get("recovery_ms") else ", not recovered)"
    pairs = [
        ("equity curve", period),
        ("start / end equity", f"{money_float(perf.get('start_equity'), places)} / {money_float(perf.get('end_equity'), places)} {currency}"),
        ("total return", pct(perf.get("total_return"))),
        ("annual return", pct(perf.get("annual_return"))),
        ("annual volatility", pct(perf.get("annual_volatility"))),
        ("sharpe / sortino / calmar", f"{ratio(perf.get('sharpe'))} / {ratio(perf.get('sortino'))} / {ratio(perf.get('calmar'))}"),
        ("max drawdown", drawdown),
        ("VaR 95 / 99 (historical)", f"{pct(perf.get('var_95'))} / {pct(perf.get('var_99'))}"),
        ("CVaR 95 / 99 (historical)", f"{pct(perf.get('cvar_95'))} / {pct(perf.get('cvar_99'))}"),
        ("VaR 95 / 99 (parametric)", f"{pct(perf.get('parametric_var_95'))} / {pct(perf.get('parametric_var_99'))}"),
        ("CVaR 95 / 99 (parametric)", f"{pct(perf.get('parametric_cvar_95'))} / {pct(perf.get('parametric_cvar_99'))}"),
        ("round trips", f"{trades.get('count', 0)} (won {trades.get('wins', 0)}, lost {trades.get('losses', 0)})"),
        ("win rate", pct(trades.get("win_rate"))),
        ("profit factor", ratio(trades.get("profit_factor")) if trades.get("losses") or not trades.get("wins") else "no losses"),
        ("expectancy per trip", f"{money_float(trades.get('expectancy'), places)} {currency}"),
    ]
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in pairs)


def render_pnl(r: dict[str, Any]) -> str:
    places, cur = r["money_decimals"], r["currency"]
    out = [
        fmt.paint(f"PnL in {cur}", "bold"),
        f"  realised    {signed(r['realised'], places)}   (net of fees)",
        f"  unrealised  {signed(r['unrealised'], places)}",
        f"  total       {signed(r['total'], places)}",
        f"  fees        {num(r['fees'], places)}",
        f"  equity      {num(r['equity'], places)}" + ("" if r["equity_complete"] else fmt.paint(f"  (no price for {', '.join(r['missing'])})", "yellow")),
    ]
    if r.get("unconverted_fees"):
        fees = ", ".join(f"{v} {k}" for k, v in r["unconverted_fees"].items())
        out.append(fmt.paint(f"  fees in other assets, not in the figures: {fees}", "yellow"))
    rows = [
        (
            p["venue"],
            p["symbol"],
            num(p["quantity"], p["qty_decimals"]),
            num(p["avg_entry_price"], p["price_decimals"]),
            num(p["mark"], p["price_decimals"]),
            signed(p["unrealised_pnl"], places),
            signed(p["realised_pnl"], places),
            num(p["fees"], places),
            p["quote"],
            p["fills"],
        )
        for p in r["positions"]
    ]
    if rows:
        out.append("")
        out.append(
            fmt.table(
                ["VENUE", "SYMBOL", "QTY", "AVG ENTRY", "MARK", "UNREALISED", "REALISED", "FEES", "IN", "FILLS"],
                rows,
                right=[2, 3, 4, 5, 6, 7, 9],
            )
        )
    out.append("")
    out.append(fmt.paint(f"Performance ({r['curve_points']} equity samples, {r['closed_trades']} round trips)", "bold"))
    out.append(render_performance(r["performance"], cur, places))
    return "\n".join(out)


def _tca_table(groups: dict[str, Any], label: str, currency: str, places: int) -> str:
    rows = [
        (
            name,
            g["fills"],
            f"{g['quantity']:.8g}",
            money_float(g["notional"], places),
            bps(g["slippage_bps"]),
            bps(g["fee_bps"]),
            bps(g["total_bps"]),
            money_float(g["total_cost"], places),
        )
        for name, g in groups.items()
    ]
    return fmt.table(
        [label, "FILLS", "QTY", f"NOTIONAL {currency}", "SLIP bps", "FEES bps", "TOTAL bps", f"COST {currency}"],
        rows,
        right=[1, 2, 3, 4, 5, 6, 7],
    )


def _shortfall_table(groups: dict[str, Any], label: str, currency: str, places: int) -> str:
    rows = [
        (
            name,
            g["executions"],
            money_float(g["ordered_notional"], places),
            pct(g["fill_rate"], 1),
            money_float(g["shortfall"], places),
            bps(g["shortfall_bps"]),
            money_float(g["fees"], places),
        )
        for name, g in groups.items()
    ]
    return fmt.table(
        [label, "EXECS", f"ORDERED {currency}", "FILLED", f"SHORTFALL {currency}", "bps", f"FEES {currency}"],
        rows,
        right=[1, 2, 3, 4, 5, 6],
    )


def render_report(r: dict[str, Any]) -> str:
    places, cur = r["money_decimals"], r["currency"]
    out = [
        fmt.paint(f"Report {fmt.utc(r['since_ms'])} .. {fmt.utc(r['until_ms'])}", "bold"),
        f"  fills {r['fills']}   executions {r['executions']}   volume {money_float(r['volume'], places)} {cur}   "
        f"fees {money_float(r['fees'], places)} {cur}   realised (round trips) {money_float(r['realised_pnl'], places)} {cur}",
    ]
    out.append("")
    out.append(fmt.paint("Transaction costs against the arrival mid (positive = cost)", "bold"))
    if r["tca_by_execution"]:
        out.append(_tca_table(r["tca_by_execution"], "EXECUTION", cur, places))
        out.append("")
        out.append(_tca_table(r["tca_by_venue"], "VENUE", cur, places))
    else:
        out.append("  no fill with an execution benchmark in this window")
    if r["unbenchmarked_fills"]:
        out.append(f"  {r['unbenchmarked_fills']} fills have no arrival benchmark (manual orders or executions that recorded none)")
    out.append("")
    out.append(fmt.paint("Implementation shortfall against the decision price", "bold"))
    if r["shortfall_by_execution"]:
        out.append(_shortfall_table(r["shortfall_by_execution"], "EXECUTION", cur, places))
        out.append("")
        out.append(_shortfall_table(r["shortfall_by_venue"], "VENUE", cur, places))
    else:
        out.append("  no execution with a decision price in this window")
    out.append("")
    out.append(fmt.paint("Performance", "bold"))
    out.append(render_performance(r["performance"], cur, places))
    for note in [*r.get("notes", []), *([f"no rate for {', '.join(r['unpriced'])}: left out"] if r.get("unpriced") else [])]:
        out.append(fmt.paint(f"note: {note}", "dim"))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# fills
# ---------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "seq", "time_utc", "time_ms", "venue", "symbol", "side", "qty", "price", "fee", "fee_asset",
    "maker", "exec_id", "client_order_id", "trade_id",
)


def render_fills(r: dict[str, Any]) -> str:
    rows = [
        (
            fmt.utc(f["time_ms"]),
            f["venue"],
            f["symbol"],
            fmt.paint(f["side"], "green" if f["side"] == "BUY" else "red"),
            num(f["qty"], f["qty_decimals"]),
            num(f["price"], f["price_decimals"]),
            f"{f['fee']} {f['fee_asset']}".strip(),
            "maker" if f["maker"] else "taker",
            f["exec_id"] or "-",
            f["client_order_id"],
            f["trade_id"],
        )
        for f in r["fills"]
    ]
    if not rows:
        return "no fills match"
    out = [fmt.table(["TIME", "VENUE", "SYMBOL", "SIDE", "QTY", "PRICE", "FEE", "ROLE", "EXEC", "CLIENT ORDER ID", "TRADE"], rows, right=[4, 5, 6])]
    if r["matched"] > len(rows):
        out.append(fmt.paint(f"the latest {len(rows)} of {r['matched']} matching fills (--limit 0 shows all)", "dim"))
    return "\n".join(out)


def write_csv(r: dict[str, Any], stream: Any = None) -> None:
    writer = csv.writer(stream or sys.stdout, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in r["fills"]:
        writer.writerow(
            [
                f["seq"], fmt.utc(f["time_ms"]).removesuffix(" UTC"), f["time_ms"], f["venue"], f["symbol"], f["side"],
                f["qty"], f["price"], f["fee"], f["fee_asset"], int(f["maker"]), f["exec_id"] or "",
                f["client_order_id"], f["trade_id"],
            ]
        )


def _fills(args: argparse.Namespace, client: Client) -> int:
    limit = args.limit if args.limit is not None else (0 if args.csv else 100)
    payload = {"exec": args.exec, "venue": args.venue, "symbol": args.symbol, "since": args.since, "limit": limit}
    result = client.call("fills", payload)
    if args.json:
        emit_json(result)
    elif args.csv:
        write_csv(result)
    else:
        sys.stdout.write(render_fills(result) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# balances
# ---------------------------------------------------------------------------------------


def render_balances(r: dict[str, Any]) -> str:
    colours = {"ok": "green", "suspect": "yellow", "MISMATCH": "red", "stale": "dim", "unchecked": "dim"}
    rows = [
        (
            b["venue"],
            b["asset"],
            exact(b["ours"]),
            exact(b["venue_total"]),
            exact(b["venue_free"]),
            exact(b["venue_locked"]),
            exact(b["difference"]),
            exact(b["tolerance"]),
            fmt.paint(b["status"], colours.get(b["status"], "dim")),
            fmt.utc(b["venue_ms"]),
        )
        for b in r["rows"]
    ]
    if not rows:
        return "no balances yet: the venues report them when their gateways connect"
    out = [
        fmt.table(
            ["VENUE", "ASSET", "LEDGER", "VENUE TOTAL", "FREE", "LOCKED", "DIFFERENCE", "TOLERANCE", "STATUS", "REPORTED"],
            rows,
            right=[2, 3, 4, 5, 6, 7],
        )
    ]
    for m in r["mismatches"]:
        assets = ", ".join(d["asset"] for d in m["differences"])
        out.append(
            fmt.paint(
                f"{m['venue']}: {assets} differ beyond tolerance; trading stays halted. Find the cause "
                f"(missed fills, deposits, withdrawals), then `tradectl ack-balances --venue {m['venue']} --reason ...` "
                "to adopt the venue's figures",
                "red",
            )
        )
    if any(b["status"] == "suspect" for b in r["rows"]):
        out.append(fmt.paint(f"suspect: differs now; declared a mismatch if it lasts {r['balance_grace']:g}s", "dim"))
    if any(b["status"] == "stale" for b in r["rows"]):
        out.append(fmt.paint("stale: the ledger moved since the venue's last figure; compared when the venue reports again", "dim"))
    return "\n".join(out)


def render_ack(r: dict[str, Any]) -> str:
    lines = []
    for a in r["acknowledged"]:
        assets = ", ".join(f"{b['asset']} {Decimal(b['free']) + Decimal(b['locked'])}" for b in a["adopted"])
        lines.append(f"{a['venue']}: adopted {assets} (by {a['by']}: {a['reason']})")
    if lines:
        lines.append("the risk sentinel keeps trading halted until `tradectl resume`")
    return "\n".join(lines) or "nothing adopted"


def _ack(args: argparse.Namespace, client: Client) -> int:
    where = args.venue or "every venue with a balance mismatch"
    if not confirm(args, f"Adopt the balances reported by {where} as the ledger's?"):
        return EXIT_REFUSED
    return _call(client, args, "ack-balances", {"venue": args.venue, "reason": args.reason}, render_ack)


# ---------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------


def register_positions(ctl: Ctl) -> None:
    p = ctl.command(
        "positions",
        "open positions with marks, PnL and the equity summary",
        examples="  tradectl positions\n  tradectl positions --venue sim --all\n  tradectl positions --json | jq .summary.equity",
    )
    p.add_argument("--venue")
    p.add_argument("--symbol")
    p.add_argument("--all", action="store_true", help="include flat positions")
    p.set_defaults(
        runner=lambda a, c: _call(c, a, "positions", {"venue": a.venue, "symbol": a.symbol, "all": a.all}, render_positions)
    )

    p = ctl.command(
        "pnl",
        "realised and unrealised PnL, fees, equity, and performance metrics over the equity curve",
        examples="  tradectl pnl\n  tradectl pnl --json | jq .performance.sharpe",
    )
    p.set_defaults(runner=lambda a, c: _call(c, a, "pnl", {}, render_pnl))

    p = ctl.command(
        "fills",
        "fills from the journal, newest last",
        examples=(
            "  tradectl fills\n  tradectl fills --exec 7f3a --since 24h\n"
            "  tradectl fills --since 2026-01-01 --csv > fills.csv"
        ),
    )
    p.add_argument("--exec", help="only this execution's fills")
    p.add_argument("--venue")
    p.add_argument("--symbol")
    p.add_argument("--since", help="an age (30m, 24h, 7d) or a UTC date / date and time (2026-01-31, 2026-01-31T12:00)")
    p.add_argument("--limit", type=int, help="the latest N matching fills (default 100; 0 = all; --csv: all)")
    p.add_argument("--csv", action="store_true", help="write CSV with exact figures to stdout")
    p.set_defaults(runner=_fills)

    p = ctl.command(
        "report",
        "transaction costs per execution and venue, and performance, over a window",
        examples="  tradectl report --since 24h\n  tradectl report --since 2026-01-01 --until 2026-02-01\n  tradectl report --since 7d --json",
    )
    p.add_argument("--since", default="24h", help="an age (24h, 7d) or a UTC date / date and time (default 24h)")
    p.add_argument("--until", help="end of the window (default now), same forms as --since")
    p.set_defaults(runner=lambda a, c: _call(c, a, "report", {"since": a.since, "until": a.until}, render_report))

    p = ctl.command(
        "balances",
        "the ledger's balances against what the venues report, with mismatches",
        examples="  tradectl balances\n  tradectl balances --venue binance --json",
    )
    p.add_argument("--venue")
    p.set_defaults(runner=lambda a, c: _call(c, a, "balances", {"venue": a.venue}, render_balances))

    p = ctl.command(
        "ack-balances",
        "adopt the venues' balances as the ledger's after a mismatch (audited); then `tradectl resume`",
        examples=(
            '  tradectl ack-balances --reason "deposit of 500 USDT"\n'
            '  tradectl ack-balances --venue binance --reason "fee rebate credited" --yes'
        ),
    )
    p.add_argument("--venue", help="only this venue (default: every venue with a mismatch)")
    p.add_argument("-r", "--reason", required=True, help="why the venue's figures are right; kept in the audit trail")
    p.set_defaults(runner=_ack)
