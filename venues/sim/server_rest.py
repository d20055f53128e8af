"""The REST API (``/api/v3/...``): routing, parameters, security, limits and faults per request.

Every request goes through the same steps, in Binance's order:

1. route (404 / 405 with an error body otherwise) and parameters: the query
   string and an ``application/x-www-form-urlencoded`` body, the query
   string winning where both have a parameter;
2. request weight: a forced 429 burst (fault), else the IP's budget (429,
   then 418 for a client that keeps going);
3. added latency and the 5xx / -1007 faults drawn for this request ("after"
   faults let the request execute first);
4. security: SIGNED endpoints verify the key, signature and timing
   (`server_auth`), USER_STREAM endpoints just the key;
5. the endpoint itself, whose engine refusals pass through with their codes.

Every answer carries ``X-MBX-USED-WEIGHT-1M`` (and the legacy
``X-MBX-USED-WEIGHT``); accepted orders carry ``X-MBX-ORDER-COUNT-10S`` and
``-1D``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl

import msgspec
import trio

from daemon.model import FilterViolation, OrderStatus, OrderType, Side, TimeInForce
from venues.base import OrderRequest, VenueError
from venues.sim.accounts import decimals_of
from venues.sim.server_auth import ApiError, authenticate_rest, illegal, mandatory
from venues.sim.server_config import ApiCredentials
from venues.sim.server_http import HttpRequest, HttpResponse
from venues.sim.server_wire import encode

if TYPE_CHECKING:
    from venues.sim.server import BinanceServer

Params = dict[str, str]
Result = tuple[Any, list[tuple[str, str]]]

_DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_DECIMAL_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_RESP_TYPES = ("ACK", "RESULT", "FULL")
_NONE, _SIGNED, _API_KEY = "NONE", "SIGNED", "USER_STREAM"
MAX_DEPTH = 5000
MY_TRADES_MAX = 1000


class Route(NamedTuple):
    handler: Callable[[Params, ApiCredentials | None, int], Result]
    security: str
    weight: Callable[[Params], int]


def _fixed(weight: int) -> Callable[[Params], int]:
    return lambda params: weight


def depth_weight(params: Params) -> int:
    try:
        limit = int(params.get("limit") or 100)
    except ValueError:
        return 5
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


class _Fault(NamedTuple):
    after: bool
    error: ApiError


class RestApi:
    """Binance Spot's REST endpoints over one server's engine."""

    def __init__(self, server: BinanceServer) -> None:
        self.server = server
        self.engine = server.engine
        self.shapes = server.shapes
        self.requests = 0
        self.faults_injected = 0
        r = Route
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/api/v3/ping"): r(self.ping, _NONE, _fixed(1)),
            ("GET", "/api/v3/time"): r(self.time, _NONE, _fixed(1)),
            ("GET", "/api/v3/exchangeInfo"): r(self.exchange_info, _NONE, _fixed(20)),
            ("GET", "/api/v3/depth"): r(self.depth, _NONE, depth_weight),
            ("GET", "/api/v3/ticker/price"): r(self.ticker_price, _NONE, lambda p: 2 if p.get("symbol") else 4),
            ("GET", "/api/v3/ticker/bookTicker"): r(self.book_ticker, _NONE, lambda p: 2 if p.get("symbol") else 4),
            ("POST", "/api/v3/order"): r(self.new_order, _SIGNED, _fixed(1)),
            ("POST", "/api/v3/order/test"): r(self.test_order, _SIGNED, _fixed(1)),
            ("GET", "/api/v3/order"): r(self.query_order, _SIGNED, _fixed(4)),
            ("DELETE", "/api/v3/order"): r(self.cancel_order, _SIGNED, _fixed(1)),
            ("GET", "/api/v3/openOrders"): r(self.open_orders, _SIGNED, lambda p: 6 if p.get("symbol") else 80),
            ("DELETE", "/api/v3/openOrders"): r(self.cancel_open_orders, _SIGNED, _fixed(1)),
            ("GET", "/api/v3/account"): r(self.account, _SIGNED, _fixed(20)),
            ("GET", "/api/v3/myTrades"): r(self.my_trades, _SIGNED, lambda p: 5 if p.get("orderId") else 20),
            ("GET", "/api/v3/rateLimit/order"): r(self.order_rate_limits, _SIGNED, _fixed(40)),
            ("POST", "/api/v3/userDataStream"): r(self.new_listen_key, _API_KEY, _fixed(2)),
            ("PUT", "/api/v3/userDataStream"): r(self.keep_listen_key, _API_KEY, _fixed(2)),
            ("DELETE", "/api/v3/userDataStream"): r(self.close_listen_key, _API_KEY, _fixed(2)),
        }
        self._paths = {path for _, path in self.routes}

    # ==========================================================================================
    # The request pipeline
    # ==========================================================================================

    async def handle(self, request: HttpRequest) -> HttpResponse:
        server = self.server
        self.requests += 1
        route = self.routes.get((request.method, request.path))
        if route is None:
            status = 405 if request.path in self._paths else 404
            what = "Method not allowed" if status == 405 else "Unknown endpoint"
            body = {"code": -1000, "msg": f"{what}: {request.method} {request.path}"}
            return HttpResponse(status, encode(body), self._weight_headers(server.now_ms()))
        raw_body = request.body.decode("utf-8", "replace")
        params = self._params(request, raw_body)
        now_ms = server.now_ms()
        headers: list[tuple[str, str]] = []
        try:
            self._admit(route.weight(params), now_ms)
            await self._latency()
            fault = self._draw_fault(request.path)
            if fault is not None and not fault.after:
                raise fault.error
            credentials = None
            if route.security == _SIGNED:
                credentials = authenticate_rest(
                    server.keys, request.headers.get("x-mbx-apikey"), request.raw_query, raw_body, params, now_ms
                )
            elif route.security == _API_KEY:
                credentials = server.keys.lookup(request.headers.get("x-mbx-apikey"))
            body, headers = route.handler(params, credentials, now_ms)
            if fault is not None:
                server.log.info("venue_server.fault_after_execution", path=request.path, status=fault.error.status)
                raise fault.error
            status = 200
        except ApiError as exc:
            status, body = exc.status, exc.body()
            headers = headers + exc.headers
        await self._latency()
        return HttpResponse(status, encode(body), self._weight_headers(server.now_ms()) + headers)

    def _params(self, request: HttpRequest, raw_body: str) -> Params:
        params: Params = {}
        content_type = request.headers.get("content-type", "")
        if raw_body and (not content_type or "x-www-form-urlencoded" in content_type):
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        params.update(parse_qsl(request.raw_query, keep_blank_values=True))  # the query string wins
        return params

    def _weight_headers(self, now_ms: int) -> list[tuple[str, str]]:
        used = str(self.server.limiter.used_weight(now_ms))
        return [("X-MBX-USED-WEIGHT-1M", used), ("X-MBX-USED-WEIGHT", used)]

    def _admit(self, weight: int, now_ms: int) -> None:
        faults, limiter = self.server.faults, self.server.limiter
        if faults.burst_429 > 0:
            faults.burst_429 -= 1
            self.faults_injected += 1
            wait = faults.burst_retry_after
            limiter.block(wait * 1000, now_ms)
            limiter.weight.add(weight, now_ms)
            raise ApiError(
                429,
                -1003,
                "Too many requests; the server is shedding load. Back off and retry after the Retry-After delay.",
                [("Retry-After", str(wait))],
            )
        verdict = limiter.admit(weight, now_ms)
        if not verdict.ok:
            raise ApiError(verdict.status, verdict.code, verdict.msg, [("Retry-After", str(verdict.retry_after))])

    async def _latency(self) -> None:
        faults = self.server.faults
        delay = faults.latency
        if faults.latency_jitter:
            delay += self.server.rng.random() * faults.latency_jitter
        if delay:
            await trio.sleep(delay / 2)

    def _draw_fault(self, path: str) -> _Fault | None:
        faults = self.server.faults
        total = faults.error_rate + faults.error_after_rate + faults.timeout_rate + faults.timeout_after_rate
        if not total or not faults.applies_to(path):
            return None
        rng = self.server.rng
        r = rng.random()
        for rate, after, timeout in (
            (faults.error_rate, False, False),
            (faults.error_after_rate, True, False),
            (faults.timeout_rate, False, True),
            (faults.timeout_after_rate, True, True),
        ):
            if r < rate:
                self.faults_injected += 1
                if timeout:
                    error = ApiError(
                        503, -1007, "Timeout waiting for response from backend server. Send status unknown; "
                        "execution status unknown.",
                    )  # fmt: skip
                elif rng.random() < 0.5:
                    error = ApiError(500, -1001, "Internal error; unable to process your request. Please try again.")
                else:
                    error = ApiError(
                        503, -1008, "Server is currently overloaded with other requests. Please try again in a few "
                        "minutes.",
                    )  # fmt: skip
                return _Fault(after, error)
            r -= rate
        return None

    # ==========================================================================================
    # Parameters
    # ==========================================================================================

    def _symbol(self, params: Params, *, required: bool = True) -> str | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise mandatory("symbol")
            return None
        if symbol not in self.shapes.instruments:
            raise ApiError(400, -1121, "Invalid symbol.")
        return symbol

    def _decimal(self, params: Params, name: str, decimals: int) -> Decimal | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not _DECIMAL.match(raw):
            raise illegal(name, _DECIMAL_RANGE)
        value = Decimal(raw)
        if decimals_of(value) > decimals:
            raise ApiError(400, -1111, f"Parameter '{name}' has too much precision.")
        return value

    def _integer(self, params: Params, name: str) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not _INTEGER.match(raw):
            raise illegal(name, "^[0-9]{1,20}$")
        return int(raw)

    def _order_ref(self, params: Params) -> tuple[int | None, str | None]:
        order_id = self._integer(params, "orderId")
        client_id = params.get("origClientOrderId") or None
        if order_id is None and client_id is None:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        return order_id, client_id

    def _client_id(self, params: Params, name: str) -> str | None:
        value = params.get(name) or None
        if value is not None and not _CLIENT_ID.match(value):
            raise illegal(name, "^[\\.A-Z\\:/a-z0-9_-]{1,36}$")
        return value

    def _order_request(self, params: Params) -> tuple[OrderRequest, str]:
        """A validated new order and its response type; raises ApiError with Binance's codes."""
        symbol = self._symbol(params)
        assert symbol is not None
        instrument = self.shapes.instruments[symbol]
        base_dec, quote_dec = self.shapes.decimals(instrument.base), self.shapes.decimals(instrument.quote)
        for name in ("side", "type"):
            if not params.get(name):
                raise mandatory(name)
        try:
            side = Side(params["side"])
        except ValueError:
            raise ApiError(400, -1117, "Invalid side.") from None
        try:
            order_type = OrderType(params["type"])
        except ValueError:
            raise ApiError(400, -1116, "Invalid orderType.") from None
        tif = None
        if params.get("timeInForce"):
            try:
                tif = TimeInForce(params["timeInForce"])
            except ValueError:
                raise ApiError(400, -1115, "Invalid timeInForce.") from None
        for name in ("stopPrice", "trailingDelta"):
            if params.get(name):
                raise ApiError(400, -1106, f"Parameter '{name}' sent when not required.")
        stp = params.get("selfTradePreventionMode")
        if stp and stp != "NONE":
            raise ApiError(400, -1013, "This symbol does not allow the specified self-trade prevention mode.")
        resp_type = params.get("newOrderRespType") or ("FULL" if order_type is not OrderType.LIMIT_MAKER else "ACK")
        if resp_type not in _RESP_TYPES:
            raise illegal("newOrderRespType", "ACK, RESULT, FULL")
        client_id = self._client_id(params, "newClientOrderId") or self.server.user_data.random_id()
        request = OrderRequest(
            symbol=symbol,
            client_order_id=client_id,
            side=side,
            order_type=order_type,
            quantity=self._decimal(params, "quantity", base_dec),
            quote_quantity=self._decimal(params, "quoteOrderQty", quote_dec),
            price=self._decimal(params, "price", quote_dec),
            time_in_force=tif,
            iceberg_qty=self._decimal(params, "icebergQty", base_dec),
        )
        return request, resp_type

    @staticmethod
    def _refused(exc: VenueError) -> ApiError:
        code = exc.code if isinstance(exc.code, int) else -1000
        return ApiError(400, code, exc.message)

    # ==========================================================================================
    # Endpoints: market data
    # ==========================================================================================

    def ping(self, params: Params, _: ApiCredentials | None, now_ms: int) -> Result:
        return {}, []

    def time(self, params: Params, _: ApiCredentials | None, now_ms: int) -> Result:
        return {"serverTime": now_ms}, []

    def exchange_info(self, params: Params, _: ApiCredentials | None, now_ms: int) -> Result:
        symbols = list(self.engine.symbols)
        if params.get("symbol"):
            symbols = [self._symbol(params)]  # type: ignore[list-item]
        elif params.get("symbols"):
            try:
                wanted = msgspec.json.decode(params["symbols"], type=list[str])
            except msgspec.DecodeError:
                raise illegal("symbols", '["SYMBOL1","SYMBOL2"]') from None
            unknown = [s for s in wanted if s not in self.shapes.instruments]
            if unknown:
                raise ApiError(400, -1121, f"Invalid symbol '{unknown[0]}'.")
            symbols = wanted
        status = params.get("symbolStatus")
        if status:
            symbols = [s for s in symbols if ("TRADING" if self.engine.is_trading(s) else "BREAK") == status]
        return self.shapes.exchange_info(symbols, self.server.rate_limits(), now_ms), []

    def depth(self, params: Params, _: ApiCredentials | None, now_ms: int) -> Result:
        symbol = self._symbol(params)
        assert symbol is not None
        limit = self._integer(params, "limit")
        if limit is None:
            limit = 100
        if limit < 1:
            raise illegal("limit", "1-5000")
        limit = min(limit, MAX_DEPTH)
        faults = self.server.faults
        stale = faults.stale_snapshots > 0 or (
            faults.stale_snapshot_rate and self.server.rng.random() < faults.stale_snapshot_rate
        )
        if stale:
            if faults.stale_snapshots > 0:
                faults.stale_snapshots -= 1
            self.faults_injected += 1
            old = self.server.market.stale_snapshot(symbol, faults.stale_snapshot_age)
            snapshot = msgspec.structs.replace(old, bids=old.bids[:limit], asks=old.asks[:limit])
            self.server.log.info(
                "venue_server.fault_stale_snapshot",
                symbol=symbol,
                last_update_id=snapshot.last_update_id,
                current=self.engine.last_update_id(symbol),
            )
        else:
            snapshot = self.engine.snapshot(symbol, limit)
        return self.shapes.depth(snapshot), []

    def ticker_price(self, params: Params, _: ApiCredentials | None, now_ms: int) -> Result:
        symbol = self._symbol(params, required=False)

        def one(s: str) -> dict:
            last = self.engine.last_price(s) or self.engine.mid(s)
            return {"symbol": s, "price": self.shapes.px(s, last)}

        return (one(symbol) if symbol else [one(s) for s in self.engine.symbols]), []

    def book_ticker(self, params: Params, _: ApiCredentials | None, now_ms: int) -> Result:
        symbol = self._symbol(params, required=False)

        def one(s: str) -> dict:
            out = self.shapes.book_ticker(s, 0, self.engine.best_bid(s), self.engine.best_ask(s))
            return {"symbol": s, "bidPrice": out["b"], "bidQty": out["B"], "askPrice": out["a"], "askQty": out["A"]}

        return (one(symbol) if symbol else [one(s) for s in self.engine.symbols]), []

    # ==========================================================================================
    # Endpoints: orders
    # ==========================================================================================

    def new_order(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        request, resp_type = self._order_request(params)
        counter = self.server.order_counter(credentials.account)
        verdict = counter.admit(now_ms)
        if not verdict.ok:
            raise ApiError(verdict.status, verdict.code, verdict.msg, [("Retry-After", str(verdict.retry_after))])
        try:
            state = self.engine.place_order(credentials.account, request)
        except VenueError as exc:
            counter.traded(now_ms)  # a refused order never counted as unfilled
            raise self._refused(exc) from None
        if state.filled_qty:
            counter.traded(now_ms)
        fills = []
        if resp_type == "FULL":
            fills = self.engine.order_trades(credentials.account, state.symbol, venue_order_id=state.venue_order_id)
        body = self.shapes.new_order(state, resp_type, fills, state.created_ms)
        return body, counter.headers(now_ms)

    def test_order(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        """Validate like a new order (parameters and filters) without reaching the engine."""
        request, _ = self._order_request(params)
        instrument = self.engine.instrument(request.symbol)
        is_market = request.order_type is OrderType.MARKET
        reference = request.price
        if is_market:
            reference = self.engine.last_price(request.symbol) or self.engine.mid(request.symbol)
        try:
            if request.quantity is not None:
                instrument.check(request.quantity, reference, is_market=is_market)
            elif not is_market or request.quote_quantity is None:
                raise mandatory("quantity")
        except FilterViolation as exc:
            raise ApiError(400, -1013, f"Filter failure: {exc.filter}") from None
        return {}, []

    def query_order(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        symbol = self._symbol(params)
        order_id, client_id = self._order_ref(params)
        try:
            state = self.engine.query_order(
                credentials.account, symbol, venue_order_id=order_id, client_order_id=client_id
            )
        except VenueError as exc:
            raise self._refused(exc) from None
        return self.shapes.order(state), []

    def cancel_order(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        account = credentials.account
        symbol = self._symbol(params)
        assert symbol is not None
        order_id, client_id = self._order_ref(params)
        cancel_id = self._client_id(params, "newClientOrderId") or self.server.user_data.random_id()
        restriction = params.get("cancelRestrictions")
        if restriction not in (None, "", "ONLY_NEW", "ONLY_PARTIALLY_FILLED"):
            raise illegal("cancelRestrictions", "ONLY_NEW, ONLY_PARTIALLY_FILLED")
        try:
            current = self.engine.query_order(account, symbol, venue_order_id=order_id, client_order_id=client_id)
        except VenueError:
            raise ApiError(400, -2011, "Unknown order sent.") from None
        if restriction and current.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
            wanted = OrderStatus.NEW if restriction == "ONLY_NEW" else OrderStatus.PARTIALLY_FILLED
            if current.status is not wanted:
                raise ApiError(400, -2011, "Order was not canceled due to cancel restrictions.")
        key = (account, current.venue_order_id)
        self.server.user_data.cancel_ids[key] = cancel_id
        try:
            state = self.engine.cancel_order(account, symbol, venue_order_id=current.venue_order_id)
        except VenueError as exc:
            raise self._refused(exc) from None
        finally:
            self.server.user_data.cancel_ids.pop(key, None)
        return self.shapes.canceled(state, cancel_id, now_ms), []

    def open_orders(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        symbol = self._symbol(params, required=False)
        states = self.engine.open_orders(credentials.account, symbol)
        return [self.shapes.order(s) for s in states], []

    def cancel_open_orders(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        account = credentials.account
        symbol = self._symbol(params)
        assert symbol is not None
        open_now = self.engine.open_orders(account, symbol)
        if not open_now:
            raise ApiError(400, -2011, "Unknown order sent.")
        cancel_ids = self.server.user_data.cancel_ids
        ids = {}
        for order in open_now:
            ids[order.venue_order_id] = cancel_ids[(account, order.venue_order_id)] = self.server.user_data.random_id()
        try:
            states = self.engine.cancel_all(account, symbol)
        finally:
            for order_id in ids:
                cancel_ids.pop((account, order_id), None)
        return [self.shapes.canceled(s, ids.get(s.venue_order_id, ""), now_ms) for s in states], []

    # ==========================================================================================
    # Endpoints: account
    # ==========================================================================================

    def account(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        balances = self.engine.balances(credentials.account, include_zero=not omit_zero)
        uid = self.server.uid(credentials.account)
        return self.shapes.account(credentials.account, balances, uid, now_ms), []

    def my_trades(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        symbol = self._symbol(params)
        assert symbol is not None
        limit = self._integer(params, "limit") or 500
        if limit < 1:
            raise illegal("limit", "1-1000")
        limit = min(limit, MY_TRADES_MAX)
        order_id = self._integer(params, "orderId")
        from_id = self._integer(params, "fromId")
        start, end = self._integer(params, "startTime"), self._integer(params, "endTime")
        account = credentials.account
        if order_id is not None:
            try:
                trades = self.engine.order_trades(account, symbol, venue_order_id=order_id)
            except VenueError:
                trades = []
        else:
            trades = self.engine.my_trades(account, symbol, from_trade_id=from_id)
        if start is not None:
            trades = [t for t in trades if t.venue_ms >= start]
        if end is not None:
            trades = [t for t in trades if t.venue_ms <= end]
        # From an id (or a start time): the oldest first; otherwise the most recent ones.
        trades = trades[:limit] if from_id is not None or start is not None else trades[-limit:]
        return [self.shapes.my_trade(t) for t in trades], []

    def order_rate_limits(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        counter = self.server.order_counter(credentials.account)
        return [
            {
                "rateLimitType": "ORDERS",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": counter.ten_seconds.limit,
                "count": counter.ten_seconds.count(now_ms),
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "DAY",
                "intervalNum": 1,
                "limit": counter.day.limit,
                "count": counter.day.count(now_ms),
            },
        ], []

    # --- the legacy listenKey user data stream ------------------------------------------------

    def new_listen_key(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        minutes = self.server.settings.listen_key_minutes
        return {"listenKey": self.server.user_data.new_listen_key(credentials.account, minutes)}, []

    def keep_listen_key(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        key = params.get("listenKey") or ""
        if not key:
            raise mandatory("listenKey")
        if not self.server.user_data.keep_alive(key, credentials.account, self.server.settings.listen_key_minutes):
            raise ApiError(400, -1125, "This listenKey does not exist.")
        return {}, []

    def close_listen_key(self, params: Params, credentials: ApiCredentials | None, now_ms: int) -> Result:
        assert credentials is not None
        key = params.get("listenKey") or ""
        if not key:
            raise mandatory("listenKey")
        if not self.server.user_data.close_listen_key(key, credentials.account):
            raise ApiError(400, -1125, "This listenKey does not exist.")
        return {}, []
