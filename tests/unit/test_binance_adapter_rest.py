"""BinanceAdapter's REST side: order parameters, local checks, conversions, credentials, config."""

from decimal import Decimal as D
from urllib.parse import parse_qsl

import httpx
import msgspec
import pytest

from daemon.model import OrderStatus, OrderType, Side, TimeInForce
from venues.base import OrderRejected, OrderRequest, VenueAdapter, VenueBanned
from venues.binance.adapter import BinanceAdapter
from venues.binance.config import BinanceConfig, MissingCredentials, signer_from_secrets
from venues.binance.signing import HmacSigner

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"

EXCHANGE_INFO = {
    "serverTime": 1,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
    ],
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "icebergAllowed": False,
            "isSpotTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
                {"filterType": "NOTIONAL", "minNotional": "5", "maxNotional": "9000000"},
            ],
        }
    ],
}


class Venue:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: dict[tuple[str, str], httpx.Response] = {
            ("GET", "/api/v3/time"): httpx.Response(200, json={"serverTime": 1_700_000_000_000}),
            ("GET", "/api/v3/exchangeInfo"): httpx.Response(200, json=EXCHANGE_INFO),
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.replies.get((request.method, request.url.path), httpx.Response(404, text="no route"))

    def params(self, method: str, path: str) -> list[dict[str, str]]:
        return [
            dict(parse_qsl(r.url.query.decode()))
            for r in self.requests
            if r.method == method and r.url.path == path
        ]


@pytest.fixture
def venue() -> Venue:
    return Venue()


@pytest.fixture
def adapter(venue) -> BinanceAdapter:
    return BinanceAdapter(
        BinanceConfig(rest_url="https://api.test"),
        HmacSigner(API_KEY, SECRET),
        transport=httpx.MockTransport(venue),
        wall_ms=lambda: 1_700_000_000_000,
    )


def order(**kw) -> OrderRequest:
    base = dict(
        symbol="BTCUSDT",
        client_order_id="td-e1-1",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=D("0.00150"),
        price=D("64000.10"),
    )
    return OrderRequest(**(base | kw))


def test_adapter_implements_the_venue_interface(adapter):
    assert isinstance(adapter, VenueAdapter)
    assert adapter.name == "binance"
    assert SECRET not in repr(adapter)


# --- order parameters -----------------------------------------------------------------


def test_limit_order_params_are_plain_strings(adapter):
    assert adapter.order_params(order(price=D("6.4E+4"), quantity=D("1.50000000"))) == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "newClientOrderId": "td-e1-1",
        "newOrderRespType": "RESULT",
        "timeInForce": "GTC",
        "quantity": "1.5",
        "price": "64000",
    }


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_limit_time_in_force(adapter, tif):
    assert adapter.order_params(order(time_in_force=tif))["timeInForce"] == tif.value


def test_limit_maker_sends_no_time_in_force(adapter):
    params = adapter.order_params(order(order_type=OrderType.LIMIT_MAKER, time_in_force=TimeInForce.GTC))
    assert params["type"] == "LIMIT_MAKER" and "timeInForce" not in params


def test_market_orders_by_base_or_quote_quantity(adapter):
    by_base = adapter.order_params(order(order_type=OrderType.MARKET, price=None, quantity=D("0.001")))
    assert by_base["quantity"] == "0.001" and "price" not in by_base and "timeInForce" not in by_base
    by_quote = adapter.order_params(
        order(order_type=OrderType.MARKET, price=None, quantity=None, quote_quantity=D("100.50"))
    )
    assert by_quote["quoteOrderQty"] == "100.5" and "quantity" not in by_quote


@pytest.mark.parametrize(
    "bad, reason",
    [
        (dict(order_type=OrderType.MARKET), "takes no price"),
        (dict(order_type=OrderType.MARKET, price=None, quote_quantity=D(1)), "exactly one"),
        (dict(order_type=OrderType.MARKET, price=None, time_in_force=TimeInForce.IOC), "no time in force"),
        (dict(price=None), "needs a price and a quantity"),
        (dict(quote_quantity=D(5)), "MARKET orders only"),
        (dict(order_type=OrderType.LIMIT_MAKER, time_in_force=TimeInForce.IOC), "no IOC/FOK"),
        (dict(order_type=OrderType.MARKET, price=None, iceberg_qty=D(1)), "limit orders only"),
    ],
)
def test_contradictory_orders_are_refused_locally(adapter, bad, reason):
    with pytest.raises(OrderRejected, match=reason) as info:
        adapter.order_params(order(**bad))
    assert info.value.code == "LOCAL_FILTER"


async def test_unrounded_orders_are_refused_once_filters_are_known(adapter, venue, autojump_clock):
    adapter.order_params(order(price=D("64000.105")))  # filters unknown: the venue will judge
    (inst,) = await adapter.instruments(["BTCUSDT"])
    assert adapter.instrument("BTCUSDT") == inst
    with pytest.raises(OrderRejected, match="PRICE_FILTER.*round"):
        adapter.order_params(order(price=D("64000.105")))
    with pytest.raises(OrderRejected, match="LOT_SIZE"):
        adapter.order_params(order(quantity=D("0.000015")))
    with pytest.raises(OrderRejected, match="NOTIONAL"):
        adapter.order_params(order(quantity=D("0.00001"), price=D("100")))
    with pytest.raises(OrderRejected, match="iceberg"):
        adapter.order_params(order(iceberg_qty=D("0.0001")))
    with pytest.raises(OrderRejected):
        await adapter.place_order(order(price=D("64000.105")))
    assert venue.params("POST", "/api/v3/order") == []


async def test_instruments_adopt_the_venue_rate_limits(adapter, autojump_clock):
    await adapter.instruments()
    usage = adapter.budget.usage()
    assert usage["REQUEST_WEIGHT/60s"] == (20, 1200)
    assert usage["ORDERS/10s"] == (0, 50)


# --- REST calls and conversions --------------------------------------------------------


async def test_place_order_returns_the_venue_state(adapter, venue, autojump_clock):
    venue.replies[("POST", "/api/v3/order")] = httpx.Response(
        200,
        json={
            "symbol": "BTCUSDT", "orderId": 99, "orderListId": -1, "clientOrderId": "td-e1-1",
            "transactTime": 1_700_000_000_050, "price": "64000.10000000", "origQty": "0.00150000",
            "executedQty": "0.00050000", "cummulativeQuoteQty": "32.00005000", "status": "PARTIALLY_FILLED",
            "timeInForce": "GTC", "type": "LIMIT", "side": "BUY", "workingTime": 1, "selfTradePreventionMode": "NONE",
        },
    )  # fmt: skip
    state = await adapter.place_order(order())
    assert state.status is OrderStatus.PARTIALLY_FILLED
    assert (state.venue_order_id, state.client_order_id) == ("99", "td-e1-1")
    assert state.filled_qty == D("0.0005") and state.quantity == D("0.0015")
    (sent,) = venue.params("POST", "/api/v3/order")
    assert sent["newClientOrderId"] == "td-e1-1" and sent["quantity"] == "0.0015" and sent["price"] == "64000.1"
    assert "signature" in sent and sent["timestamp"] == "1700000000000"


async def test_cancel_all_with_nothing_open_is_empty(adapter, venue, autojump_clock):
    venue.replies[("DELETE", "/api/v3/openOrders")] = httpx.Response(
        400, json={"code": -2011, "msg": "Unknown order sent."}
    )
    assert await adapter.cancel_all("BTCUSDT") == []
    assert await adapter.emergency_cancel_all("BTCUSDT") == []


async def test_cancel_and_query_name_the_order_by_client_id(adapter, venue, autojump_clock):
    body = {
        "symbol": "BTCUSDT", "origClientOrderId": "td-e1-1", "orderId": 99, "clientOrderId": "venue-cancel-id",
        "price": "64000.1", "origQty": "0.0015", "executedQty": "0", "cummulativeQuoteQty": "0",
        "status": "CANCELED", "type": "LIMIT", "side": "BUY",
    }  # fmt: skip
    venue.replies[("DELETE", "/api/v3/order")] = httpx.Response(200, json=body)
    venue.replies[("GET", "/api/v3/order")] = httpx.Response(
        200, json=body | {"clientOrderId": "td-e1-1", "origClientOrderId": None}
    )
    cancelled = await adapter.cancel_order("BTCUSDT", "td-e1-1")
    assert cancelled.client_order_id == "td-e1-1" and cancelled.status is OrderStatus.CANCELED
    queried = await adapter.query_order("BTCUSDT", "td-e1-1")
    assert queried.client_order_id == "td-e1-1"
    assert venue.params("DELETE", "/api/v3/order")[0]["origClientOrderId"] == "td-e1-1"
    assert venue.params("GET", "/api/v3/order")[0]["origClientOrderId"] == "td-e1-1"


async def test_balances_trades_snapshot_and_time(adapter, venue, autojump_clock):
    venue.replies[("GET", "/api/v3/account")] = httpx.Response(
        200, json={"balances": [{"asset": "USDT", "free": "1000.5", "locked": "10"}]}
    )
    venue.replies[("GET", "/api/v3/myTrades")] = httpx.Response(
        200,
        json=[
            {"symbol": "BTCUSDT", "id": 501, "orderId": 99, "price": "64000", "qty": "0.001", "quoteQty": "64",
             "commission": "0.064", "commissionAsset": "USDT", "time": 5, "isBuyer": False, "isMaker": True}
        ],
    )  # fmt: skip
    venue.replies[("GET", "/api/v3/depth")] = httpx.Response(
        200, json={"lastUpdateId": 77, "bids": [["1.00", "2"]], "asks": [["1.01", "3"]]}
    )
    (bal,) = await adapter.balances()
    assert (bal.asset, bal.free, bal.locked) == ("USDT", D("1000.5"), D(10))
    (trade,) = await adapter.my_trades("BTCUSDT", from_trade_id="500")
    assert trade.trade_id == "501" and trade.side is Side.SELL and trade.is_maker
    assert venue.params("GET", "/api/v3/myTrades")[0]["fromId"] == "500"
    snap = await adapter.book_snapshot("BTCUSDT", depth=5000)
    assert snap.last_update_id == 77 and list(snap.bids) == [(D(1), D(2))]
    assert venue.params("GET", "/api/v3/depth")[0] == {"symbol": "BTCUSDT", "limit": "5000"}
    assert await adapter.server_time_ms() == 1_700_000_000_000


# --- market stream URL ------------------------------------------------------------------


def test_market_stream_url_combines_depth_and_trades(adapter):
    assert adapter.market_stream_url(["BTCUSDT", "ETHBTC"]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade/ethbtc@depth@100ms/ethbtc@trade"
    )
    slow = BinanceAdapter(BinanceConfig(depth_speed_ms=1000))
    assert slow.market_stream_url(["X"]).endswith("streams=x@depth/x@trade")
    with pytest.raises(ValueError, match="1024 per connection"):
        adapter.market_stream_url([f"S{i}" for i in range(513)])
    with pytest.raises(ValueError):
        adapter.market_stream_url([])


# --- credentials and config ----------------------------------------------------------------


@pytest.fixture
def no_credentials(monkeypatch):
    for name in ("CREDENTIALS_DIRECTORY", "TRADINGD_BINANCE_API_KEY", "TRADINGD_BINANCE_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_credentials_come_from_the_environment(no_credentials):
    no_credentials.setenv("TRADINGD_DEMO_KEY", API_KEY)
    no_credentials.setenv("TRADINGD_DEMO_SECRET", SECRET + "\n")
    config = BinanceConfig(api_key_name="demo_key", api_secret_name="demo_secret")
    signer = signer_from_secrets(config)
    assert signer.api_key == API_KEY
    assert signer.sign("x") == HmacSigner(API_KEY, SECRET).sign("x")
    adapter = BinanceAdapter.from_config(config)
    assert SECRET not in repr(adapter)


def test_credentials_from_systemd_credentials_directory(no_credentials, tmp_path):
    (tmp_path / "binance_api_key").write_text(API_KEY)
    (tmp_path / "binance_api_secret").write_text(SECRET + "\n")
    no_credentials.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    signer = signer_from_secrets(BinanceConfig())
    assert signer.sign("x") == HmacSigner(API_KEY, SECRET).sign("x")


def test_missing_credentials_say_where_to_put_them(no_credentials):
    no_credentials.setenv("TRADINGD_BINANCE_API_KEY", API_KEY)
    with pytest.raises(MissingCredentials) as info:
        signer_from_secrets(BinanceConfig())
    message = str(info.value)
    assert "TRADINGD_BINANCE_API_SECRET" in message and "$CREDENTIALS_DIRECTORY/binance_api_secret" in message
    assert "TRADINGD_BINANCE_API_KEY" not in message


def test_config_rejects_unknown_keys_and_bad_values():
    decode = msgspec.json.Decoder(BinanceConfig).decode
    assert decode(b'{"type": "binance", "recv_window_ms": 10000}').recv_window_ms == 10000
    with pytest.raises(msgspec.ValidationError, match="api_secret"):
        decode(b'{"api_secret": "do-not-put-me-here"}')
    with pytest.raises(msgspec.ValidationError, match="recv_window_ms"):
        decode(b'{"recv_window_ms": 70000}')
    with pytest.raises(msgspec.ValidationError, match="must not end with"):
        decode(b'{"rest_url": "https://api.binance.com/"}')
    with pytest.raises(msgspec.ValidationError, match="ws:// or wss://"):
        decode(b'{"market_stream_url": "https://stream.binance.com"}')
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"key_type": "rsa"}')


def test_daemon_config_decodes_a_binance_venue_table():
    from daemon.config import ConfigError, parse

    config = parse(
        """
[venues.testnet]
type = "binance"
rest_url = "https://testnet.binance.vision"
api_key_name = "testnet_api_key"
api_secret_name = "testnet_api_secret"
"""
    )
    venue = config.venues["testnet"]
    assert isinstance(venue, BinanceConfig) and venue.api_secret_name == "testnet_api_secret"
    with pytest.raises(ConfigError) as info:
        parse('[venues.b]\ntype = "binance"\nrecv_window_ms = 0\n')
    assert "venues.b.recv_window_ms" in str(info.value)
    with pytest.raises(ConfigError, match="secrets do not belong"):
        parse('[venues.b]\ntype = "binance"\napi_secret = "x"\n')


def test_testnet_preset():
    config = BinanceConfig.testnet(recv_window_ms=3000)
    assert config.rest_url == "https://testnet.binance.vision"
    assert config.market_stream_url == "wss://stream.testnet.binance.vision"
    assert config.ws_api_url == "wss://ws-api.testnet.binance.vision/ws-api/v3"
    assert config.recv_window_ms == 3000


async def test_streams_are_not_opened_while_the_venue_bans_us(adapter, autojump_clock):
    adapter.budget.block(300, banned=True)
    with pytest.raises(VenueBanned):
        async with adapter.market_stream(["BTCUSDT"]):
            pass
    with pytest.raises(VenueBanned):
        async with adapter.user_stream():
            pass
