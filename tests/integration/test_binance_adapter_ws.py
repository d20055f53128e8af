"""BinanceAdapter's WebSocket streams against a tiny loopback server that sends canned frames."""

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal as D

import pytest
import trio
from websockets.trio.server import ServerConnection, serve

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import OrderStatus
from venues.base import BookDiff, PublicTrade, RateLimited, StreamNotice, VenueBanned, VenueError, VenueUnavailable
from venues.binance import codec
from venues.binance.adapter import BinanceAdapter
from venues.binance.config import BinanceConfig
from venues.binance.signing import HmacSigner, websocket_payload

pytestmark = pytest.mark.slow

API_KEY = "test-api-key-0123456789"
SECRET = "test-secret-9876543210"
NOW_MS = 1_700_000_000_000

Handler = Callable[[ServerConnection], Awaitable[None]]


class LoopbackServer:
    """A websockets trio server on 127.0.0.1 running one handler per connection."""

    def __init__(self, handler: Handler, process_request=None) -> None:
        self.handler = handler
        self.process_request = process_request
        self.paths: list[str] = []
        self.port = 0

    async def _handle(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path)
        await self.handler(ws)

    async def start(self, nursery: trio.Nursery) -> str:
        server = await nursery.start(
            lambda task_status: serve(
                self._handle,
                0,
                host="127.0.0.1",
                compression=None,
                process_request=self.process_request,
                task_status=task_status,
            )
        )
        self.port = server.listeners[0].socket.getsockname()[1]
        return f"ws://127.0.0.1:{self.port}"


def adapter_for(base_url: str, **config) -> BinanceAdapter:
    cfg = BinanceConfig(
        rest_url="http://127.0.0.1:9",  # never used: the clock offset is set by hand
        market_stream_url=base_url,
        ws_api_url=f"{base_url}/ws-api/v3",
        ws_open_timeout=config.pop("ws_open_timeout", 5.0),
        **config,
    )
    adapter = BinanceAdapter(cfg, HmacSigner(API_KEY, SECRET), wall_ms=lambda: NOW_MS)
    adapter.client._time_synced = True  # no REST server here
    return adapter


def frame(stream: str, data: dict) -> str:
    return json.dumps({"stream": stream, "data": data})


DEPTH = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 10, "u": 12, "b": [["100.00", "1.5"]], "a": [["100.01", "0"]]}
TRADE = {"e": "trade", "E": 2, "s": "ETHBTC", "t": 99, "p": "0.05", "q": "2", "T": 3, "m": False, "M": True}


# --- market stream -----------------------------------------------------------------------


async def test_market_stream_yields_diffs_trades_and_notices():
    async def handler(ws):
        await ws.send(frame("btcusdt@depth@100ms", DEPTH))
        await ws.send(b"{garbage")  # a broken frame must not end the stream
        await ws.send(frame("ethbtc@trade", TRADE))
        await ws.send(json.dumps({"result": None, "id": 1}))  # a control answer: skipped
        await ws.send(frame("!serverShutdown", {"e": "serverShutdown", "E": 5}))
        # then a normal close: the iterator ends

    server = LoopbackServer(handler)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            adapter = adapter_for(await server.start(nursery))
            async with adapter.market_stream(["BTCUSDT", "ETHBTC"]) as events:
                received = [event async for event in events]
            nursery.cancel_scope.cancel()

    assert server.paths == ["/stream?streams=btcusdt@depth@100ms/btcusdt@trade/ethbtc@depth@100ms/ethbtc@trade"]
    diff, broken, trade, shutdown = received
    assert diff == BookDiff(
        symbol="BTCUSDT", first_id=10, last_id=12, bids=[("100.00", "1.5")], asks=[("100.01", "0")], venue_ms=1
    )  # levels stay the venue's exact text; the local book parses them
    assert isinstance(broken, StreamNotice) and broken.kind == codec.MALFORMED_FRAME
    assert isinstance(trade, PublicTrade) and trade.trade_id == 99 and trade.price == D("0.05")
    assert isinstance(shutdown, StreamNotice) and shutdown.kind == codec.SERVER_SHUTDOWN


async def test_lost_market_connection_raises_venue_unavailable():
    async def handler(ws):
        await ws.send(frame("btcusdt@depth@100ms", DEPTH))
        await ws.close(code=1011, reason="internal error")

    server = LoopbackServer(handler)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            adapter = adapter_for(await server.start(nursery))
            got = []
            with pytest.raises(VenueUnavailable, match="market stream lost"):
                async with adapter.market_stream(["BTCUSDT"]) as events:
                    async for event in events:
                        got.append(event)
            nursery.cancel_scope.cancel()
    assert len(got) == 1


async def test_silent_stream_can_be_timed_out_by_the_caller():
    async def handler(ws):
        await trio.sleep_forever()

    server = LoopbackServer(handler)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            adapter = adapter_for(await server.start(nursery))
            async with adapter.market_stream(["BTCUSDT"]) as events:
                with trio.move_on_after(0.2) as scope:
                    await events.__anext__()
            assert scope.cancelled_caught
            nursery.cancel_scope.cancel()


async def test_unreachable_stream_is_venue_unavailable():
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    adapter = adapter_for(f"ws://127.0.0.1:{port}")
    with trio.fail_after(10):
        with pytest.raises(VenueUnavailable, match="could not open the market stream"):
            async with adapter.market_stream(["BTCUSDT"]):
                pass


async def test_handshake_429_blocks_the_budget():
    def refuse(connection, request):
        response = connection.respond(429, "slow down\n")
        response.headers["Retry-After"] = "42"
        return response

    async def handler(ws):
        pass

    server = LoopbackServer(handler, process_request=refuse)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            adapter = adapter_for(await server.start(nursery))
            with pytest.raises(RateLimited) as info:
                async with adapter.market_stream(["BTCUSDT"]):
                    pass
            nursery.cancel_scope.cancel()
    assert info.value.retry_after == 42
    assert adapter.budget.blocked_for() > 40


# --- user data stream (WebSocket API) ------------------------------------------------------


def execution_report(**fields) -> dict:
    report = {
        "e": "executionReport", "E": 1, "s": "BTCUSDT", "c": "td-e1-1", "S": "BUY", "o": "LIMIT", "f": "GTC",
        "q": "1", "p": "100", "C": "", "x": "NEW", "X": "NEW", "r": "NONE", "i": 7, "l": "0", "z": "0",
        "L": "0", "n": "0", "N": None, "T": 2, "t": -1, "m": False, "Z": "0",
    }  # fmt: skip
    return report | fields


class UserDataVenue:
    """Checks the signed subscription like Binance does, then plays `events`."""

    def __init__(self, events: list, *, answer: dict | None = None, answer_delay: float = 0.0) -> None:
        self.events = events
        self.answer = answer
        self.answer_delay = answer_delay
        self.requests: list[dict] = []

    async def __call__(self, ws: ServerConnection) -> None:
        request = json.loads(await ws.recv())
        self.requests.append(request)
        params = request["params"]
        expected = HmacSigner(API_KEY, SECRET).sign(websocket_payload(params))
        await ws.send(json.dumps({"subscriptionId": 9, "event": {"e": "noise-before-answer"}}))
        await trio.sleep(self.answer_delay)
        if self.answer is not None:
            await ws.send(json.dumps({"id": request["id"]} | self.answer))
            return
        if params.get("signature") != expected or params.get("apiKey") != API_KEY:
            await ws.send(json.dumps({"id": request["id"], "status": 400, "error": {"code": -1022, "msg": "bad sig"}}))
            return
        await ws.send(json.dumps({"id": "someone-else", "status": 200, "result": {}}))
        await ws.send(json.dumps({"id": request["id"], "status": 200, "result": {"subscriptionId": 0}}))
        for event in self.events:
            await ws.send(event if isinstance(event, str | bytes) else json.dumps({"subscriptionId": 0, "event": event}))


async def run_user_stream(venue: UserDataVenue, **config) -> list:
    """Events of one user-stream session; its error, if any, re-raised outside the nursery."""
    server = LoopbackServer(venue)
    outcome: list = []
    failure: list[Exception] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            adapter = adapter_for(await server.start(nursery), **config)
            try:
                async with adapter.user_stream() as events:
                    outcome = [event async for event in events]
            except Exception as exc:
                failure.append(exc)
            nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome


async def test_user_stream_subscribes_with_a_valid_signature_and_maps_events():
    venue = UserDataVenue(
        [
            execution_report(),
            execution_report(x="TRADE", X="FILLED", l="1", z="1", L="100", n="0.1", N="USDT", t=55, Z="100"),
            {"e": "outboundAccountPosition", "E": 3, "u": 3, "B": [{"a": "USDT", "f": "900", "l": "0"}]},
            b'{"subscriptionId":0,"event":{"e":"executionReport","E":1}}',  # broken: maybe a fill
            {"e": "balanceUpdate", "E": 4, "a": "USDT", "d": "10", "T": 4},
            {"e": "eventStreamTerminated", "E": 5},
            execution_report(x="CANCELED", X="CANCELED"),  # after termination: not delivered
        ]
    )
    events = await run_user_stream(venue)

    (request,) = venue.requests
    assert request["method"] == "userDataStream.subscribe.signature"
    assert request["params"]["timestamp"] == NOW_MS and request["params"]["recvWindow"] == 5000
    new, fill, filled, balance, broken, delta, ended = events
    assert isinstance(new, OrderUpdate) and new.status is OrderStatus.NEW and new.client_order_id == "td-e1-1"
    assert isinstance(fill, Fill) and fill.trade_id == "55" and fill.fee == D("0.1") and fill.ts > 0
    assert isinstance(filled, OrderUpdate) and filled.status is OrderStatus.FILLED and filled.avg_price == D(100)
    assert balance == BalanceUpdate(venue="binance", asset="USDT", free=D(900), locked=D(0), venue_ms=3)
    assert broken.kind == codec.MALFORMED_FRAME
    assert delta.kind == codec.BALANCE_DELTA
    assert ended.kind == codec.STREAM_TERMINATED


async def test_user_stream_refused_subscription_is_a_venue_error():
    venue = UserDataVenue([], answer={"status": 401, "error": {"code": -2015, "msg": "Invalid API-key, IP, or permissions"}})
    with pytest.raises(VenueError) as info:
        await run_user_stream(venue)
    assert info.value.code == -2015 and "Invalid API-key" in info.value.message


async def test_user_stream_ban_blocks_the_budget_for_the_announced_time():
    error = {
        "code": -1003,
        "msg": "Way too much request weight used; IP banned until 1700000600000.",
        "data": {"serverTime": 1700000000000, "retryAfter": 1700000600000},
    }
    venue = UserDataVenue([], answer={"status": 418, "error": error})
    with pytest.raises(VenueBanned) as info:
        await run_user_stream(venue)
    assert info.value.retry_after == 600


async def test_user_stream_without_an_answer_times_out_clearly():
    venue = UserDataVenue([], answer={"status": 200, "result": {"subscriptionId": 1}}, answer_delay=5)
    with pytest.raises(VenueUnavailable, match="no answer"):
        await run_user_stream(venue, ws_open_timeout=0.3)


async def test_user_stream_closed_by_the_venue_raises():
    async def handler(ws):
        request = json.loads(await ws.recv())
        await ws.send(json.dumps({"id": request["id"], "status": 200, "result": {"subscriptionId": 0}}))
        await ws.close(code=1008, reason="policy")

    server = LoopbackServer(handler)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            adapter = adapter_for(await server.start(nursery))
            with pytest.raises(VenueUnavailable, match="user data stream lost"):
                async with adapter.user_stream() as events:
                    async for _ in events:
                        pass
            nursery.cancel_scope.cancel()


async def test_user_stream_needs_credentials():
    adapter = BinanceAdapter(BinanceConfig())
    with pytest.raises(VenueError, match="needs an API key"):
        async with adapter.user_stream():
            pass
