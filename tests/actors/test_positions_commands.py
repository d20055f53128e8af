"""positions, pnl, fills, report, balances and ack-balances through the real control socket,
and tradectl's rendering of them.

Fills are fed the way the gateway will: journaled first, then published on
topics.FILL. Instruments are added to ``services["instruments"]`` as a
gateway does when it loads its venue.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from decimal import Decimal as D

import trio

from daemon import topics
from daemon.ctl import main as tradectl
from daemon.messages import BalanceUpdate, Fill, OrderIntent, Quote
from daemon.model import Instrument, OrderType, Side

BTCUSDT = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"))
CONFIG = """
[positions]
balance_grace = 0.0
publish_interval = 0.05
"""
LIMIT = 20


def fill(trade_id, cid, side, qty, price, *, fee="0", ms=None):
    return Fill(
        venue="sim",
        symbol="BTCUSDT",
        client_order_id=cid,
        trade_id=str(trade_id),
        side=side,
        price=D(price),
        qty=D(qty),
        fee=D(fee),
        fee_asset="USDT",
        is_maker=False,
        venue_ms=ms if ms is not None else time.time_ns() // 1_000_000 - 60_000,
    )


async def feed(d, *fills):
    journal = d.services["journal"]
    for f in fills:
        if await journal.record_fill(f):
            await d.bus.publish(topics.FILL, f)


async def until(ctl, d, cmd, predicate, **args):
    with trio.fail_after(LIMIT):
        while True:
            reply = await ctl(d, cmd, **args)
            if reply["ok"] and predicate(reply["result"]):
                return reply["result"]
            await trio.sleep(0.02)


async def trading_day(d, ctl):
    """100 000 USDT at the venue, an execution e1 buying at an arrival mid of 64 000 (two fills),
    and a manual sell in between."""
    d.services["instruments"][("sim", "BTCUSDT")] = BTCUSDT
    journal = d.services["journal"]
    await journal.record_execution(
        "e1", algo="twap", venue="sim", symbol="BTCUSDT", side=Side.BUY, quantity=D("0.5"),
        params={"arrival_mid": "64000", "decision_price": "64000"}, by="test",
    )
    for seq in (0, 1):
        await journal.record_intent(
            OrderIntent(
                client_order_id=f"td-e1-{seq}", exec_id="e1", seq=seq, venue="sim", symbol="BTCUSDT",
                side=Side.BUY, order_type=OrderType.LIMIT, quantity=D("0.5"), price=D("64000"),
            )
        )
    await d.bus.publish(topics.BALANCE, BalanceUpdate(venue="sim", asset="USDT", free=D("100000"), locked=D(0), venue_ms=1))
    await until(ctl, d, "balances", lambda r: any(b["ours"] == "100000" for b in r["rows"]))
    await feed(
        d,
        fill(1, "td-e1-0", Side.BUY, "0.5", "64000", fee="3.2"),
        fill(2, "manual-1", Side.SELL, "0.2", "64500"),
        fill(3, "td-e1-1", Side.BUY, "0.1", "64100"),
    )
    await d.bus.publish(
        topics.QUOTE, Quote(venue="sim", symbol="BTCUSDT", bid=D("64599"), bid_qty=D(1), ask=D("64601"), ask_qty=D(1), ts=0)
    )
    await until(ctl, d, "positions", lambda r: r["positions"] and r["positions"][0]["mark"] == "64600")


async def test_positions_pnl_fills_and_report_over_the_socket(start_daemon, ctl):
    d = await start_daemon(CONFIG)
    await trading_day(d, ctl)

    positions = (await ctl(d, "positions"))["result"]
    [p] = positions["positions"]
    assert (D(p["quantity"]), D(p["avg_entry_price"]), p["side"]) == (D("0.4"), D("64025"), "LONG")
    assert (D(p["unrealised_pnl"]), p["price_decimals"], p["qty_decimals"]) == (D("230"), 2, 5)
    assert positions["summary"]["currency"] == "USDT"

    pnl = (await ctl(d, "pnl"))["result"]
    assert (D(pnl["realised"]), D(pnl["unrealised"]), D(pnl["fees"])) == (D("96.8"), D("230"), D("3.2"))
    assert pnl["performance"]["start_equity"] is not None and pnl["curve_points"] >= 1

    fills = (await ctl(d, "fills"))["result"]
    assert [f["trade_id"] for f in fills["fills"]] == ["1", "2", "3"] and fills["matched"] == 3
    assert [f["exec_id"] for f in fills["fills"]] == ["e1", None, "e1"]
    by_exec = (await ctl(d, "fills", exec="e1"))["result"]
    assert [f["trade_id"] for f in by_exec["fills"]] == ["1", "3"]
    latest = (await ctl(d, "fills", limit=1))["result"]
    assert [f["trade_id"] for f in latest["fills"]] == ["3"] and latest["matched"] == 3
    assert (await ctl(d, "fills", since="2h"))["result"]["matched"] == 3
    assert (await ctl(d, "fills", since="1s"))["result"]["matched"] == 0  # the fills are a minute old
    bad = await ctl(d, "fills", since="last tuesday")
    assert not bad["ok"] and bad["error"]["code"] == "bad_args" and "24h" in bad["error"]["message"]
    assert (await ctl(d, "fills", limit=-1))["error"]["code"] == "bad_args"

    report = (await ctl(d, "report", since="24h"))["result"]
    assert report["fills"] == 3 and report["unbenchmarked_fills"] == 1
    e1 = report["tca_by_execution"]["e1"]
    # bought 0.5 at the arrival mid and 0.1 at 100 above it
    assert e1["fills"] == 2 and abs(e1["slippage"] - 10.0) < 1e-9 and abs(e1["fees"] - 3.2) < 1e-9
    assert set(report["tca_by_venue"]) == {"sim"}
    shortfall = report["shortfall_by_execution"]["e1"]
    assert abs(shortfall["shortfall"] - 13.2) < 1e-9 and abs(shortfall["fill_rate"] - 1.2) < 1e-9
    assert (await ctl(d, "report", since="2h", until="3h"))["error"]["code"] == "bad_args"


async def test_a_balance_mismatch_is_shown_and_acknowledged_with_an_audit_record(start_daemon, ctl):
    d = await start_daemon(CONFIG)
    await trading_day(d, ctl)
    # the venue after those fills: 100000 - 32003.2 + 12900 - 6410, and 500 USDT more (a deposit we did not see)
    await d.bus.publish(topics.BALANCE, BalanceUpdate(venue="sim", asset="USDT", free=D("74986.8"), locked=D(0), venue_ms=2))
    balances = await until(ctl, d, "balances", lambda r: r["mismatches"])
    [row] = [b for b in balances["rows"] if b["asset"] == "USDT"]
    assert (row["status"], D(row["ours"]), D(row["difference"])) == ("MISMATCH", D("74486.8"), D("500"))
    status = (await ctl(d, "status"))["result"]
    assert status["health"] == "CRITICAL" and any("ack-balances" in r for r in status["reasons"])

    refused = await ctl(d, "ack-balances", reason="  ")
    assert refused["error"]["code"] == "bad_args"
    acked = await ctl(d, "ack-balances", reason="deposit of 500 USDT")
    assert acked["ok"], acked
    [ack] = acked["result"]["acknowledged"]
    assert ack["venue"] == "sim" and ack["reason"] == "deposit of 500 USDT"
    balances = (await ctl(d, "balances"))["result"]
    assert balances["mismatches"] == [] and [D(b["ours"]) for b in balances["rows"] if b["asset"] == "USDT"] == [D("74986.8")]
    with trio.fail_after(LIMIT):
        while True:
            commands = await d.services["journal"].commands()
            if any(c.command == "ack-balances" and c.ok for c in commands):
                break
            await trio.sleep(0.02)
    with trio.fail_after(LIMIT):
        while len(acks := [c for c in await d.services["journal"].commands() if c.command == "ack-balances"]) < 2:
            await trio.sleep(0.02)
    refusal, audit = sorted(acks, key=lambda c: bool(c.ok))
    assert refusal.ok is False and refusal.result.startswith("bad_args")
    assert audit.args["reason"] == "deposit of 500 USDT" and audit.user and audit.ok


async def test_tradectl_renders_tables_csv_and_json(start_daemon, ctl, capsys):
    d = await start_daemon(CONFIG)
    await trading_day(d, ctl)
    socket = str(d.socket_path)

    async def run(*argv):
        capsys.readouterr()
        code = await trio.to_thread.run_sync(functools.partial(tradectl, ["--socket", socket, *argv]))
        return code, capsys.readouterr().out

    code, out = await run("positions")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["VENUE", "SYMBOL", "SIDE", "QTY"]
    assert row.split()[:6] == ["sim", "BTCUSDT", "LONG", "0.40000", "64,025.00", "64,600.00"]
    assert "+230.00" in row and "equity" in out

    code, out = await run("fills", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["trade_id"], r["qty"], r["price"], r["fee"]) for r in rows] == [
        ("1", "0.5", "64000", "3.2"),
        ("2", "0.2", "64500", "0"),
        ("3", "0.1", "64100", "0"),
    ]
    assert rows[0]["exec_id"] == "e1" and rows[0]["time_utc"].count(":") == 2

    code, out = await run("fills", "--exec", "e1", "--limit", "1")
    assert code == 0 and "0.10000" in out and "64,100.00" in out and "the latest 1 of 2" in out

    code, out = await run("pnl", "--json")
    assert code == 0 and D(json.loads(out)["realised"]) == D("96.8")

    code, out = await run("report", "--since", "24h")
    assert code == 0 and "e1" in out and "1 fills have no arrival benchmark" in out

    code, out = await run("balances")
    assert code == 0 and "USDT" in out

    code, out = await run("ack-balances", "--reason", "nothing to adopt", "--yes")
    assert code == 1  # no mismatch: refused

    code, out = await run("report", "--since", "yesterday-ish", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "bad_args"


async def test_the_journal_path_comes_from_the_config_and_reload_keeps_the_accounting_method(start_daemon, ctl, tmp_path):
    path = tmp_path / "elsewhere" / "book.sqlite"
    d = await start_daemon(f'[journal]\npath = "{path}"\n[positions]\nmethod = "fifo"\nbalance_grace = 30.0\n')
    assert d.services["journal"].path == path and path.exists()
    status = (await ctl(d, "status"))["result"]
    assert status["extra"]["journal"]["path"] == str(path) and status["extra"]["positions"]["method"] == "fifo"

    from daemon.config import parse

    for hook in d.reload_hooks:
        hook(parse('[positions]\nmethod = "lifo"\nbalance_grace = 5.0\n'))
    balances = (await ctl(d, "balances"))["result"]
    assert balances["balance_grace"] == 5.0  # applies at once
    assert (await ctl(d, "status"))["result"]["extra"]["positions"]["method"] == "fifo"  # needs a restart
