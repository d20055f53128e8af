"""The loopback Binance server's REST API, driven with raw httpx calls."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from sim_server_support import Raw, assert_code, now_ms, quiet_config, signed_query
from venues.binance.signing import HmacSigner
from venues.sim.config import SimAccountConfig, SimInstrumentConfig
from venues.sim.serve import open_binance_server
from venues.sim.server_auth import KeyRing, authenticate_ws
from venues.sim.server_config import DEMO_API_KEY, DEMO_API_SECRET, ApiCredentials

pytestmark = pytest.mark.slow

DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_TS = 1499827319559
DOC_PAYLOAD = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


@pytest.fixture
async def server():
    async with open_binance_server(quiet_config()) as s:
        yield s


@pytest.fixture
async def raw(server):
    async with httpx.AsyncClient(base_url=server.rest_url) as client:
        yield Raw(client, server.credentials("demo"))


# --- signatures ------------------------------------------------------------------------------------


LTCBTC = SimInstrumentConfig(
    symbol="LTCBTC",
    base="LTC",
    quote="BTC",
    tick_size=Decimal("0.000001"),
    step_size=Decimal("0.01"),
    min_qty=Decimal("0.01"),
    min_notional=Decimal("0.0001"),
    price=Decimal("0.100000"),
    level_spacing=Decimal("0.000100"),
    level_qty=Decimal("10"),
    outer_spacing=Decimal("0.001000"),
    outer_qty=Decimal("50"),
    trade_qty=Decimal("1"),
)


async def test_the_documentation_request_verifies_and_places_the_order():
    """Binance's own example (keys, payload, signature) is accepted as sent, byte for byte."""
    config = quiet_config(
        instruments=(LTCBTC,),
        accounts=(SimAccountConfig(name="doc", balances={"BTC": Decimal("1")}),),
        start_ms=DOC_TS - 500,  # the venue's clock at the documentation's moment
    )
    async with open_binance_server(config, credentials=[ApiCredentials(DOC_KEY, DOC_SECRET, "doc")]) as server:
        async with httpx.AsyncClient(base_url=server.rest_url) as client:
            r = await client.post(
                f"/api/v3/order?{DOC_PAYLOAD}&signature={DOC_SIGNATURE}", headers={"X-MBX-APIKEY": DOC_KEY}
            )
            assert r.status_code == 200, r.text
            order = r.json()
            assert order["symbol"] == "LTCBTC" and order["origQty"] == "1.00000000" and order["price"] == "0.10000000"
            state = server.engine.query_order("doc", "LTCBTC", venue_order_id=order["orderId"])
            assert state.quantity == Decimal(1) and state.price == Decimal("0.1")

            # The non-ASCII variant: the signature passes, then the symbol is refused.
            payload = DOC_PAYLOAD.replace("LTCBTC", "%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96")
            signature = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
            r = await client.post(f"/api/v3/order?{payload}&signature={signature}", headers={"X-MBX-APIKEY": DOC_KEY})
            assert_code(r, 400, -1121)

            # One character off and it is a bad signature.
            r = await client.post(
                f"/api/v3/order?{DOC_PAYLOAD}&signature={DOC_SIGNATURE[:-1]}0", headers={"X-MBX-APIKEY": DOC_KEY}
            )
            assert_code(r, 400, -1022)


def test_the_websocket_api_documentation_vector_verifies():
    keys = KeyRing([ApiCredentials(DOC_KEY, DOC_SECRET, "doc")])
    params = {
        "apiKey": DOC_KEY,
        "price": "52000.00",
        "quantity": "0.01000000",
        "recvWindow": 100,
        "side": "SELL",
        "symbol": "BTCUSDT",
        "timeInForce": "GTC",
        "timestamp": 1645423376532,
        "type": "LIMIT",
        "signature": "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24",
    }
    assert authenticate_ws(keys, params, server_ms=1645423376532 + 50).account == "doc"
    with pytest.raises(Exception, match="-1022"):
        authenticate_ws(keys, params | {"quantity": "0.02000000"}, server_ms=1645423376532 + 50)
    with pytest.raises(Exception, match="-1021"):
        authenticate_ws(keys, params, server_ms=1645423376532 + 101)


async def test_signature_over_query_then_body_with_the_query_winning(server, raw):
    creds = server.credentials("demo")
    signer = HmacSigner(creds.api_key, creds.secret)
    query = "symbol=BTCUSDT&side=BUY"
    body = f"type=LIMIT&timeInForce=GTC&quantity=0.01000&price=1000.00&side=SELL&timestamp={now_ms()}"
    signature = signer.sign(query + body)
    r = await raw.client.post(
        f"/api/v3/order?{query}",
        content=f"{body}&signature={signature}",
        headers={"X-MBX-APIKEY": creds.api_key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["side"] == "BUY"  # the query string's side, not the body's
    # The same bytes signed in another order are not the request received.
    r = await raw.client.post(
        f"/api/v3/order?{query}",
        content=f"{body}&signature={signer.sign(body + query)}",
        headers={"X-MBX-APIKEY": creds.api_key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_code(r, 400, -1022)


async def test_security_errors(server, raw):
    client = raw.client
    query = signed_query(server.credentials("demo"), {})
    assert_code(await client.get(f"/api/v3/account?{query}"), 401, -2014)  # no key header
    r = await client.get(f"/api/v3/account?{query}", headers={"X-MBX-APIKEY": "no-such-key"})
    assert_code(r, 401, -2015)
    r = await client.get(f"/api/v3/account?{query}", headers={"X-MBX-APIKEY": DEMO_API_KEY + "x"})
    assert_code(r, 401, -2015)
    wrong = signed_query(ApiCredentials(DEMO_API_KEY, DEMO_API_SECRET + "x", "demo"), {})
    r = await client.get(f"/api/v3/account?{wrong}", headers={"X-MBX-APIKEY": DEMO_API_KEY})
    assert_code(r, 400, -1022)
    r = await client.get(f"/api/v3/account?timestamp={now_ms()}", headers={"X-MBX-APIKEY": DEMO_API_KEY})
    assert "'signature'" in assert_code(r, 400, -1102)["msg"]
    creds = server.credentials("demo")
    query = "recvWindow=5000"
    unsigned_ts = f"{query}&signature={HmacSigner(creds.api_key, creds.secret).sign(query)}"
    r = await client.get(f"/api/v3/account?{unsigned_ts}", headers={"X-MBX-APIKEY": DEMO_API_KEY})
    assert "'timestamp'" in assert_code(r, 400, -1102)["msg"]
    # Timing: too old for the window, too far ahead, and a window beyond the maximum.
    assert_code(await raw.signed("GET", "/api/v3/account", timestamp=now_ms() - 6000), 400, -1021)
    r = await raw.signed("GET", "/api/v3/account", {"recvWindow": "10000"}, timestamp=now_ms() - 6000)
    assert r.status_code == 200, r.text
    assert_code(await raw.signed("GET", "/api/v3/account", timestamp=now_ms() + 5000), 400, -1021)
    assert_code(await raw.signed("GET", "/api/v3/account", {"recvWindow": "70000"}), 400, -1131)
    r = await raw.signed("GET", "/api/v3/account", timestamp=now_ms() * 1000)  # microseconds are fine
    assert r.status_code == 200, r.text


# --- public endpoints ----------------------------------------------------------------------------------


async def test_ping_time_and_exchange_info(server, raw):
    r = await raw.get("/api/v3/ping")
    assert r.status_code == 200 and r.json() == {}
    assert abs((await raw.get("/api/v3/time")).json()["serverTime"] - now_ms()) < 5000
    info = (await raw.get("/api/v3/exchangeInfo")).json()
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert {r["rateLimitType"] for r in info["rateLimits"]} == {"REQUEST_WEIGHT", "ORDERS", "RAW_REQUESTS"}
    btc = info["symbols"][0]
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"] == {
        "filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000",
    }  # fmt: skip
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000" and filters["LOT_SIZE"]["minQty"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
    assert btc["status"] == "TRADING" and btc["baseAsset"] == "BTC" and "LIMIT_MAKER" in btc["orderTypes"]
    one = (await raw.get("/api/v3/exchangeInfo", symbol="ETHUSDT")).json()
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    some = (await raw.get("/api/v3/exchangeInfo", symbols='["ETHUSDT","BTCUSDT"]')).json()
    assert [s["symbol"] for s in some["symbols"]] == ["ETHUSDT", "BTCUSDT"]
    assert_code(await raw.get("/api/v3/exchangeInfo", symbol="DOGEUSDT"), 400, -1121)
    server.engine.set_trading("ETHUSDT", False)
    halted = (await raw.get("/api/v3/exchangeInfo", symbolStatus="BREAK")).json()
    assert [s["symbol"] for s in halted["symbols"]] == ["ETHUSDT"]


async def test_depth_matches_the_engine(server, raw):
    r = await raw.get("/api/v3/depth", symbol="BTCUSDT", limit="5")
    assert r.status_code == 200
    book = r.json()
    snapshot = server.engine.snapshot("BTCUSDT", 5)
    assert book["lastUpdateId"] == snapshot.last_update_id
    assert [[Decimal(p), Decimal(q)] for p, q in book["bids"]] == [list(level) for level in snapshot.bids]
    assert [[Decimal(p), Decimal(q)] for p, q in book["asks"]] == [list(level) for level in snapshot.asks]
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "5"
    r = await raw.get("/api/v3/depth", symbol="BTCUSDT", limit="1000")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == str(5 + 50)
    assert_code(await raw.get("/api/v3/depth"), 400, -1102)
    assert_code(await raw.get("/api/v3/depth", symbol="BTCUSDT", limit="x"), 400, -1100)
    assert_code(await raw.get("/api/v3/nope"), 404, -1000)


# --- orders --------------------------------------------------------------------------------------------


def limit(side: str, price: str, qty: str, **extra: str) -> dict[str, str]:
    return {"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC", "price": price, "quantity": qty} | extra


async def test_new_order_answers_ack_result_and_full(server, raw):
    r = await raw.signed("POST", "/api/v3/order", limit("BUY", "50000.00", "0.001", newOrderRespType="ACK"))
    assert r.status_code == 200, r.text
    ack = r.json()
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    assert ack["orderListId"] == -1 and len(ack["clientOrderId"]) == 22
    assert r.headers["X-MBX-ORDER-COUNT-10S"] == "1" and r.headers["X-MBX-ORDER-COUNT-1D"] == "1"

    r = await raw.signed("POST", "/api/v3/order", limit("BUY", "50000.00", "0.002", newOrderRespType="RESULT", newClientOrderId="mine-1"))
    result = r.json()
    assert result["clientOrderId"] == "mine-1" and result["status"] == "NEW" and "fills" not in result
    assert result["price"] == "50000.00000000" and result["origQty"] == "0.00200000" and result["executedQty"] == "0.00000000"
    assert result["timeInForce"] == "GTC" and result["type"] == "LIMIT" and result["side"] == "BUY"
    assert result["selfTradePreventionMode"] == "NONE" and result["workingTime"] == result["transactTime"]

    ask = server.engine.best_ask("BTCUSDT")
    r = await raw.signed("POST", "/api/v3/order", limit("BUY", f"{ask[0] + 100:.2f}", "0.01000"))
    full = r.json()  # FULL is the default for LIMIT
    assert full["status"] == "FILLED" and full["fills"], full
    assert sum(Decimal(f["qty"]) for f in full["fills"]) == Decimal("0.01")
    assert Decimal(full["cummulativeQuoteQty"]) == sum(Decimal(f["price"]) * Decimal(f["qty"]) for f in full["fills"])
    assert {f["commissionAsset"] for f in full["fills"]} == {"BTC"}
    assert r.headers["X-MBX-ORDER-COUNT-10S"] == "2"  # an order that filled gives its count back

    r = await raw.signed("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.001"})
    market = r.json()
    assert market["status"] == "FILLED" and market["type"] == "MARKET" and market["price"] == "0.00000000"
    r = await raw.signed("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quoteOrderQty": "100"})
    by_quote = r.json()
    assert by_quote["status"] == "FILLED" and Decimal(by_quote["cummulativeQuoteQty"]) <= 100
    assert by_quote["origQuoteOrderQty"] == "100.00000000"


async def test_order_errors(server, raw):
    async def refused(params: dict, status: int, code: int, fragment: str = "") -> None:
        body = assert_code(await raw.signed("POST", "/api/v3/order", params), status, code)
        assert fragment in body["msg"], body

    await refused(limit("BUY", "50000.000000001", "0.001"), 400, -1111, "'price'")
    await refused(limit("BUY", "50000.001", "0.001"), 400, -1013, "PRICE_FILTER")
    await refused(limit("BUY", "50000.00", "0.000015"), 400, -1013, "LOT_SIZE")
    await refused(limit("BUY", "50000.00", "0.123456789"), 400, -1111, "'quantity'")
    await refused(limit("BUY", "50000.00", "0.00001"), 400, -1013, "NOTIONAL")
    await refused(limit("BUY", "50000.00", "1e-3"), 400, -1100, "'quantity'")
    await refused(limit("BUY", "50000.00", "9", symbol="DOGEUSDT"), 400, -1121)
    await refused(limit("UP", "50000.00", "0.001"), 400, -1117)
    await refused(limit("BUY", "50000.00", "0.001", type="STOP"), 400, -1116)
    await refused(limit("BUY", "50000.00", "0.001", timeInForce="DAY"), 400, -1115)
    await refused({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "price": "50000.00", "quantity": "0.001"}, 400, -1102, "timeInForce")
    await refused({"symbol": "BTCUSDT", "type": "LIMIT"}, 400, -1102, "'side'")
    ask = server.engine.best_ask("BTCUSDT")[0]
    maker = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT_MAKER", "price": f"{ask:.2f}", "quantity": "0.001"}
    await refused(maker, 400, -2010, "immediately match and take")
    await refused(maker | {"timeInForce": "GTC"}, 400, -1106, "timeInForce")
    await refused(limit("BUY", "50000.00", "3"), 400, -2010, "insufficient balance")
    r = await raw.signed("POST", "/api/v3/order", limit("BUY", "50000.00", "0.001", newClientOrderId="dup"))
    assert r.status_code == 200
    await refused(limit("BUY", "50000.00", "0.001", newClientOrderId="dup"), 400, -2010, "Duplicate")
    await refused(limit("BUY", "50000.00", "0.001", newClientOrderId="bad id!"), 400, -1100)
    # None of the refusals reached the engine; the one accepted order did.
    assert [o.client_order_id for o in server.engine.open_orders("demo")] == ["dup"]
    assert server.engine.audit() == []


async def test_query_cancel_and_open_orders(server, raw):
    for i, price in enumerate(("50000.00", "50001.00", "50002.00")):
        r = await raw.signed("POST", "/api/v3/order", limit("BUY", price, "0.001", newClientOrderId=f"o{i}"))
        assert r.status_code == 200
    order_id = r.json()["orderId"]
    got = (await raw.signed("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": str(order_id)})).json()
    assert got["clientOrderId"] == "o2" and got["status"] == "NEW" and got["isWorking"] is True
    assert {"time", "updateTime", "stopPrice", "icebergQty", "origQuoteOrderQty", "workingTime"} <= set(got)
    by_cid = (await raw.signed("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "o0"})).json()
    assert by_cid["price"] == "50000.00000000"
    assert_code(await raw.signed("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "nope"}), 400, -2013)
    assert_code(await raw.signed("GET", "/api/v3/order", {"symbol": "BTCUSDT"}), 400, -1102)

    open_ = (await raw.signed("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})).json()
    assert [o["clientOrderId"] for o in open_] == ["o0", "o1", "o2"]

    r = await raw.signed("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "o1", "newClientOrderId": "cxl-1"})
    canceled = r.json()
    assert canceled["status"] == "CANCELED" and canceled["origClientOrderId"] == "o1" and canceled["clientOrderId"] == "cxl-1"
    assert_code(await raw.signed("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "o1"}), 400, -2011)
    assert_code(await raw.signed("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": "999999"}), 400, -2011)
    restricted = {"symbol": "BTCUSDT", "origClientOrderId": "o0", "cancelRestrictions": "ONLY_PARTIALLY_FILLED"}
    assert_code(await raw.signed("DELETE", "/api/v3/order", restricted), 400, -2011)

    r = await raw.signed("DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert sorted(o["origClientOrderId"] for o in r.json()) == ["o0", "o2"]
    assert all(o["status"] == "CANCELED" for o in r.json())
    assert_code(await raw.signed("DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"}), 400, -2011)
    assert (await raw.signed("GET", "/api/v3/openOrders")).json() == []
    assert server.engine.open_orders("demo") == []


async def test_account_and_my_trades(server, raw):
    account = (await raw.signed("GET", "/api/v3/account")).json()
    balances = {b["asset"]: b for b in account["balances"]}
    assert balances["USDT"] == {"asset": "USDT", "free": "100000.00000000", "locked": "0.00000000"}
    assert account["accountType"] == "SPOT" and account["canTrade"] is True
    assert account["commissionRates"]["maker"] == "0.00100000" and account["makerCommission"] == 10

    await raw.signed("POST", "/api/v3/order", limit("BUY", "50000.00", "0.01"))
    ask = server.engine.best_ask("BTCUSDT")[0]
    r = await raw.signed("POST", "/api/v3/order", limit("BUY", f"{ask + 50:.2f}", "0.5"))
    order_id = r.json()["orderId"]
    account = (await raw.signed("GET", "/api/v3/account", {"omitZeroBalances": "true"})).json()
    usdt = next(b for b in account["balances"] if b["asset"] == "USDT")
    assert usdt["locked"] == "500.00000000"
    truth = server.engine.balance("demo", "USDT")
    assert Decimal(usdt["free"]) == truth.free

    trades = (await raw.signed("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"})).json()
    assert trades and all(t["orderId"] == order_id and t["isBuyer"] and not t["isMaker"] for t in trades)
    assert sum(Decimal(t["qty"]) for t in trades) == Decimal("0.5")
    assert [t["id"] for t in trades] == sorted(t["id"] for t in trades)
    later = (await raw.signed("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "fromId": str(trades[1]["id"])})).json()
    assert [t["id"] for t in later] == [t["id"] for t in trades[1:]]
    by_order = (await raw.signed("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "orderId": str(order_id), "limit": "1"})).json()
    assert len(by_order) == 1
    rate = (await raw.signed("GET", "/api/v3/rateLimit/order")).json()
    assert {(r["interval"], r["count"]) for r in rate} == {("SECOND", 1), ("DAY", 1)}
