"""Binance Spot REST: signing, clock offset, rate budget, and what each failure means.

Three HTTP pools, one per kind of work (market data, order entry, emergency
cancels), so that a pool clogged by slow market-data calls, or leaking slots
after cancelled requests, can never hold up a cancel during a kill. All three
draw on one shared `RateBudget`; emergency calls may use its reserve.

What a failure means depends on whether the request may have changed
anything at the venue:

* Never sent (connection refused, connect or pool timeout): `VenueUnavailable`.
  Safe to send again, even an order (its client order id guards it anyway).
* An order POST that may have reached the engine (read timeout, dropped
  connection, 5xx, -1007, unreadable answer): `UnknownOutcome`. It is never
  retried here; the caller settles it by querying the client order id.
* GET and DELETE are retried with jittered exponential back-off on 5xx,
  timeouts and -1007, a bounded number of times. A DELETE that still has no
  answer is `UnknownOutcome` (the cancel may have happened); a GET is
  `VenueUnavailable`.
* -1021 (our clock is off): the server-time offset is re-measured; GET/DELETE
  are retried once, an order POST is `OrderRejected` (-1021 is checked before
  the engine sees the order, so it is a definite refusal).
* 429 / 418: the shared budget stops all sending for `Retry-After`, and the
  caller gets `RateLimited` / `VenueBanned`.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
import msgspec
import trio

from daemon.logs import Logger, describe_error, get_logger
from venues.base import OrderNotFound, OrderRejected, RateLimited, UnknownOutcome, VenueBanned, VenueError, VenueUnavailable
from venues.binance import codec
from venues.binance.config import BinanceConfig
from venues.binance.ratelimit import RateBudget
from venues.binance.signing import Signer, encode_params


USER_AGENT = "tradingd/0.1"
_NOT_FOUND_CODES = frozenset({-2011, -2013, -2026})  # unknown order, no such order, archived
_TIMESTAMP_CODE = -1021
_TIMEOUT_CODE = -1007
_MAX_BACKOFF = 5.0


class Pool(enum.Enum):
    """Which HTTP connection pool a call uses."""

    MARKET = "market"
    ORDERS = "orders"
    EMERGENCY = "emergency"


def depth_weight(limit: int) -> int:
    """Request weight of GET /api/v3/depth for a given `limit`."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class _Transient(Exception):
    """A failure worth retrying for idempotent calls; `final` is raised when retries run out."""

    def __init__(self, final: Exception, *, clock_skew: bool = False) -> None:
        super().__init__(str(final))
        self.final = final
        self.clock_skew = clock_skew


class BinanceRestClient:
    """Typed Binance Spot REST calls; answers are `codec` views.

    `transport` replaces the network for all three pools (tests pass an
    `httpx.MockTransport`). `wall_ms` is the wall clock used for `timestamp`.
    """

    def __init__(
        self,
        config: BinanceConfig,
        signer: Signer | None = None,
        *,
        budget: RateBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        wall_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        log: Logger | None = None,
    ) -> None:
        self.config = config
        self.log = log or get_logger("venue.binance")
        self._signer = signer
        self.budget = budget or RateBudget(reserve=config.rate_limit_reserve, max_wait=config.rate_limit_max_wait)
        self._wall_ms = wall_ms
        self._rng = rng or random.Random()
        self.time_offset_ms = 0
        self._time_synced = False
        self._time_lock = trio.Lock()
        self.unknown_outcomes = 0
        self.retries = 0

        self._transport = transport
        self._pools = {pool: self._new_pool(pool) for pool in Pool}
        self.pool_rebuilds = 0

    def _new_pool(self, pool: Pool) -> httpx.AsyncClient:
        config = self.config
        timeout = config.emergency_timeout if pool is Pool.EMERGENCY else config.request_timeout
        return httpx.AsyncClient(
            base_url=config.rest_url,
            timeout=httpx.Timeout(timeout, connect=config.connect_timeout, pool=config.connect_timeout),
            limits=httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections),
            headers={"User-Agent": USER_AGENT},
            transport=self._transport,
            trust_env=self._transport is None,
        )

    async def _rebuild_pool(self, pool: Pool) -> None:
        """Replace a pool that timed out handing out a connection.

        httpcore can leak pool slots when requests are cancelled under
        contention, until every request fails with PoolTimeout; a fresh client
        is the way out. The old one gets a short, bounded chance to close.
        """
        old = self._pools[pool]
        self._pools[pool] = self._new_pool(pool)
        self.pool_rebuilds += 1
        self.log.warning("venue.http_pool_rebuilt", pool=pool.value)
        with trio.move_on_after(1.0):
            await old.aclose()

    async def aclose(self) -> None:
        for client in self._pools.values():
            await client.aclose()

    def __repr__(self) -> str:
        return f"BinanceRestClient({self.config.rest_url!r}, signer={self._signer!r})"

    # --- clock ------------------------------------------------------------------------
    def timestamp_ms(self) -> int:
        """Our wall clock corrected by the measured offset to the venue's."""
        return self._wall_ms() + self.time_offset_ms

    async def sync_time(self, pool: Pool = Pool.MARKET) -> int:
        """Measure the offset to the server's clock; returns the server time (ms)."""
        before = self._wall_ms()
        view = await self._call("GET", "/api/v3/time", {}, codec.SERVER_TIME, weight=1, pool=pool)
        after = self._wall_ms()
        self.time_offset_ms = view.server_time - (before + after) // 2
        self._time_synced = True
        self.log.info("venue.time_sync", offset_ms=self.time_offset_ms, round_trip_ms=after - before)
        return view.server_time

    async def ensure_time_synced(self, pool: Pool = Pool.MARKET) -> None:
        """Measure the clock offset once, before the first signed request."""
        if self._time_synced:
            return
        async with self._time_lock:
            if not self._time_synced:
                await self.sync_time(pool)

    # --- market data ------------------------------------------------------------------
    async def exchange_info(self, symbols: Sequence[str] | None = None) -> codec.ExchangeInfo:
        params = {}
        if symbols:
            params["symbols"] = "[" + ",".join(f'"{s}"' for s in symbols) + "]"
        return await self._call("GET", "/api/v3/exchangeInfo", params, codec.EXCHANGE_INFO, weight=20)

    async def depth(self, symbol: str, limit: int = 100) -> codec.DepthSnapshot:
        return await self._call(
            "GET", "/api/v3/depth", {"symbol": symbol, "limit": str(limit)}, codec.DEPTH, weight=depth_weight(limit)
        )

    # --- orders -----------------------------------------------------------------------
    async def new_order(self, params: Mapping[str, str]) -> codec.OrderResponse:
        """POST /api/v3/order with ready-made parameters (plain decimal strings)."""
        return await self._call(
            "POST", "/api/v3/order", params, codec.ORDER, weight=1, orders=1, signed=True, pool=Pool.ORDERS
        )

    async def cancel_order(
        self,
        symbol: str,
        *,
        orig_client_order_id: str | None = None,
        order_id: int | None = None,
        emergency: bool = False,
    ) -> codec.OrderResponse:
        params = {"symbol": symbol} | _order_ref(orig_client_order_id, order_id)
        return await self._call(
            "DELETE", "/api/v3/order", params, codec.ORDER, weight=1, signed=True, pool=_pool(emergency)
        )

    async def cancel_open_orders(self, symbol: str, *, emergency: bool = False) -> list[codec.OrderResponse]:
        return await self._call(
            "DELETE", "/api/v3/openOrders", {"symbol": symbol}, codec.ORDERS, weight=1, signed=True, pool=_pool(emergency)
        )

    async def query_order(
        self, symbol: str, *, orig_client_order_id: str | None = None, order_id: int | None = None
    ) -> codec.OrderResponse:
        params = {"symbol": symbol} | _order_ref(orig_client_order_id, order_id)
        return await self._call("GET", "/api/v3/order", params, codec.ORDER, weight=4, signed=True, pool=Pool.ORDERS)

    async def open_orders(self, symbol: str | None = None, *, emergency: bool = False) -> list[codec.OrderResponse]:
        params = {"symbol": symbol} if symbol else {}
        return await self._call(
            "GET",
            "/api/v3/openOrders",
            params,
            codec.ORDERS,
            weight=6 if symbol else 80,
            signed=True,
            pool=_pool(emergency),
        )

    # --- account ----------------------------------------------------------------------
    async def account(self, *, omit_zero_balances: bool = True) -> codec.AccountInfo:
        params = {"omitZeroBalances": "true"} if omit_zero_balances else {}
        return await self._call("GET", "/api/v3/account", params, codec.ACCOUNT, weight=20, signed=True, pool=Pool.ORDERS)

    async def my_trades(
        self, symbol: str, *, from_id: int | None = None, order_id: int | None = None, limit: int = 1000
    ) -> list[codec.MyTrade]:
        """Our trades in `symbol`; `from_id` is inclusive (trades with id >= from_id)."""
        params = {"symbol": symbol, "limit": str(limit)}
        if from_id is not None:
            params["fromId"] = str(from_id)
        if order_id is not None:
            params["orderId"] = str(order_id)
        weight = 5 if order_id is not None else 20
        return await self._call("GET", "/api/v3/myTrades", params, codec.MY_TRADES, weight=weight, signed=True, pool=Pool.ORDERS)

    # --- the machinery ------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        decoder: msgspec.json.Decoder,
        *,
        weight: int,
        orders: int = 0,
        signed: bool = False,
        pool: Pool = Pool.MARKET,
    ) -> Any:
        if signed and self._signer is None:
            raise VenueError("NO_CREDENTIALS", f"{method} {path} needs an API key; configure the venue's credentials")
        idempotent = method != "POST"
        attempts = 1 + (self.config.max_retries if idempotent else 0)
        resynced = False
        attempt = 0
        while True:
            attempt += 1
            if signed:
                await self.ensure_time_synced(pool)
            try:
                return await self._send_once(method, path, params, decoder, weight, orders, signed, pool)
            except _Transient as failure:
                if failure.clock_skew:
                    if resynced:
                        raise failure.final from (failure.__cause__ or failure.__context__)
                    resynced = True
                    self.log.warning("venue.clock_skew", method=method, path=path, offset_ms=self.time_offset_ms)
                    await self.sync_time(pool)
                    if not idempotent:
                        raise failure.final from (failure.__cause__ or failure.__context__)
                    attempt -= 1  # a clock fix is not a failed attempt
                    continue
                if attempt >= attempts:
                    if isinstance(failure.final, UnknownOutcome):
                        self.unknown_outcomes += 1
                    raise failure.final from (failure.__cause__ or failure.__context__)
                delay = min(_MAX_BACKOFF, self.config.retry_backoff * 2 ** (attempt - 1)) * (0.5 + self._rng.random())
                self.retries += 1
                self.log.info(
                    "venue.retry", method=method, path=path, attempt=attempt, delay=round(delay, 3),
                    error=describe_error(failure.final),
                )  # fmt: skip
                await trio.sleep(delay)

    async def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        decoder: msgspec.json.Decoder,
        weight: int,
        orders: int,
        signed: bool,
        pool: Pool,
    ) -> Any:
        headers = {}
        if signed:
            signer = self._signer
            assert signer is not None
            params = dict(params)
            params["recvWindow"] = str(self.config.recv_window_ms)
            params["timestamp"] = str(self.timestamp_ms())
            query = encode_params(params)
            signature = signer.sign(query)
            if signer.needs_url_encoding:
                signature = quote(signature, safe="")
            query = f"{query}&signature={signature}"
            headers["X-MBX-APIKEY"] = signer.api_key
        else:
            query = encode_params(params)
        target = f"{path}?{query}" if query else path

        await self.budget.acquire(weight, orders, emergency=pool is Pool.EMERGENCY)
        is_order = method == "POST"
        try:
            response = await self._pools[pool].request(method, target, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
            # Nothing reached the venue.
            if isinstance(exc, httpx.PoolTimeout):
                await self._rebuild_pool(pool)
            failure = VenueUnavailable(f"{method} {path}: could not reach {self.config.rest_url} ({type(exc).__name__}: {exc})")
            if is_order:
                raise failure from exc
            raise _Transient(failure) from exc
        except httpx.TransportError as exc:
            # Sent, or partly sent, with no answer: it may have been executed.
            self._raise_no_answer(method, path, f"{type(exc).__name__}: {exc}")
        self.budget.observe_headers(response.headers)
        return self._interpret(method, path, response, decoder)

    def _raise_no_answer(self, method: str, path: str, what: str) -> NoReturn:
        if method == "POST":
            self.unknown_outcomes += 1
            raise UnknownOutcome(f"{method} {path}: {what}; query the order by its client order id to settle it")
        if method == "DELETE":
            raise _Transient(UnknownOutcome(f"{method} {path}: {what}; the cancel may or may not have happened"))
        raise _Transient(VenueUnavailable(f"{method} {path}: {what}"))

    def _interpret(self, method: str, path: str, response: httpx.Response, decoder: msgspec.json.Decoder) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return decoder.decode(response.content)
            except msgspec.DecodeError as exc:
                if method == "GET":
                    raise VenueError("BAD_RESPONSE", f"unreadable answer to {method} {path}: {exc}", http_status=status) from None
                self._raise_no_answer(method, path, f"unreadable answer ({exc})")

        if status in (429, 418):
            retry_after = _retry_after(response.headers, default=60.0 if status == 429 else 120.0)
            self.budget.block(retry_after, banned=status == 418)
            self.log.warning(
                "venue.rate_limited", status=status, retry_after=retry_after, method=method, path=path
            )
            if status == 418:
                raise VenueBanned(retry_after, f"(HTTP 418 on {method} {path}: IP banned; alert the operator)")
            raise RateLimited(retry_after, f"(HTTP 429 on {method} {path})")

        error = codec.decode_error(response.content)
        if status >= 500:
            detail = f"HTTP {status}" + (f" {error.code}: {error.msg}" if error else "")
            self._raise_no_answer(method, path, detail)

        if error is None:
            text = response.text[:200].strip() or response.reason_phrase
            code = f"HTTP_{status}"
            if method == "POST":
                raise OrderRejected(code, f"{method} {path}: {text}", http_status=status)
            raise VenueError(code, f"{method} {path}: {text}", http_status=status)

        code, msg = error.code, error.msg
        if code == _TIMEOUT_CODE:
            self._raise_no_answer(method, path, f"venue timeout {code}: {msg}")
        if code == _TIMESTAMP_CODE:
            cls = OrderRejected if method == "POST" else VenueError
            raise _Transient(cls(code, msg, http_status=status), clock_skew=True)
        if code in _NOT_FOUND_CODES:
            raise OrderNotFound(code, msg, http_status=status)
        if method == "POST":
            raise OrderRejected(code, msg, http_status=status)
        raise VenueError(code, msg, http_status=status)


def _pool(emergency: bool) -> Pool:
    return Pool.EMERGENCY if emergency else Pool.ORDERS


def _order_ref(orig_client_order_id: str | None, order_id: int | None) -> dict[str, str]:
    if order_id is not None:
        return {"orderId": str(order_id)}
    if orig_client_order_id:
        return {"origClientOrderId": orig_client_order_id}
    raise ValueError("name the order by orig_client_order_id or order_id")


def _retry_after(headers: httpx.Headers, default: float) -> float:
    value = headers.get("Retry-After")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default
