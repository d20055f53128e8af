"""Rate limits of the loopback Binance server: weight headers, 429 with Retry-After, 418 bans, order counts."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
import trio
from websockets.exceptions import InvalidStatus
from websockets.trio.client import connect

from daemon.model import OrderType, Side, TimeInForce
from sim_server_support import Raw, assert_code, now_ms, quiet_config
from venues.base import OrderRequest, RateLimited, VenueBanned
from venues.binance.adapter import BinanceAdapter
from venues.sim.serve import open_binance_server
from venues.sim.server_config import ServerSettings

pytestmark = pytest.mark.slow


async def away_from_minute_edge(margin_ms: int = 8000) -> None:
    """Fixed windows reset on the minute: keep a test's requests inside one window."""
    left = 60_000 - now_ms() % 60_000
    if left < margin_ms:
        await trio.sleep(left / 1000 + 0.05)


async def test_weight_is_reported_on_every_answer():
    async with open_binance_server(quiet_config()) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
        await away_from_minute_edge()
        raw = Raw(http, server.credentials("demo"))
        r = await raw.get("/api/v3/ping")
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == r.headers["X-MBX-USED-WEIGHT"] == "1"
        r = await raw.get("/api/v3/exchangeInfo")
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "21"
        r = await raw.signed("GET", "/api/v3/openOrders")  # 80 without a symbol
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "101"
        r = await raw.signed("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": "1"})  # errors count too
        assert r.status_code == 400 and r.headers["X-MBX-USED-WEIGHT-1M"] == "105"
        assert_code(await raw.get("/api/v3/depth", symbol="NOPE"), 400, -1121)


async def test_429_with_retry_after_then_418_for_a_client_that_keeps_going():
    settings = ServerSettings(port=0, request_weight_per_minute=30, ban_after=2, ban_seconds=1.5)
    async with open_binance_server(quiet_config(), settings=settings) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
        await away_from_minute_edge()
        assert (await http.get("/api/v3/exchangeInfo")).status_code == 200
        r = await http.get("/api/v3/exchangeInfo")
        assert_code(r, 429, -1003)
        retry_after = int(r.headers["Retry-After"])
        assert 1 <= retry_after <= 60 and r.headers["X-MBX-USED-WEIGHT-1M"] == "40"
        assert_code(await http.get("/api/v3/ping"), 429, -1003)
        assert_code(await http.get("/api/v3/ping"), 429, -1003)
        r = await http.get("/api/v3/ping")
        assert "banned" in assert_code(r, 418, -1003)["msg"]
        assert r.headers["Retry-After"] == "2"
        # The ban covers the WebSocket API and new stream connections too.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{server.stream_url}/ws/btcusdt@trade"):
                pass
        assert refused.value.response.status_code == 418
        # The project's adapter maps both answers to its errors.
        adapter = BinanceAdapter(server.binance_config(), server.signer())
        try:
            with pytest.raises(VenueBanned):
                await adapter.server_time_ms()
        finally:
            await adapter.aclose()
        assert server.limiter.refused_418 >= 2 and server.engine.audit() == []


async def test_websocket_api_requests_share_the_weight_budget():
    settings = ServerSettings(port=0, request_weight_per_minute=3, ban_after=50)
    async with open_binance_server(quiet_config(), settings=settings) as server:
        await away_from_minute_edge()
        async with connect(server.ws_api_url) as ws:
            answers = []
            for i in range(4):
                await ws.send(json.dumps({"id": i, "method": "ping"}))
                answers.append(json.loads(await ws.recv()))
        assert [a["status"] for a in answers] == [200, 200, 200, 429]
        assert [a["rateLimits"][0]["count"] for a in answers] == [1, 2, 3, 4]
        data = answers[-1]["error"]["data"]
        assert data["retryAfter"] > data["serverTime"]


async def test_order_count_headers_and_too_many_orders():
    settings = ServerSettings(port=0, orders_per_day=3)
    async with open_binance_server(quiet_config(), settings=settings) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
        raw = Raw(http, server.credentials("demo"))
        counts = []
        for i in range(3):
            r = await raw.signed("POST", "/api/v3/order", {
                "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                "price": f"{50000 + i}.00", "quantity": "0.001",
            })  # fmt: skip
            assert r.status_code == 200, r.text
            counts.append(r.headers["X-MBX-ORDER-COUNT-1D"])
        assert counts == ["1", "2", "3"]
        r = await raw.signed("POST", "/api/v3/order", {
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "50010.00", "quantity": "0.001",
        })  # fmt: skip
        assert "1 DAY" in assert_code(r, 429, -1015)["msg"]
        assert int(r.headers["Retry-After"]) >= 1
        assert len(server.engine.open_orders("demo")) == 3
        # Another account has its own count.
        other = Raw(http, server.credentials("other"))
        r = await other.signed("POST", "/api/v3/order", {
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "50010.00", "quantity": "0.001",
        })  # fmt: skip
        assert r.status_code == 200 and r.headers["X-MBX-ORDER-COUNT-1D"] == "1"
        # The adapter sees RateLimited for the refused order.
        adapter = BinanceAdapter(server.binance_config(), server.signer())
        try:
            with pytest.raises(RateLimited):
                await adapter.place_order(OrderRequest(
                    symbol="BTCUSDT", client_order_id="x1", side=Side.BUY, order_type=OrderType.LIMIT,
                    price=Decimal("50000"), quantity=Decimal("0.001"), time_in_force=TimeInForce.GTC,
                ))  # fmt: skip
        finally:
            await adapter.aclose()
