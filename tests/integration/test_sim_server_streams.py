"""The loopback Binance server's WebSockets: market streams, the WebSocket API and user data."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.trio.client import connect

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import OrderType, Side, TimeInForce
from sim_server_support import Raw, assert_code, keep_the_book_moving, now_ms, quiet_config, wait_for
from venues.base import BookDiff, BookSnapshot, OrderRequest
from venues.binance import codec
from venues.binance.signing import HmacSigner, websocket_payload
from venues.orderbook import BookSync, LocalBook, SyncAction
from venues.sim.serve import open_binance_server
from venues.sim.server_config import ServerSettings

pytestmark = pytest.mark.slow


async def receive_json(ws, timeout: float = 5.0) -> dict:
    with trio.fail_after(timeout):
        return json.loads(await ws.recv())


def limit(side: Side, price: Decimal, qty: str, cid: str) -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT", client_order_id=cid, side=side, order_type=OrderType.LIMIT,
        price=price, quantity=Decimal(qty), time_in_force=TimeInForce.GTC,
    )  # fmt: skip


# --- market streams ---------------------------------------------------------------------------------


async def test_depth_updates_join_snapshots_without_gaps_while_the_market_moves():
    async with open_binance_server(quiet_config(market_step=0.05)) as server, trio.open_nursery() as nursery:
        nursery.start_soon(keep_the_book_moving, server.engine)  # besides the market's own moves
        engine = server.engine
        truth: dict[int, BookSnapshot] = {}
        engine.subscribe_market(
            lambda ev: truth.__setitem__(ev.last_id, engine.snapshot("BTCUSDT", None)) if type(ev) is BookDiff else None,
            ["BTCUSDT"],
        )
        events: list[dict] = []
        sync = BookSync(LocalBook("BTCUSDT", Decimal("0.01")))
        async with connect(f"{server.stream_url}/ws/btcusdt@depth@100ms") as ws, httpx.AsyncClient() as http:
            snapshot_taken = False
            while len(events) < 15:
                event = await receive_json(ws)
                assert event["e"] == "depthUpdate" and event["s"] == "BTCUSDT"
                events.append(event)
                action = sync.on_diff(_diff(event))
                if not snapshot_taken and len(events) >= 3:
                    r = await http.get(f"{server.rest_url}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "5000"})
                    view = codec.DEPTH.decode(r.content)
                    snapshot_taken = True
                    assert sync.on_snapshot(codec.book_snapshot("BTCUSDT", view)) is SyncAction.SYNCED
                    later = [e for e in events if e["u"] > view.last_update_id]
                    if later:
                        assert later[0]["U"] <= view.last_update_id + 1 <= later[0]["u"]
                elif snapshot_taken:
                    assert action is SyncAction.APPLIED or action is SyncAction.IGNORED
        nursery.cancel_scope.cancel()
        for before, after in zip(events, events[1:]):
            assert after["U"] == before["u"] + 1, (before, after)
        assert sync.is_live and sync.gaps == 0
        expected = truth[sync.book.update_id]
        assert sync.book.bids() == tuple(expected.bids) and sync.book.asks() == tuple(expected.asks)


def _diff(event: dict) -> BookDiff:
    return BookDiff(
        symbol=event["s"], first_id=event["U"], last_id=event["u"],
        bids=[(Decimal(p), Decimal(q)) for p, q in event["b"]],
        asks=[(Decimal(p), Decimal(q)) for p, q in event["a"]], venue_ms=event["E"],
    )  # fmt: skip


async def test_combined_stream_of_trades_and_book_ticker():
    async with open_binance_server(quiet_config()) as server:
        engine = server.engine
        url = f"{server.stream_url}/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth5@100ms"
        async with connect(url) as ws:
            ask, ask_qty = engine.best_ask("BTCUSDT")
            engine.place_order("other", limit(Side.BUY, ask, "0.01", "taker-1"))
            seen: dict[str, dict] = {}
            while len(seen) < 3:
                frame = await receive_json(ws)
                seen.setdefault(frame["stream"], frame["data"])
        trade = seen["btcusdt@trade"]
        assert trade["e"] == "trade" and trade["s"] == "BTCUSDT" and Decimal(trade["p"]) == ask
        assert Decimal(trade["q"]) == Decimal("0.01") and trade["m"] is False  # the buyer took
        ticker = seen["btcusdt@bookTicker"]
        assert Decimal(ticker["a"]) == ask and Decimal(ticker["A"]) == ask_qty - Decimal("0.01")
        assert ticker["u"] == engine.last_update_id("BTCUSDT")
        top = seen["btcusdt@depth5@100ms"]
        assert len(top["bids"]) == 5 and top["lastUpdateId"] == engine.last_update_id("BTCUSDT")


async def test_subscribe_requests_and_bad_names():
    settings = ServerSettings(port=0, stream_messages_per_second=50)
    async with open_binance_server(quiet_config(), settings=settings) as server:
        async with connect(f"{server.stream_url}/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@depth"], "id": 1}))
            assert await receive_json(ws) == {"result": None, "id": 1}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "two"}))
            assert await receive_json(ws) == {"result": ["btcusdt@trade", "ethusdt@depth"], "id": "two"}
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@depth"], "id": 3}))
            assert await receive_json(ws) == {"result": None, "id": 3}
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 4}))
            assert (await receive_json(ws))["code"] == 2
            await ws.send("not json")
            assert (await receive_json(ws))["code"] == 3
            await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}))
            assert await receive_json(ws) == {"result": None, "id": 5}
            await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 6}))
            assert await receive_json(ws) == {"result": True, "id": 6}
            ask, _ = server.engine.best_ask("BTCUSDT")
            server.engine.place_order("other", limit(Side.BUY, ask, "0.01", "t"))
            frame = await receive_json(ws)
            assert frame["stream"] == "btcusdt@trade" and frame["data"]["e"] == "trade"
        for path, status in (("/ws/dogeusdt@trade", 400), ("/ws/btcusdt@depth@250ms", 400), ("/elsewhere", 404)):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{server.stream_url}{path}"):
                    pass
            assert refused.value.response.status_code == status


async def test_server_pings_and_connection_lifetime():
    settings = ServerSettings(port=0, ping_interval=0.1, ping_timeout=5, max_connection_seconds=0.6)
    async with open_binance_server(quiet_config(), settings=settings) as server:
        async with connect(f"{server.stream_url}/ws/btcusdt@trade", ping_interval=None) as ws:
            await wait_for(lambda: any(s.ws.latency > 0 for s in server.sessions), what="a pong to a server ping")
            with pytest.raises(ConnectionClosedOK), trio.fail_after(5):
                await ws.recv()


# --- user data over the WebSocket API --------------------------------------------------------------


def subscribe_request(credentials, request_id="s1", **overrides) -> str:
    params = {"apiKey": credentials.api_key, "timestamp": now_ms()} | overrides
    params["signature"] = HmacSigner(credentials.api_key, credentials.secret).sign(websocket_payload(params))
    return json.dumps({"id": request_id, "method": "userDataStream.subscribe.signature", "params": params})


async def test_user_data_events_over_the_websocket_api():
    async with open_binance_server(quiet_config()) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
        raw = Raw(http, server.credentials("demo"))
        async with connect(server.ws_api_url) as ws:
            await ws.send(subscribe_request(server.credentials("demo")))
            answer = await receive_json(ws)
            assert answer["id"] == "s1" and answer["status"] == 200 and answer["result"] == {"subscriptionId": 0}
            assert answer["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT" and answer["rateLimits"][0]["count"] >= 2

            r = await raw.signed("POST", "/api/v3/order", {
                "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                "price": "50000.00", "quantity": "0.002", "newClientOrderId": "rest-1",
            })  # fmt: skip
            assert r.status_code == 200
            new = await receive_json(ws)
            assert new["subscriptionId"] == 0
            report = new["event"]
            assert report["e"] == "executionReport" and report["x"] == "NEW" and report["X"] == "NEW"
            assert report["c"] == "rest-1" and report["i"] == r.json()["orderId"] and report["S"] == "BUY"
            assert report["o"] == "LIMIT" and report["f"] == "GTC" and report["p"] == "50000.00000000"
            assert report["q"] == "0.00200000" and report["z"] == "0.00000000" and report["t"] == -1 and report["w"] is True
            position = (await receive_json(ws))["event"]
            assert position["e"] == "outboundAccountPosition"
            assert position["B"] == [{"a": "USDT", "f": "99900.00000000", "l": "100.00000000"}]

            r = await raw.signed("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "rest-1", "newClientOrderId": "cxl-9"})
            canceled = (await receive_json(ws))["event"]
            assert canceled["x"] == "CANCELED" and canceled["X"] == "CANCELED"
            assert canceled["c"] == "cxl-9" and canceled["C"] == "rest-1"
            assert (await receive_json(ws))["event"]["B"] == [{"a": "USDT", "f": "100000.00000000", "l": "0.00000000"}]

            # A taker order: NEW, then one TRADE report per fill, balances last. Decoded by the
            # project's own codec they are exactly what the engine told its observers.
            engine_events: list = []
            server.engine.subscribe_account("demo", engine_events.append)
            ask = server.engine.best_ask("BTCUSDT")[0]
            r = await raw.signed("POST", "/api/v3/order", {
                "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                "price": f"{ask + 20:.2f}", "quantity": "0.4", "newClientOrderId": "taker-1",
            })  # fmt: skip
            assert r.json()["status"] in ("FILLED", "EXPIRED")
            decoded: list = []
            frames = []
            while not any(type(e) is BalanceUpdate for e in decoded):
                raw_frame = await ws.recv()
                frames.append(json.loads(raw_frame)["event"])
                decoded += codec.frame_user_events("sim", codec.decode_ws_api_frame(raw_frame))
        assert [f["x"] for f in frames[:-1]][0] == "NEW" and set(f["x"] for f in frames[1:-1]) <= {"TRADE", "EXPIRED"}
        trades = [f for f in frames if f.get("x") == "TRADE"]
        assert trades and all(f["t"] > 0 and f["N"] == "BTC" and f["m"] is False for f in trades)
        assert Decimal(trades[-1]["z"]) == sum(Decimal(f["l"]) for f in trades)
        assert Decimal(trades[-1]["Z"]) == sum(Decimal(f["Y"]) for f in trades)
        fills = [e for e in decoded if type(e) is Fill]
        truth_fills = [e for e in engine_events if type(e) is Fill]
        assert [(f.trade_id, f.price, f.qty, f.fee) for f in fills] == [(f.trade_id, f.price, f.qty, f.fee) for f in truth_fills]
        updates = [e for e in decoded if type(e) is OrderUpdate]
        truth_updates = [e for e in engine_events if type(e) is OrderUpdate]
        assert [(u.status, u.filled_qty) for u in updates] == [(u.status, u.filled_qty) for u in truth_updates]
        balances = {b.asset: b for b in decoded if type(b) is BalanceUpdate}
        assert balances["BTC"].free == server.engine.balance("demo", "BTC").free


async def test_websocket_api_methods_and_errors():
    async with open_binance_server(quiet_config()) as server:
        creds = server.credentials("demo")
        async with connect(server.ws_api_url) as ws:

            async def call(text: str) -> dict:
                await ws.send(text)
                return await receive_json(ws)

            assert (await call(json.dumps({"id": 1, "method": "ping"})))["result"] == {}
            assert abs((await call(json.dumps({"id": 2, "method": "time"})))["result"]["serverTime"] - now_ms()) < 5000
            bad_sig = json.loads(subscribe_request(creds))
            bad_sig["params"]["signature"] = "0" * 64
            answer = await call(json.dumps(bad_sig))
            assert answer["status"] == 400 and answer["error"]["code"] == -1022
            unknown = json.loads(subscribe_request(creds))
            unknown["params"]["apiKey"] = "someone-else"
            assert (await call(json.dumps(unknown)))["error"]["code"] == -2015
            old = await call(subscribe_request(creds, timestamp=now_ms() - 60_000))
            assert old["error"]["code"] == -1021
            assert (await call(subscribe_request(creds)))["result"] == {"subscriptionId": 0}
            assert (await call(subscribe_request(creds)))["error"]["code"] == -2035
            other = await call(subscribe_request(server.credentials("other"), request_id="s2"))
            assert other["result"] == {"subscriptionId": 1}
            assert (await call(json.dumps({"id": 9, "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 0}})))["result"] == {}
            assert (await call(subscribe_request(creds)))["result"] == {"subscriptionId": 2}
            assert (await call(json.dumps({"id": 10, "method": "order.place"})))["status"] == 400
            assert (await call("{"))["status"] == 400


async def test_legacy_listen_key_stream():
    async with open_binance_server(quiet_config()) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
        creds = server.credentials("demo")
        headers = {"X-MBX-APIKEY": creds.api_key}
        assert_code(await http.post("/api/v3/userDataStream"), 401, -2014)
        key = (await http.post("/api/v3/userDataStream", headers=headers)).json()["listenKey"]
        assert len(key) == 60
        assert (await http.post("/api/v3/userDataStream", headers=headers)).json()["listenKey"] == key
        async with connect(f"{server.stream_url}/ws/{key}") as ws:
            server.engine.place_order("demo", limit(Side.BUY, Decimal("50000.00"), "0.001", "lk-1"))
            report = await receive_json(ws)
            assert report["e"] == "executionReport" and report["c"] == "lk-1" and report["x"] == "NEW"
            assert (await receive_json(ws))["e"] == "outboundAccountPosition"
        assert (await http.put("/api/v3/userDataStream", params={"listenKey": key}, headers=headers)).json() == {}
        assert (await http.delete("/api/v3/userDataStream", params={"listenKey": key}, headers=headers)).json() == {}
        assert_code(await http.put("/api/v3/userDataStream", params={"listenKey": key}, headers=headers), 400, -1125)


async def test_a_client_sending_too_many_messages_is_cut_off():
    async with open_binance_server(quiet_config()) as server:
        async with connect(f"{server.stream_url}/ws/btcusdt@trade") as ws:
            with pytest.raises(ConnectionClosedError), trio.fail_after(5):
                for i in range(11):  # more than 5 in one second, however the burst falls on the clock
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                while True:
                    await ws.recv()
        await wait_for(lambda: not server.sessions, what="the session to end")
