"""Executions through the real control socket and through `tradectl`, on a whole in-process daemon.

The daemon runs on trio's real clock (sockets and threads), on the sim venue
with a fast market, so the executions here last a few seconds.
"""

from __future__ import annotations

import json

import pytest
import trio

from daemon import ctl as ctl_main
from daemon.ctl import build
from daemon.ctl_exec import bar_line, render_estimate, render_show, submit_payload

SIM = """
[venues.sim]
type = "sim"
market_step = 0.1

[risk]
price_collar_bps = "2000"

[executions]
progress_interval = 0.2
"""


async def wait_until(condition, timeout=15.0):
    with trio.fail_after(timeout):
        while not await condition():
            await trio.sleep(0.05)


async def live_feed(d) -> None:
    feed = d.services["feeds"]["sim"]

    async def ready() -> bool:
        stats = d.services["executions"].stats.get(("sim", "BTCUSDT"))
        return feed.state.value == "live" and stats is not None and stats.quote is not None

    await wait_until(ready)


async def test_exec_commands_through_the_control_socket(start_daemon, ctl):
    d = await start_daemon(SIM)
    await live_feed(d)

    preview = await ctl(d, "exec-submit", algo="twap", symbol="BTCUSDT", side="buy", quantity="0.01", duration="1h", confirm=False)
    assert preview["ok"], preview
    assert preview["result"]["id"] is None and preview["result"]["estimate"]["expected_bps"] > 0
    assert (await ctl(d, "exec-list"))["result"]["executions"] == []

    bad = await ctl(d, "exec-submit", algo="twap", symbol="BTCUSDT", side="buy", quantity="0.01", duration="1h", rate=0.1)
    assert not bad["ok"] and bad["error"]["code"] == "bad_args" and bad["error"]["message"].startswith("rate:")
    bad = await ctl(d, "exec-submit", algo="iceberg", symbol="BTCUSDT", side="buy", quantity="0.01", display="0.001")
    assert bad["error"]["code"] == "bad_args" and bad["error"]["message"].startswith("limit:")

    long = await ctl(d, "exec-submit", algo="twap", symbol="BTCUSDT", side="buy", quantity="0.01", duration="1h", style="passive")
    assert long["ok"], long
    long_id = long["result"]["id"]
    assert len(long_id) == 8 and long["result"]["state"] in ("PENDING", "RUNNING")
    assert {"id", "state", "filled", "avg_price", "estimate"} <= set(long["result"])

    short = await ctl(d, "exec-submit", algo="twap", symbol="BTCUSDT", side="buy", quantity="0.002", duration="2s", style="cross", slices=2)
    short_id = short["result"]["id"]

    async def finished() -> bool:
        reply = await ctl(d, "exec-show", id=short_id)
        return reply["result"]["state"] == "COMPLETED"

    await wait_until(finished)
    shown = (await ctl(d, "exec-show", id=short_id))["result"]
    assert {"id", "state", "filled", "avg_price", "slippage_bps", "report"} <= set(shown)
    assert shown["filled"] == "0.002" and shown["report"]["fill_rate"] == pytest.approx(1.0)
    assert "total_bps" in shown["report"]["shortfall"]
    assert "SHORTFALL" in render_show(shown)

    paused = await ctl(d, "exec-pause", id=long_id, reason="test")
    assert paused["ok"] and paused["result"]["state"] == "PAUSED"
    resumed = await ctl(d, "exec-resume", id=long_id)
    assert resumed["ok"] and resumed["result"]["state"] == "RUNNING"
    amended = await ctl(d, "exec-amend", id=long_id, limit="50000", end="+30m")
    assert amended["ok"] and amended["result"]["limit_price"] == "50000"
    refused = await ctl(d, "exec-amend", id=long_id, limit="50000.001")
    assert refused["error"]["code"] == "bad_args" and refused["error"]["message"].startswith("limit:")

    listed = (await ctl(d, "exec-list"))["result"]["executions"]
    assert [r["id"] for r in listed] == [long_id, short_id] or {r["id"] for r in listed} == {long_id, short_id}
    status = (await ctl(d, "status"))["result"]
    assert status["extra"]["executions"]["running"] == 1

    killed = await ctl(d, "kill", reason="test")
    assert killed["ok"], killed
    assert killed["result"]["executions_stopped"] == 1
    after = (await ctl(d, "exec-show", id=long_id))["result"]
    assert after["state"] == "CANCELLED"
    refused = await ctl(d, "exec-submit", algo="pov", symbol="BTCUSDT", side="buy", quantity="0.01", rate=0.1)
    assert refused["error"]["code"] == "refused" and "HALTED" in refused["error"]["message"]


async def test_tradectl_submits_watches_and_shows_an_execution(start_daemon, capsys):
    d = await start_daemon(SIM)
    await live_feed(d)
    sock = str(d.socket_path)

    def run(*argv: str) -> tuple[int, str, str]:
        code = ctl_main.main(list(argv))
        out, err = capsys.readouterr()
        # the daemon runs in this process: its log lines share stdout with tradectl's output
        out = "".join(line for line in out.splitlines(keepends=True) if not line.startswith("ts="))
        return code, out, err

    # not on a terminal and without --yes: nothing starts
    code, out, err = await trio.to_thread.run_sync(run, "exec", "twap", "BTCUSDT", "buy", "0.002", "--duration", "2s", "--socket", sock)
    assert code == 1 and "refusing without --yes" in err and "pre-trade estimate" in out
    assert d.services["executions"].running() == []

    code, out, err = await trio.to_thread.run_sync(
        run, "exec", "twap", "BTCUSDT", "buy", "0.002", "--duration", "3s", "--style", "cross", "--socket", sock, "--json", "--yes"
    )
    assert code == 0, err
    result = json.loads(out)
    assert {"id", "state", "filled", "avg_price", "estimate"} <= set(result)
    exec_id = result["id"]

    code, out, err = await trio.to_thread.run_sync(run, "watch", exec_id, "--socket", sock)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{exec_id} TWAP BUY BTCUSDT")
    assert any(line.startswith("COMPLETED") and "100.0%" in line for line in lines)
    assert any("COMPLETED by scheduler" in line for line in lines)

    code, out, err = await trio.to_thread.run_sync(run, "--json", "exec", "show", exec_id[:6], "--socket", sock)
    shown = json.loads(out)
    assert code == 0 and shown["id"] == exec_id and shown["state"] == "COMPLETED"
    assert {"filled", "avg_price", "slippage_bps", "report"} <= set(shown)
    code, out, err = await trio.to_thread.run_sync(run, "exec", "list", "--socket", sock)
    assert code == 0 and exec_id in out and "COMPLETED" in out
    code, out, err = await trio.to_thread.run_sync(run, "exec", "show", "ffffffff", "--socket", sock)
    assert code == 1 and "no execution ffffffff" in err
    code, out, err = await trio.to_thread.run_sync(run, "exec", "pov", "BTCUSDT", "buy", "1", "--rate", "2", "--socket", sock, "--yes")
    assert code == 1 and "rate:" in err


def test_tradectl_exec_arguments_parse_as_documented():
    parser = build().parser

    def parse(*argv: str):
        return parser.parse_args(list(argv))

    a = parse("exec", "twap", "BTCUSDT", "buy", "0.5", "--duration", "30m", "--limit", "64000")
    assert submit_payload(a) == {
        "algo": "twap", "symbol": "BTCUSDT", "side": "buy", "quantity": "0.5", "duration": "30m", "limit": "64000",
    }  # fmt: skip
    a = parse("exec", "vwap", "btcusdt", "sell", "1", "--duration", "2h", "--max-participation", "0.1", "--json", "--socket", "/s")
    assert a.json and a.socket == "/s" and submit_payload(a)["max_participation"] == 0.1
    assert submit_payload(a)["symbol"] == "BTCUSDT"
    a = parse("--yes", "exec", "iceberg", "BTCUSDT", "buy", "2", "--display", "0.05", "--limit", "60000")
    assert a.yes and submit_payload(a)["display"] == "0.05"
    a = parse("exec", "pov", "ETHUSDT", "buy", "10", "--rate", "0.05", "--venue", "binance", "-y")
    assert a.yes and submit_payload(a) == {"algo": "pov", "symbol": "ETHUSDT", "side": "buy", "quantity": "10", "venue": "binance", "rate": 0.05}
    a = parse("exec", "twap", "BTCUSDT", "BUY", "5000", "--quote", "--duration", "1h", "--no-volatility-pause")
    assert submit_payload(a)["quote_amount"] == "5000" and "quantity" not in submit_payload(a)
    assert submit_payload(a)["volatility_pause"] is False
    a = parse("exec", "vwap", "BTCUSDT", "buy", "1", "--duration", "1h", "--profile", "1,2,1")
    assert submit_payload(a)["profile"] == [1.0, 2.0, 1.0]
    a = parse("exec", "amend", "7f3a", "--limit", "none", "--end", "16:00", "--json")
    assert (a.id, a.limit, a.end, a.json) == ("7f3a", "none", "16:00", True)
    a = parse("exec", "--json", "cancel", "7f3a", "-r", "enough")
    assert a.json and a.reason == "enough"
    for argv in (
        ("exec",),
        ("exec", "twap", "BTCUSDT", "hold", "1"),
        ("exec", "iceberg", "BTCUSDT", "buy", "1"),  # --display is required
        ("exec", "pov", "BTCUSDT", "buy", "1"),  # --rate is required
        ("exec", "twap", "BTCUSDT", "buy", "1", "--rate", "0.1"),  # not a TWAP option
    ):
        assert ctl_main.main(list(argv)) == 2, argv


def test_the_estimate_and_the_progress_bar_read_well():
    preview = {
        "algo": "twap", "side": "BUY", "quantity": "0.5", "quote_amount": None, "symbol": "BTCUSDT", "venue": "sim",
        "duration": 1800.0, "limit_price": "64000", "style": "PASSIVE", "urgency": "MEDIUM", "base": "BTC",
        "estimate": {
            "model": "almgren-chriss", "expected_bps": 12.5, "expected_quote": 40.0, "notional": 32000.0, "price": 64000.0,
            "spread_bps": 0.4, "impact_bps": 2.1, "fee_bps": 10.0, "risk_bps": 20.0, "risk_quote": 64.0,
            "daily_volatility": 0.03, "volatility_source": "config", "daily_volume": 2500.0, "volume_source": "feed",
            "participation": 0.0096, "currency": "USDT",
        },
    }  # fmt: skip
    text = render_estimate(preview)
    assert "TWAP BUY 0.5 BTC BTCUSDT at sim over 30m00s, limit 64000" in text
    assert "12.5 bps = 40.00 USDT" in text and "timing risk ±20.0 bps" in text and "(config)" in text
    line = bar_line({"filled_pct": 50.0, "schedule_pct": 75.0, "quantity": "0.5", "filled": "0.25", "avg_price": 64010.5,
                     "slippage_bps": 1.25, "schedule_deviation_pct": -25.0, "participation": 0.02, "children_working": 1,
                     "remaining": 450.0})  # fmt: skip
    assert line.startswith("[############......|.....]  50.0%")
    assert "0.25/0.5" in line and "slip +1.2bps" in line and "vs plan -25.0%" in line and "left 7m30s" in line
