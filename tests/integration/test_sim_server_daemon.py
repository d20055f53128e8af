"""The whole daemon trading through its real Binance adapter against the loopback venue."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from sim_server_support import quiet_config
from venues.sim.serve import open_binance_server

pytestmark = pytest.mark.slow


async def test_the_daemon_runs_an_execution_on_the_loopback_venue(start_daemon, ctl, monkeypatch):
    async with open_binance_server(quiet_config(market_step=0.2)) as server:
        for name, value in server.credential_env("demo").items():
            monkeypatch.setenv(name, value)
        d = await start_daemon(server.venue_toml("binance") + '\n[feed.symbols]\nbinance = ["BTCUSDT"]\n')
        with trio.fail_after(15):
            while True:  # the first quote comes with the feed's first book update
                reply = await ctl(
                    d, "exec-submit", algo="twap", symbol="BTCUSDT", side="BUY", quantity="0.003",
                    venue="binance", duration="1.5s", slices=3, style="cross",
                )  # fmt: skip
                if reply["ok"] or reply["error"]["code"] != "unavailable":
                    break
                await trio.sleep(0.2)
        assert reply["ok"], reply
        exec_id = reply["result"]["id"]
        with trio.fail_after(20):
            while True:
                shown = (await ctl(d, "exec-show", id=exec_id))["result"]
                if shown["state"] in ("COMPLETED", "CANCELLED", "FAILED"):
                    break
                await trio.sleep(0.1)
        assert shown["state"] == "COMPLETED" and Decimal(shown["filled"]) == Decimal("0.003"), shown
        # What the daemon believes is what the venue did.
        trades = server.engine.my_trades("demo", "BTCUSDT")
        assert sum(t.qty for t in trades) == Decimal("0.003")
        assert all(t.client_order_id.startswith(f"td-{exec_id}-") for t in trades)
        assert server.engine.open_orders("demo") == []
        d.request_stop("test")  # while the venue is still up, so it stops as it would in production
        with trio.fail_after(30):
            await d.finished.wait()
