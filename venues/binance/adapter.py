"""`BinanceAdapter`: Binance Spot behind the venue adapter interface of `venues.base`.

REST goes through `BinanceRestClient`. Market data comes over one
combined-stream WebSocket for all symbols (depth diffs and trades); user data
over the WebSocket API with `userDataStream.subscribe.signature`, which works
with any key type.

The streams are plain connections: they end (connection closed normally) or
raise `VenueUnavailable` (lost) and never reconnect by themselves. Reconnecting,
back-off, silence detection and resubscription are the feed's and the gateway's
business, so that there is one reconnect policy, in the actors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import count

import httpx
import msgspec
import trio
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.trio.client import ClientConnection, connect

from daemon.logs import Logger, get_logger
from daemon.model import FilterViolation, Instrument, OrderType, TimeInForce, plain
from venues.base import (
    AccountTrade,
    Balance,
    BookSnapshot,
    MarketEvent,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
    RateLimited,
    StreamNotice,
    UserEvent,
    VenueBanned,
    VenueError,
    VenueUnavailable,
)
from venues.binance import codec
from venues.binance.client import USER_AGENT, BinanceRestClient, wall_clock_ms
from venues.binance.config import BinanceConfig, signer_from_secrets
from venues.binance.ratelimit import RateBudget, RateLimit
from venues.binance.signing import Signer, websocket_payload


MAX_STREAMS_PER_CONNECTION = 1024
STREAMS_PER_SYMBOL = 2  # depth diffs and trades
LOCAL_REJECT = "LOCAL_FILTER"
_SUBSCRIBE_WEIGHT = 2  # userDataStream.subscribe.signature; WebSocket API weight shares the IP's budget
_WS_MAX_QUEUE = 256  # frames held before reading stops; the feed drains them fast


class BinanceAdapter:
    """Binance Spot: REST calls, one market-data stream, one user-data stream.

    Credentials come in as a `Signer` (see `from_environment`); the config
    never holds them. `transport` replaces the HTTP network (tests);
    `budget` lets several adapters on one IP share one rate budget.
    """

    def __init__(
        self,
        config: BinanceConfig,
        signer: Signer | None = None,
        *,
        name: str = "binance",
        budget: RateBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        wall_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.name = name
        self.config = config
        self._signer = signer
        self.log = get_logger(f"venue.{name}")
        self.client = BinanceRestClient(
            config, signer, budget=budget, transport=transport, wall_ms=wall_ms, log=self.log
        )
        self._instruments: dict[str, Instrument] = {}
        self._request_ids = count(1)

    @classmethod
    def from_config(cls, config: BinanceConfig, **kwargs) -> BinanceAdapter:
        """An adapter whose credentials are read from systemd credentials or the environment.

        Raises `MissingCredentials` naming what to set.
        """
        return cls(config, signer_from_secrets(config), **kwargs)

    def __repr__(self) -> str:
        return f"BinanceAdapter(name={self.name!r}, rest={self.config.rest_url!r}, signer={self._signer!r})"

    async def aclose(self) -> None:
        """Close the HTTP pools. Streams are closed by leaving their `async with`."""
        await self.client.aclose()

    @property
    def budget(self) -> RateBudget:
        return self.client.budget

    def instrument(self, symbol: str) -> Instrument | None:
        """The instrument as last loaded by `instruments()`, if any."""
        return self._instruments.get(symbol)

    # --- reference data ---------------------------------------------------------------
    async def instruments(self, symbols: Sequence[str] | None = None) -> list[Instrument]:
        """Every instrument (or just `symbols`) with its filters; also adopts the venue's rate limits."""
        info = await self.client.exchange_info(symbols)
        if info.rate_limits:
            self.budget.configure([RateLimit(r.rate_limit_type, r.seconds, r.limit) for r in info.rate_limits])
        found = [codec.instrument(self.name, s) for s in info.symbols]
        self._instruments.update((i.symbol, i) for i in found)
        return found

    async def server_time_ms(self) -> int:
        """The venue's clock; also re-measures the offset applied to signed requests."""
        return await self.client.sync_time()

    # --- market data ------------------------------------------------------------------
    async def book_snapshot(self, symbol: str, depth: int = 100) -> BookSnapshot:
        return codec.book_snapshot(symbol, await self.client.depth(symbol, depth))

    def market_stream_url(self, symbols: Sequence[str]) -> str:
        if not symbols:
            raise ValueError("market_stream needs at least one symbol")
        if len(symbols) * STREAMS_PER_SYMBOL > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"{len(symbols)} symbols need {len(symbols) * STREAMS_PER_SYMBOL} streams; "
                f"Binance allows {MAX_STREAMS_PER_CONNECTION} per connection: split them over several streams"
            )
        depth = "@depth@100ms" if self.config.depth_speed_ms == 100 else "@depth"
        streams = []
        for symbol in symbols:
            lower = symbol.lower()
            streams += (f"{lower}{depth}", f"{lower}@trade")
        return f"{self.config.market_stream_url}/stream?streams={'/'.join(streams)}"

    @asynccontextmanager
    async def market_stream(self, symbols: Sequence[str]) -> AsyncIterator[AsyncIterator[MarketEvent]]:
        """One connection with depth diffs and trades of `symbols`.

        Yields BookDiff, PublicTrade and StreamNotice (`server_shutdown`: reconnect
        now; `malformed_frame`, `unknown_event`, `venue_message`: logged, the
        stream goes on — a lost diff shows up as a gap in the book sync).
        """
        url = self.market_stream_url(symbols)
        async with AsyncExitStack() as stack:
            ws = await self._connect(stack, url, "market stream")
            yield _MarketEvents(ws, self.log)

    # --- orders -----------------------------------------------------------------------
    def order_params(self, order: OrderRequest) -> dict[str, str]:
        """The POST /api/v3/order parameters for `order`, as plain decimal strings.

        The order must already be rounded to the instrument's filters (DESIGN §3);
        when the instrument is known it is checked again here, and an order the
        venue would refuse is refused locally (`OrderRejected`, code LOCAL_FILTER)
        without being sent.
        """

        def refuse(message: str) -> OrderRejected:
            return OrderRejected(LOCAL_REJECT, f"{order.symbol} {order.client_order_id}: {message}")

        params = {
            "symbol": order.symbol,
            "side": order.side.value,
            "type": order.order_type.value,
            "newClientOrderId": order.client_order_id,
            "newOrderRespType": "RESULT",
        }
        if order.order_type is OrderType.MARKET:
            if order.price is not None:
                raise refuse("a MARKET order takes no price")
            if (order.quantity is None) == (order.quote_quantity is None):
                raise refuse("a MARKET order needs exactly one of quantity or quote_quantity")
            if order.time_in_force is not None and order.time_in_force is not TimeInForce.GTC:
                raise refuse("a MARKET order takes no time in force")
        else:
            if order.price is None or order.quantity is None:
                raise refuse(f"a {order.order_type} order needs a price and a quantity")
            if order.quote_quantity is not None:
                raise refuse("quote_quantity is for MARKET orders only")
            if order.order_type is OrderType.LIMIT:
                params["timeInForce"] = (order.time_in_force or TimeInForce.GTC).value
            elif order.time_in_force not in (None, TimeInForce.GTC):
                raise refuse("a LIMIT_MAKER order rests on the book; it takes no IOC/FOK")
        if order.iceberg_qty is not None and order.order_type is OrderType.MARKET:
            raise refuse("iceberg quantity is for limit orders only")

        inst = self._instruments.get(order.symbol)
        if inst is not None:
            try:
                if order.quantity is not None:
                    inst.check(order.quantity, order.price, is_market=order.order_type is OrderType.MARKET)
            except FilterViolation as exc:
                raise refuse(f"filter {exc.filter}: {exc} (round with Instrument.round_qty/round_price first)") from None
            if order.iceberg_qty is not None and not inst.iceberg_allowed:
                raise refuse("iceberg orders are not allowed on this symbol")

        if order.quantity is not None:
            params["quantity"] = plain(order.quantity)
        if order.quote_quantity is not None:
            params["quoteOrderQty"] = plain(order.quote_quantity)
        if order.price is not None:
            params["price"] = plain(order.price)
        if order.iceberg_qty is not None:
            params["icebergQty"] = plain(order.iceberg_qty)
        return params

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Raises OrderRejected, UnknownOutcome, RateLimited, VenueBanned, VenueUnavailable."""
        view = await self.client.new_order(self.order_params(order))
        return codec.order_state(view, order)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        """Raises OrderNotFound when the order is unknown or already closed."""
        return codec.order_state(await self.client.cancel_order(symbol, orig_client_order_id=client_order_id))

    async def cancel_all(self, symbol: str) -> list[OrderState]:
        return await self._cancel_all(symbol, emergency=False)

    async def emergency_cancel_all(self, symbol: str) -> list[OrderState]:
        """Cancel-all over the emergency pool, drawing on the budget's reserve."""
        return await self._cancel_all(symbol, emergency=True)

    async def emergency_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Open orders over the emergency pool: the kill's verification step."""
        return [codec.order_state(v) for v in await self.client.open_orders(symbol, emergency=True)]

    async def _cancel_all(self, symbol: str, *, emergency: bool) -> list[OrderState]:
        try:
            views = await self.client.cancel_open_orders(symbol, emergency=emergency)
        except OrderNotFound:
            return []  # Binance answers -2011 when there was nothing to cancel
        return codec.cancelled_orders(views)

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState:
        """Raises OrderNotFound when the venue never saw the order."""
        return codec.order_state(await self.client.query_order(symbol, orig_client_order_id=client_order_id))

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        return [codec.order_state(v) for v in await self.client.open_orders(symbol)]

    async def balances(self) -> list[Balance]:
        return codec.balances(await self.client.account())

    async def my_trades(self, symbol: str, from_trade_id: str | None = None) -> list[AccountTrade]:
        """Our trades in `symbol`, from `from_trade_id` inclusive (oldest first, at most 1000)."""
        from_id = int(from_trade_id) if from_trade_id is not None else None
        return [codec.account_trade(t) for t in await self.client.my_trades(symbol, from_id=from_id)]

    # --- user data ----------------------------------------------------------------------
    @asynccontextmanager
    async def user_stream(self) -> AsyncIterator[AsyncIterator[UserEvent]]:
        """Our order updates, fills and balances over the WebSocket API.

        Entering subscribes (signed `userDataStream.subscribe.signature`) and
        waits for the venue's answer, so once inside nothing is missed from
        then on; the gateway reconciles by REST what happened before. Yields
        Fill then OrderUpdate for a trade, OrderUpdate otherwise, BalanceUpdate
        per changed asset, and StreamNotice (`balance_delta`, `server_shutdown`,
        `unknown_event`, `malformed_frame`: reconcile by REST, and
        `stream_terminated`, after which the iterator ends).
        """
        if self._signer is None:
            raise VenueError("NO_CREDENTIALS", "the user data stream needs an API key; configure the venue's credentials")
        async with AsyncExitStack() as stack:
            ws = await self._connect(stack, self.config.ws_api_url, "WebSocket API")
            subscription = await self._subscribe_user_data(ws)
            self.log.info("venue.user_stream_subscribed", subscription=subscription)
            yield _UserEvents(ws, self.name, self.log)

    async def _subscribe_user_data(self, ws: ClientConnection) -> int:
        signer = self._signer
        assert signer is not None
        await self.client.ensure_time_synced()
        for attempt in (1, 2):
            await self.budget.acquire(_SUBSCRIBE_WEIGHT)
            params: dict[str, object] = {
                "apiKey": signer.api_key,
                "recvWindow": self.config.recv_window_ms,
                "timestamp": self.client.timestamp_ms(),
            }
            params["signature"] = signer.sign(websocket_payload(params))
            request_id = f"subscribe-{next(self._request_ids)}"
            request = {"id": request_id, "method": "userDataStream.subscribe.signature", "params": params}
            try:
                await ws.send(codec.ENCODER.encode(request), text=True)
                with trio.fail_after(self.config.ws_open_timeout):
                    answer = await self._await_answer(ws, request_id)
            except ConnectionClosed as exc:
                raise VenueUnavailable(f"WebSocket API closed while subscribing to user data: {exc}") from exc
            except trio.TooSlowError:
                raise VenueUnavailable(
                    f"no answer to the user data subscription within {self.config.ws_open_timeout}s"
                ) from None
            if answer.status == 200 and codec.present(answer.result):
                try:
                    return codec.SUBSCRIPTION_RESULT.decode(answer.result).subscription_id
                except msgspec.DecodeError as exc:
                    raise VenueError("BAD_RESPONSE", f"unreadable subscription answer: {exc}") from None
            error = answer.error
            code = error.code if error else f"HTTP_{answer.status}"
            message = error.msg if error else "user data subscription refused"
            if answer.status in (418, 429):
                default = 120.0 if answer.status == 418 else 60.0
                retry_after = error.retry_after_seconds(default) if error else default
                self.budget.block(retry_after, banned=answer.status == 418)
                cls = VenueBanned if answer.status == 418 else RateLimited
                raise cls(retry_after, f"(user data subscription: {message})")
            if code == -1021 and attempt == 1:
                await self.client.sync_time()
                continue
            raise VenueError(code, f"user data subscription refused: {message}", http_status=answer.status)
        raise AssertionError("unreachable")

    async def _await_answer(self, ws: ClientConnection, request_id: str) -> codec.WsApiFrame:
        while True:
            raw = await ws.recv(decode=False)
            try:
                frame = codec.decode_ws_api_frame(raw)
            except codec.MalformedFrame as exc:
                self.log.warning("venue.malformed_frame", stream="ws_api", error=str(exc))
                continue
            if type(frame) is codec.WsApiFrame and frame.id == request_id:
                return frame

    # --- connections --------------------------------------------------------------------
    async def _connect(self, stack: AsyncExitStack, url: str, what: str) -> ClientConnection:
        cfg = self.config
        self.budget.check_blocked()  # a banned IP that keeps connecting only extends its ban
        try:
            return await stack.enter_async_context(
                connect(
                    url,
                    compression=None,
                    open_timeout=cfg.ws_open_timeout,
                    ping_interval=cfg.ws_ping_interval,
                    ping_timeout=cfg.ws_ping_timeout,
                    close_timeout=2,
                    max_queue=_WS_MAX_QUEUE,
                    user_agent_header=USER_AGENT,
                )
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (418, 429):
                retry_after = _header_seconds(exc.response.headers.get("Retry-After"), 120.0 if status == 418 else 60.0)
                self.budget.block(retry_after, banned=status == 418)
                cls = VenueBanned if status == 418 else RateLimited
                raise cls(retry_after, f"({what} refused with HTTP {status})") from exc
            raise VenueUnavailable(f"{what} at {url} refused the connection: HTTP {status}") from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise VenueUnavailable(f"could not open the {what} at {url}: {type(exc).__name__}: {exc}") from exc


def _header_seconds(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


class _MarketEvents:
    """Async iterator over one market-data connection (see `BinanceAdapter.market_stream`)."""

    __slots__ = ("_ws", "_log", "frames")

    def __init__(self, ws: ClientConnection, log: Logger) -> None:
        self._ws = ws
        self._log = log
        self.frames = 0

    def __aiter__(self) -> _MarketEvents:
        return self

    async def __anext__(self) -> MarketEvent:
        while True:
            raw = await _receive(self._ws, "market stream")
            self.frames += 1
            try:
                event = codec.decode_market_frame(raw, text_levels=True)  # exact text levels: the book parses them fastest
            except codec.MalformedFrame as exc:
                self._log.warning("venue.malformed_frame", stream="market", error=str(exc))
                return StreamNotice(kind=codec.MALFORMED_FRAME, detail=str(exc))
            if event is None:
                continue
            if type(event) is StreamNotice:
                self._log.info("venue.stream_notice", stream="market", kind=event.kind, detail=event.detail)
            return event


class _UserEvents:
    """Async iterator over the user-data subscription (see `BinanceAdapter.user_stream`)."""

    __slots__ = ("_ws", "_venue", "_log", "_pending", "_ended", "frames")

    def __init__(self, ws: ClientConnection, venue: str, log: Logger) -> None:
        self._ws = ws
        self._venue = venue
        self._log = log
        self._pending: deque[UserEvent] = deque()
        self._ended = False
        self.frames = 0

    def __aiter__(self) -> _UserEvents:
        return self

    async def __anext__(self) -> UserEvent:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            raw = await _receive(self._ws, "user data stream")
            self.frames += 1
            try:
                frame = codec.decode_ws_api_frame(raw)
            except codec.MalformedFrame as exc:
                # Could have been a fill: tell the gateway so it reconciles by REST.
                self._log.error("venue.malformed_frame", stream="user", error=str(exc))
                return StreamNotice(kind=codec.MALFORMED_FRAME, detail=str(exc))
            events = codec.frame_user_events(self._venue, frame, trio.current_time())
            for event in events:
                if type(event) is StreamNotice:
                    self._log.info("venue.stream_notice", stream="user", kind=event.kind, detail=event.detail)
                    if event.kind == codec.STREAM_TERMINATED:
                        self._ended = True
            self._pending.extend(events)
        return self._pending.popleft()


async def _receive(ws: ClientConnection, what: str) -> bytes:
    try:
        return await ws.recv(decode=False)
    except ConnectionClosedOK:
        raise StopAsyncIteration from None
    except ConnectionClosed as exc:
        raise VenueUnavailable(f"{what} lost: {exc}") from exc


__all__ = ["BinanceAdapter"]
