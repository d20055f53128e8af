"""Binance REST client against httpx.MockTransport: signing, errors, retries, rate limits."""

from collections.abc import Callable
from urllib.parse import parse_qsl

import httpx
import pytest
import trio
import trio.testing

from venues.base import (
    OrderNotFound,
    OrderRejected,
    RateLimited,
    UnknownOutcome,
    VenueBanned,
    VenueError,
    VenueUnavailable,
)
from venues.binance.client import BinanceRestClient, depth_weight
from venues.binance.config import BinanceConfig
from venues.binance.ratelimit import WEIGHT, RateBudget, RateLimit
from venues.binance.signing import HmacSigner

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_TIMESTAMP = 1499827319559
ORDER_JSON = (
    b'{"symbol":"LTCBTC","orderId":7,"clientOrderId":"c1","transactTime":1,"price":"0.1","origQty":"1",'
    b'"executedQty":"0","cummulativeQuoteQty":"0","status":"NEW","timeInForce":"GTC","type":"LIMIT","side":"BUY"}'
)

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeVenue:
    """Answers by (method, path) from scripted replies; the last reply repeats. Records every request."""

    def __init__(self, server_time: int = DOC_TIMESTAMP) -> None:
        self.server_time = server_time
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        if key == ("GET", "/api/v3/time") and key not in self.routes:
            return httpx.Response(200, json={"serverTime": self.server_time})
        replies = self.routes.get(key)
        if not replies:
            return httpx.Response(404, text="no route")
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, httpx.Response):
            reply = reply(request)
            if not isinstance(reply, httpx.Response):
                reply = await reply
        return reply


def error(status: int, code: int, msg: str, headers=None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg}, headers=headers)


@pytest.fixture
def venue() -> FakeVenue:
    return FakeVenue()


def make_client(venue: FakeVenue, *, wall_ms=lambda: DOC_TIMESTAMP - 559, budget=None, signer="hmac", **config):
    cfg = BinanceConfig(rest_url="https://api.test", retry_backoff=0.5, **config)
    return BinanceRestClient(
        cfg,
        HmacSigner(API_KEY, SECRET) if signer == "hmac" else signer,
        transport=httpx.MockTransport(venue),
        wall_ms=wall_ms,
        budget=budget or RateBudget(),
    )


DOC_ORDER = {"symbol": "LTCBTC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "0.1"}


async def test_signed_order_matches_the_documented_request(venue, autojump_clock):
    venue.on("POST", "/api/v3/order", httpx.Response(200, content=ORDER_JSON))
    client = make_client(venue)
    view = await client.new_order(DOC_ORDER)
    assert view.order_id == 7
    assert client.time_offset_ms == 559
    (sent,) = venue.calls("POST", "/api/v3/order")
    assert sent.url.query.decode() == (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
        "&timestamp=1499827319559&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )
    assert sent.headers["X-MBX-APIKEY"] == API_KEY
    assert sent.content == b""
    await client.aclose()


async def test_time_offset_is_measured_once_at_the_first_signed_call(venue, autojump_clock):
    venue.on("GET", "/api/v3/account", httpx.Response(200, json={"balances": []}))
    client = make_client(venue)
    await client.account()
    await client.account()
    assert len(venue.calls("GET", "/api/v3/time")) == 1
    assert [dict(parse_qsl(r.url.query.decode()))["omitZeroBalances"] for r in venue.calls("GET", "/api/v3/account")] == [
        "true",
        "true",
    ]


async def test_time_offset_uses_the_midpoint_of_the_round_trip(venue, autojump_clock):
    ticks = iter([1000, 1100])
    venue.server_time = 5000
    client = make_client(venue, wall_ms=lambda: next(ticks))
    assert await client.sync_time() == 5000
    assert client.time_offset_ms == 5000 - 1050


async def test_unsigned_market_data_carries_no_key_and_charges_its_weight(venue, autojump_clock):
    venue.on("GET", "/api/v3/depth", httpx.Response(200, json={"lastUpdateId": 5, "bids": [], "asks": []}))
    client = make_client(venue)
    view = await client.depth("BTCUSDT", limit=500)
    assert view.last_update_id == 5
    (sent,) = venue.requests
    assert "X-MBX-APIKEY" not in sent.headers
    assert sent.url.query == b"symbol=BTCUSDT&limit=500"
    assert client.budget.usage()["REQUEST_WEIGHT/60s"][0] == depth_weight(500) == 25


async def test_exchange_info_symbols_are_a_json_array(venue, autojump_clock):
    venue.on("GET", "/api/v3/exchangeInfo", httpx.Response(200, json={"symbols": []}))
    await make_client(venue).exchange_info(["BTCUSDT", "ETHUSDT"])
    (sent,) = venue.requests
    assert dict(parse_qsl(sent.url.query.decode())) == {"symbols": '["BTCUSDT","ETHUSDT"]'}


async def test_signature_of_a_base64_signer_is_percent_encoded(venue, autojump_clock):
    class Base64Signer:
        api_key = "edkey"
        key_type = "ED25519"
        needs_url_encoding = True

        def sign(self, payload: str) -> str:
            return "ab+/cd=="

    venue.on("GET", "/api/v3/openOrders", httpx.Response(200, json=[]))
    await make_client(venue, signer=Base64Signer()).open_orders("BTCUSDT")
    sent = venue.calls("GET", "/api/v3/openOrders")[0]
    assert sent.url.query.decode().endswith("&signature=ab%2B%2Fcd%3D%3D")


async def test_signed_call_without_credentials_says_what_to_do(venue, autojump_clock):
    with pytest.raises(VenueError, match="needs an API key"):
        await make_client(venue, signer=None).account()
    assert venue.requests == []


# --- order POST: never retried ---------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(500, text="Internal error"),
        httpx.Response(503, json={"code": -1008, "msg": "Server is currently overloaded"}),
        error(400, -1007, "Timeout waiting for response from backend server. Send status unknown."),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.Response(200, content=b'{"symbol": "LTC'),
    ],
    ids=["500", "503", "-1007", "read-timeout", "disconnect", "truncated-answer"],
)
async def test_order_post_with_unknown_outcome_is_not_retried(venue, autojump_clock, reply):
    venue.on("POST", "/api/v3/order", reply)
    client = make_client(venue)
    with pytest.raises(UnknownOutcome, match="client order id"):
        await client.new_order(DOC_ORDER)
    assert len(venue.calls("POST", "/api/v3/order")) == 1
    assert client.unknown_outcomes == 1


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")])
async def test_order_post_that_never_left_is_venue_unavailable(venue, autojump_clock, exc):
    venue.on("POST", "/api/v3/order", exc)
    with pytest.raises(VenueUnavailable, match="could not reach"):
        await make_client(venue).new_order(DOC_ORDER)
    assert len(venue.calls("POST", "/api/v3/order")) == 1


async def test_order_rejection_keeps_the_venue_code(venue, autojump_clock):
    venue.on("POST", "/api/v3/order", error(400, -2010, "Account has insufficient balance for requested action."))
    with pytest.raises(OrderRejected) as info:
        await make_client(venue).new_order(DOC_ORDER)
    assert info.value.code == -2010 and info.value.http_status == 400
    assert "insufficient balance" in info.value.message


async def test_waf_block_without_json_is_a_rejection(venue, autojump_clock):
    venue.on("POST", "/api/v3/order", httpx.Response(403, text="<html>Forbidden</html>"))
    with pytest.raises(OrderRejected) as info:
        await make_client(venue).new_order(DOC_ORDER)
    assert info.value.code == "HTTP_403"


# --- clock skew -------------------------------------------------------------------------


async def test_timestamp_error_resyncs_the_clock_and_retries_a_get_once(venue, autojump_clock):
    venue.on(
        "GET",
        "/api/v3/time",
        httpx.Response(200, json={"serverTime": DOC_TIMESTAMP}),
        httpx.Response(200, json={"serverTime": DOC_TIMESTAMP + 3000}),  # the venue's clock is ahead of ours
    )
    venue.on(
        "GET",
        "/api/v3/order",
        error(400, -1021, "Timestamp for this request is outside of the recvWindow."),
        httpx.Response(200, content=ORDER_JSON),
    )
    client = make_client(venue)
    await client.query_order("LTCBTC", orig_client_order_id="c1")
    assert len(venue.calls("GET", "/api/v3/time")) == 2
    first, second = (dict(parse_qsl(r.url.query.decode())) for r in venue.calls("GET", "/api/v3/order"))
    assert first["origClientOrderId"] == second["origClientOrderId"] == "c1"
    assert int(second["timestamp"]) - int(first["timestamp"]) == 3000


async def test_timestamp_error_on_an_order_resyncs_and_rejects(venue, autojump_clock):
    now = [DOC_TIMESTAMP]
    venue.on("POST", "/api/v3/order", error(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."))
    client = make_client(venue, wall_ms=lambda: now[0])
    await client.sync_time()
    assert client.time_offset_ms == 0
    venue.server_time = DOC_TIMESTAMP - 2000
    with pytest.raises(OrderRejected) as info:
        await client.new_order(DOC_ORDER)
    assert info.value.code == -1021
    assert client.time_offset_ms == -2000
    assert len(venue.calls("POST", "/api/v3/order")) == 1


async def test_persistent_timestamp_error_on_a_get_gives_up(venue, autojump_clock):
    venue.on("GET", "/api/v3/account", error(400, -1021, "outside of the recvWindow"))
    with pytest.raises(VenueError) as info:
        await make_client(venue).account()
    assert info.value.code == -1021
    assert len(venue.calls("GET", "/api/v3/account")) == 2


# --- GET / DELETE retries ---------------------------------------------------------------


async def test_get_is_retried_with_backoff_on_5xx_and_timeouts(venue, autojump_clock):
    venue.on(
        "GET",
        "/api/v3/openOrders",
        httpx.Response(502, text="bad gateway"),
        httpx.ReadTimeout("slow"),
        error(400, -1007, "Timeout waiting for response from backend server."),
        httpx.Response(200, json=[]),
    )
    client = make_client(venue)
    start = trio.current_time()
    assert await client.open_orders("BTCUSDT") == []
    assert len(venue.calls("GET", "/api/v3/openOrders")) == 4
    assert client.retries == 3
    # back-off 0.5, 1, 2 s, each with jitter in [0.5, 1.5)
    assert 0.5 * 3.5 <= trio.current_time() - start < 1.5 * 3.5


async def test_get_gives_up_after_the_retry_budget(venue, autojump_clock):
    venue.on("GET", "/api/v3/depth", httpx.Response(503, text="unavailable"))
    with pytest.raises(VenueUnavailable, match="HTTP 503"):
        await make_client(venue, max_retries=2).depth("BTCUSDT")
    assert len(venue.calls("GET", "/api/v3/depth")) == 3


async def test_delete_without_answer_is_an_unknown_outcome(venue, autojump_clock):
    venue.on("DELETE", "/api/v3/order", httpx.ReadTimeout("slow"))
    client = make_client(venue, max_retries=1)
    with pytest.raises(UnknownOutcome, match="cancel may or may not"):
        await client.cancel_order("BTCUSDT", orig_client_order_id="c1")
    assert len(venue.calls("DELETE", "/api/v3/order")) == 2
    assert client.unknown_outcomes == 1


@pytest.mark.parametrize("code", [-2011, -2013, -2026])
async def test_unknown_orders_are_order_not_found(venue, autojump_clock, code):
    venue.on("DELETE", "/api/v3/order", error(400, code, "Unknown order sent."))
    with pytest.raises(OrderNotFound) as info:
        await make_client(venue).cancel_order("BTCUSDT", order_id=5)
    assert info.value.code == code
    sent = venue.calls("DELETE", "/api/v3/order")
    assert len(sent) == 1 and b"orderId=5" in sent[0].url.query


async def test_other_venue_errors_keep_code_and_message(venue, autojump_clock):
    venue.on("GET", "/api/v3/depth", error(400, -1121, "Invalid symbol."))
    with pytest.raises(VenueError) as info:
        await make_client(venue).depth("NOPE")
    assert (info.value.code, info.value.message) == (-1121, "Invalid symbol.")
    assert not isinstance(info.value, OrderRejected)


async def test_unreadable_get_answer_is_a_clear_error(venue, autojump_clock):
    venue.on("GET", "/api/v3/depth", httpx.Response(200, content=b"<html>"))
    with pytest.raises(VenueError, match="unreadable answer"):
        await make_client(venue).depth("BTCUSDT")


# --- rate limits ------------------------------------------------------------------------


async def test_429_stops_every_caller_until_retry_after(venue, autojump_clock):
    venue.on(
        "GET", "/api/v3/depth", error(429, -1003, "Too many requests", headers={"Retry-After": "7"}),
        httpx.Response(200, json={"lastUpdateId": 1, "bids": [], "asks": []}),
    )  # fmt: skip
    venue.on("DELETE", "/api/v3/openOrders", httpx.Response(200, json=[]))
    client = make_client(venue)
    with pytest.raises(RateLimited) as info:
        await client.depth("BTCUSDT")
    assert info.value.retry_after == 7 and not isinstance(info.value, VenueBanned)
    sent = len(venue.requests)
    with pytest.raises(RateLimited):  # even an emergency cancel is held back: more would earn a ban
        await client.cancel_open_orders("BTCUSDT", emergency=True)
    assert len(venue.requests) == sent
    await trio.sleep(7)
    assert (await client.depth("BTCUSDT")).last_update_id == 1


async def test_418_is_a_ban(venue, autojump_clock):
    venue.on("GET", "/api/v3/depth", error(418, -1003, "Way too many requests; IP banned", headers={"Retry-After": "300"}))
    client = make_client(venue)
    with pytest.raises(VenueBanned) as info:
        await client.depth("BTCUSDT")
    assert info.value.retry_after == 300
    assert client.budget.banned
    with pytest.raises(VenueBanned):
        await client.depth("BTCUSDT")
    assert len(venue.requests) == 1


async def test_used_weight_headers_feed_the_shared_budget(venue, autojump_clock):
    budget = RateBudget([RateLimit(WEIGHT, 60, 100)], reserve=0.1, max_wait=120)
    venue.on(
        "GET",
        "/api/v3/depth",
        httpx.Response(200, json={"lastUpdateId": 1, "bids": [], "asks": []}, headers={"X-MBX-USED-WEIGHT-1M": "88"}),
    )
    venue.on("DELETE", "/api/v3/openOrders", httpx.Response(200, json=[]))
    client = make_client(venue, budget=budget)
    other = make_client(venue, budget=budget)  # a second client of the same venue shares the budget
    await client.depth("BTCUSDT")
    assert budget.usage()["REQUEST_WEIGHT/60s"][0] == 88
    start = trio.current_time()
    await other.cancel_open_orders("BTCUSDT", emergency=True)  # fits in the reserve: no wait
    assert trio.current_time() == start
    await other.depth("BTCUSDT")  # does not fit under 90: waits for the window to roll over
    assert trio.current_time() - start == pytest.approx(60)


async def test_emergency_cancel_is_not_held_up_by_a_stuck_order_pool(venue, autojump_clock):
    release = trio.Event()

    async def stuck(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=[])

    venue.on("GET", "/api/v3/openOrders", stuck)
    venue.on("DELETE", "/api/v3/openOrders", httpx.Response(200, json=[]))
    client = make_client(venue)
    await client.sync_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.open_orders, "BTCUSDT")
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(1):
            assert await client.cancel_open_orders("BTCUSDT", emergency=True) == []
        release.set()


async def test_repr_never_shows_the_secret(venue):
    client = make_client(venue)
    assert SECRET not in repr(client) and API_KEY not in repr(client)


async def test_pool_timeout_rebuilds_the_pool_and_retries_a_get(venue, autojump_clock):
    venue.on("GET", "/api/v3/depth", httpx.PoolTimeout("no free connection"), httpx.Response(
        200, json={"lastUpdateId": 3, "bids": [], "asks": []}
    ))  # fmt: skip
    client = make_client(venue)
    assert (await client.depth("BTCUSDT")).last_update_id == 3
    assert client.pool_rebuilds == 1


async def test_final_error_keeps_its_cause(venue, autojump_clock):
    venue.on("GET", "/api/v3/depth", httpx.ReadTimeout("slow"))
    with pytest.raises(VenueUnavailable) as info:
        await make_client(venue, max_retries=0).depth("BTCUSDT")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
