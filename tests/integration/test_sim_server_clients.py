"""Real clients against the loopback Binance server: the project's adapter, python-binance, the CLI."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio

from daemon.messages import Fill, OrderUpdate
from daemon.model import OrderStatus, OrderType, Side, TimeInForce
from sim_server_support import keep_the_book_moving, quiet_config
from venues.base import BookDiff, OrderNotFound, OrderRequest
from venues.binance.adapter import BinanceAdapter
from venues.orderbook import BookSync, LocalBook
from venues.sim.serve import load_server_config, open_binance_server, serve_main
from venues.sim.server_config import DEMO_API_KEY, DEMO_API_SECRET

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


async def test_the_binance_adapter_trades_end_to_end():
    async with open_binance_server(quiet_config(market_step=0.1)) as server:
        engine = server.engine
        adapter = BinanceAdapter(server.binance_config(), server.signer(), name="loopback")
        try:
            instruments = {i.symbol: i for i in await adapter.instruments()}
            assert instruments["BTCUSDT"].tick_size == Decimal("0.01") and instruments["ETHUSDT"].step_size == Decimal("0.0001")
            assert instruments["BTCUSDT"].min_notional == Decimal(5) and instruments["BTCUSDT"].trading

            # Book: snapshot + stream, the documented way, while the market moves.
            sync = BookSync(LocalBook("BTCUSDT", Decimal("0.01")))
            with trio.fail_after(10):
                async with trio.open_nursery() as movers, adapter.market_stream(["BTCUSDT"]) as events:
                    movers.start_soon(keep_the_book_moving, engine)
                    applied = 0
                    async for event in events:
                        if type(event) is not BookDiff:
                            continue
                        sync.on_diff(event)
                        if sync.needs_snapshot and sync.buffered >= 1:
                            sync.on_snapshot(await adapter.book_snapshot("BTCUSDT", 5000))
                        elif sync.is_live:
                            applied += 1
                            if applied >= 5:
                                movers.cancel_scope.cancel()
                                break
            assert sync.gaps == 0 and sync.book.best_bid() is not None and not sync.book.is_crossed

            async with adapter.user_stream() as user_events:
                # Place, query, cancel a resting order.
                far = OrderRequest(
                    symbol="BTCUSDT", client_order_id="e2e-rest", side=Side.BUY, order_type=OrderType.LIMIT,
                    price=Decimal("40000.00"), quantity=Decimal("0.01"), time_in_force=TimeInForce.GTC,
                )  # fmt: skip
                placed = await adapter.place_order(far)
                assert placed.status is OrderStatus.NEW and placed.client_order_id == "e2e-rest"
                assert (await adapter.query_order("BTCUSDT", "e2e-rest")).venue_order_id == placed.venue_order_id
                assert [o.client_order_id for o in await adapter.open_orders("BTCUSDT")] == ["e2e-rest"]
                canceled = await adapter.cancel_order("BTCUSDT", "e2e-rest")
                assert canceled.status is OrderStatus.CANCELED and canceled.client_order_id == "e2e-rest"
                with pytest.raises(OrderNotFound):
                    await adapter.cancel_order("BTCUSDT", "e2e-rest")
                assert await adapter.cancel_all("BTCUSDT") == []

                # A taker order: its fills arrive on the user stream.
                ask = engine.best_ask("BTCUSDT")[0]
                taker = OrderRequest(
                    symbol="BTCUSDT", client_order_id="e2e-take", side=Side.BUY, order_type=OrderType.LIMIT,
                    price=ask + 10, quantity=Decimal("0.05"), time_in_force=TimeInForce.IOC,
                )  # fmt: skip
                state = await adapter.place_order(taker)
                seen = []
                with trio.fail_after(5):
                    async for event in user_events:
                        seen.append(event)
                        if type(event) is OrderUpdate and event.client_order_id == "e2e-take" and event.status in (
                            OrderStatus.FILLED, OrderStatus.EXPIRED,
                        ):  # fmt: skip
                            break
            fills = [e for e in seen if type(e) is Fill and e.client_order_id == "e2e-take"]
            assert fills and sum(f.qty for f in fills) == state.filled_qty
            trades = await adapter.my_trades("BTCUSDT")
            assert {t.trade_id for t in trades} == {f.trade_id for f in fills}
            balances = {b.asset: b for b in await adapter.balances()}
            assert balances["BTC"].free == engine.balance("demo", "BTC").free
        finally:
            await adapter.aclose()
        assert engine.audit() == []


async def test_python_binance_reads_the_book_trades_and_reads_balances():
    pytest.importorskip("binance.client", reason="python-binance is a test-only dependency")
    from binance.client import Client
    from binance.exceptions import BinanceAPIException

    async with open_binance_server(quiet_config()) as server:

        def session() -> dict:
            client = Client(DEMO_API_KEY, DEMO_API_SECRET, ping=False)
            client.API_URL = f"{server.rest_url}/api"
            try:
                client.ping()
                out = {"book": client.get_order_book(symbol="BTCUSDT", limit=5)}
                order = client.create_order(
                    symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                    quantity="0.00100", price="50000.00", newClientOrderId="pb-1",
                )  # fmt: skip
                out["placed"] = order
                out["queried"] = client.get_order(symbol="BTCUSDT", orderId=order["orderId"])
                out["open"] = client.get_open_orders(symbol="BTCUSDT")
                out["canceled"] = client.cancel_order(symbol="BTCUSDT", orderId=order["orderId"])
                out["usdt"] = client.get_asset_balance(asset="USDT")
                try:
                    client.get_order(symbol="BTCUSDT", origClientOrderId="missing")
                except BinanceAPIException as exc:
                    out["missing"] = (exc.status_code, exc.code)
                return out
            finally:
                client.close_connection()

        out = await trio.to_thread.run_sync(session)
        # The book was read before the order rested and was cancelled: two updates ago.
        assert out["book"]["lastUpdateId"] == server.engine.last_update_id("BTCUSDT") - 2
        assert len(out["book"]["bids"]) == 5
        assert out["placed"]["clientOrderId"] == "pb-1" and out["placed"]["status"] == "NEW"
        assert out["queried"]["price"] == "50000.00000000" and [o["clientOrderId"] for o in out["open"]] == ["pb-1"]
        assert out["canceled"]["status"] == "CANCELED"
        assert out["usdt"] == {"asset": "USDT", "free": "100000.00000000", "locked": "0.00000000"}
        assert out["missing"] == (400, -2013)
        assert server.engine.open_orders("demo") == []


def _free_port_pair() -> int:
    """A port N with N + 1 free too (REST and WebSockets)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports")


async def test_the_venue_command_serves_until_ctrl_c():
    port = _free_port_pair()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.main", "venue", "--protocol", "binance", "--port", str(port), "--seed", "4"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            with trio.fail_after(20):
                while True:
                    try:
                        if (await http.get("/api/v3/ping")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=20))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert DEMO_API_KEY in output and DEMO_API_SECRET in output
    assert f"ws://127.0.0.1:{port + 1}/ws-api/v3" in output and "seed               4" in output


def test_the_venue_command_reads_its_config_file(tmp_path):
    path = tmp_path / "venue.toml"
    path.write_text(
        "[venues.mysim]\n"
        'type = "sim"\n'
        "seed = 9\n"
        "[venue_server]\n"
        "port = 19000\n"
        "request_weight_per_minute = 100\n"
        "[venue_server.faults]\n"
        "error_after_rate = 0.25\n"
        'paths = ["/api/v3/order"]\n'
    )
    sim, settings, faults = load_server_config(str(path), seed=None, port=None)
    assert sim.seed == 9 and settings.port == 19000 and settings.request_weight_per_minute == 100
    assert faults.error_after_rate == 0.25 and faults.paths == ("/api/v3/order",)
    sim, settings, _ = load_server_config(str(path), seed=3, port=19100)
    assert sim.seed == 3 and settings.port == 19100
    bad = tmp_path / "bad.toml"
    bad.write_text("[venue_server]\nprot = 1\n")
    args = argparse.Namespace(protocol="binance", config=str(bad), seed=None, port=None)
    assert serve_main(args) == 78  # EX_CONFIG, with the key named on stderr
