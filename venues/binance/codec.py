"""Binance Spot wire formats: typed msgspec views of its JSON, and conversions to our values.

Every decoder is built once at import and decodes straight into frozen Structs
with `Decimal` prices and quantities (Binance sends them as strings), so the
hot path never builds a dict; depth updates can also keep their levels as
text (`DepthUpdateText`), which the order book keys without any `Decimal`.
The Structs are narrow views: fields we do not use are skipped by the
decoder, and new fields Binance adds do not break us.

Stream frames are decoded in one pass through a union tagged on the event
type `e`; a frame outside the union (a new event type, an error, an ack) falls
back to a loose second pass so it can be reported instead of crashing the
stream. Frames that are not JSON at all raise `MalformedFrame`.

Conversion functions turn these views into the venue-neutral types of
`venues.base` and `daemon.messages`; they are pure and take the venue name
(and the monotonic `ts` to stamp, where a message has one) as arguments.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from msgspec import Raw, field

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce
from venues.base import (
    AccountTrade,
    Balance,
    BookDiff,
    BookSnapshot,
    OrderRequest,
    OrderState,
    PublicTrade,
    StreamNotice,
)

ZERO = Decimal(0)
LevelList = list[tuple[Decimal, Decimal]]
TextLevelList = list[tuple[str, str]]  # levels as Binance wrote them, e.g. ("60000.01000000", "0.00541000")


class MalformedFrame(ValueError):
    """A message from the venue that could not be read at all."""


class _View(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the REST views."""


class _Event(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="e"):
    """Base of stream events, told apart by their `e` field."""


# ---------------------------------------------------------------------------------------
# REST: general
# ---------------------------------------------------------------------------------------


class ErrorData(_View, kw_only=True):
    """Extra detail of a WebSocket API 418/429: `retryAfter` is when sending may resume (UTC ms)."""

    server_time: int | None = field(name="serverTime", default=None)
    retry_after: int | None = field(name="retryAfter", default=None)


class ErrorBody(_View, kw_only=True):
    code: int
    msg: str = ""
    data: ErrorData | None = None

    def retry_after_seconds(self, default: float) -> float:
        """Seconds until the venue accepts requests again, from `data`, else `default`."""
        d = self.data
        if d is None or d.retry_after is None or d.server_time is None or d.retry_after <= d.server_time:
            return default
        return (d.retry_after - d.server_time) / 1000


class ServerTime(_View, kw_only=True):
    server_time: int = field(name="serverTime")


class RateLimitInfo(_View, kw_only=True):
    """One entry of `exchangeInfo.rateLimits` (also in WebSocket API responses)."""

    rate_limit_type: str = field(name="rateLimitType")  # REQUEST_WEIGHT | ORDERS | RAW_REQUESTS
    interval: str  # SECOND | MINUTE | HOUR | DAY
    interval_num: int = field(name="intervalNum")
    limit: int
    count: int | None = None

    @property
    def seconds(self) -> int:
        return self.interval_num * _INTERVAL_SECONDS[self.interval]


_INTERVAL_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


class SymbolFilter(_View, kw_only=True):
    """Any symbol filter; each type fills in its own fields and leaves the rest None."""

    filter_type: str = field(name="filterType")
    min_price: Decimal | None = field(name="minPrice", default=None)
    max_price: Decimal | None = field(name="maxPrice", default=None)
    tick_size: Decimal | None = field(name="tickSize", default=None)
    min_qty: Decimal | None = field(name="minQty", default=None)
    max_qty: Decimal | None = field(name="maxQty", default=None)
    step_size: Decimal | None = field(name="stepSize", default=None)
    min_notional: Decimal | None = field(name="minNotional", default=None)
    max_notional: Decimal | None = field(name="maxNotional", default=None)
    apply_min_to_market: bool | None = field(name="applyMinToMarket", default=None)
    apply_to_market: bool | None = field(name="applyToMarket", default=None)


class SymbolInfo(_View, kw_only=True):
    symbol: str
    status: str
    base_asset: str = field(name="baseAsset")
    quote_asset: str = field(name="quoteAsset")
    base_asset_precision: int = field(name="baseAssetPrecision", default=8)
    quote_asset_precision: int = field(name="quoteAssetPrecision", default=8)
    order_types: list[str] = field(name="orderTypes", default_factory=list)
    iceberg_allowed: bool = field(name="icebergAllowed", default=False)
    is_spot_trading_allowed: bool = field(name="isSpotTradingAllowed", default=True)
    filters: list[SymbolFilter] = field(default_factory=list)


class ExchangeInfo(_View, kw_only=True):
    server_time: int = field(name="serverTime", default=0)
    rate_limits: list[RateLimitInfo] = field(name="rateLimits", default_factory=list)
    symbols: list[SymbolInfo] = field(default_factory=list)


class DepthSnapshot(_View, kw_only=True):
    last_update_id: int = field(name="lastUpdateId")
    bids: LevelList
    asks: LevelList


# ---------------------------------------------------------------------------------------
# REST: orders and account
# ---------------------------------------------------------------------------------------


class OrderFill(_View, kw_only=True):
    """A fill inside a FULL new-order answer (always a taker fill)."""

    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str = field(name="commissionAsset")
    trade_id: int = field(name="tradeId")


class OrderResponse(_View, kw_only=True):
    """Any order object: new-order ACK/RESULT/FULL, query, open orders, cancel.

    ACK carries only the identity fields, so the rest defaults to None. A cancel
    answer's `clientOrderId` is the cancel's own id and `origClientOrderId` the
    order's. In a cancel-all answer an order list appears with its members in
    `orderReports`.
    """

    symbol: str
    order_id: int = field(name="orderId", default=-1)
    order_list_id: int = field(name="orderListId", default=-1)
    client_order_id: str = field(name="clientOrderId", default="")
    orig_client_order_id: str | None = field(name="origClientOrderId", default=None)
    transact_time: int | None = field(name="transactTime", default=None)
    time: int | None = None
    update_time: int | None = field(name="updateTime", default=None)
    price: Decimal | None = None
    orig_qty: Decimal | None = field(name="origQty", default=None)
    executed_qty: Decimal | None = field(name="executedQty", default=None)
    cumulative_quote_qty: Decimal | None = field(name="cummulativeQuoteQty", default=None)
    orig_quote_order_qty: Decimal | None = field(name="origQuoteOrderQty", default=None)
    status: str | None = None
    time_in_force: str | None = field(name="timeInForce", default=None)
    type: str | None = None
    side: str | None = None
    fills: list[OrderFill] | None = None
    order_reports: list[OrderResponse] | None = field(name="orderReports", default=None)


class AssetBalance(_View, kw_only=True):
    asset: str
    free: Decimal
    locked: Decimal


class AccountInfo(_View, kw_only=True):
    can_trade: bool = field(name="canTrade", default=True)
    account_type: str = field(name="accountType", default="SPOT")
    update_time: int = field(name="updateTime", default=0)
    balances: list[AssetBalance] = field(default_factory=list)


class MyTrade(_View, kw_only=True):
    symbol: str
    id: int
    order_id: int = field(name="orderId")
    price: Decimal
    qty: Decimal
    quote_qty: Decimal = field(name="quoteQty", default=ZERO)
    commission: Decimal
    commission_asset: str = field(name="commissionAsset")
    time: int
    is_buyer: bool = field(name="isBuyer")
    is_maker: bool = field(name="isMaker")


# ---------------------------------------------------------------------------------------
# Market streams
# ---------------------------------------------------------------------------------------


class DepthUpdate(_Event, tag="depthUpdate", kw_only=True):
    event_ms: int = field(name="E")
    symbol: str = field(name="s")
    first_id: int = field(name="U")
    last_id: int = field(name="u")
    bids: LevelList = field(name="b")
    asks: LevelList = field(name="a")


class DepthUpdateText(_Event, tag="depthUpdate", kw_only=True):
    """`DepthUpdate` with its levels left as text, for the feed's hot path.

    A frame carries about forty prices and quantities and the book reads few of
    them, so making a `Decimal` of each costs more than the rest of the frame.
    `venues.orderbook.LocalBook` keys the text exactly, refuses text that is not
    a number when it applies it, and builds the `Decimal` of a level only when
    the level is read (the same value this decoder's sibling would have made).
    """

    event_ms: int = field(name="E")
    symbol: str = field(name="s")
    first_id: int = field(name="U")
    last_id: int = field(name="u")
    bids: TextLevelList = field(name="b")
    asks: TextLevelList = field(name="a")


class TradeEvent(_Event, tag="trade", kw_only=True):
    event_ms: int = field(name="E")
    symbol: str = field(name="s")
    trade_id: int = field(name="t")
    price: Decimal = field(name="p")
    qty: Decimal = field(name="q")
    trade_ms: int = field(name="T")
    buyer_is_maker: bool = field(name="m")


class ServerShutdown(_Event, tag="serverShutdown", kw_only=True):
    """The server is going away: reconnect now (market streams and the WebSocket API)."""

    event_ms: int = field(name="E", default=0)


class BookTicker(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`<symbol>@bookTicker` payload (it has no `e` field)."""

    update_id: int = field(name="u")
    symbol: str = field(name="s")
    bid: Decimal = field(name="b")
    bid_qty: Decimal = field(name="B")
    ask: Decimal = field(name="a")
    ask_qty: Decimal = field(name="A")


class MarketFrame(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A combined-stream frame: `{"stream": name, "data": payload}`."""

    stream: str
    data: DepthUpdate | TradeEvent | ServerShutdown


class MarketFrameText(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`MarketFrame` with depth levels as text (see `DepthUpdateText`)."""

    stream: str
    data: DepthUpdateText | TradeEvent | ServerShutdown


class BookTickerFrame(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    stream: str
    data: BookTicker


_ABSENT = Raw()


def present(raw: Raw) -> bool:
    """Whether a deferred field was sent with a value (absent and null both count as no)."""
    return len(raw) > 0 and bytes(raw) != b"null"


class LooseFrame(msgspec.Struct, frozen=True, kw_only=True):
    """Whatever a frame outside the fast path holds, for reporting it."""

    stream: str | None = None
    data: Raw = _ABSENT
    id: int | str | None = None
    result: Raw = _ABSENT
    code: int | None = None
    msg: str | None = None
    status: int | None = None
    error: ErrorBody | None = None
    subscription_id: int | None = field(name="subscriptionId", default=None)
    event: Raw = _ABSENT


class _EventType(msgspec.Struct, frozen=True):
    e: str = ""


# ---------------------------------------------------------------------------------------
# User data (WebSocket API)
# ---------------------------------------------------------------------------------------


class ExecutionReport(_Event, tag="executionReport", kw_only=True):
    event_ms: int = field(name="E")
    symbol: str = field(name="s")
    client_order_id: str = field(name="c")
    side: str = field(name="S")
    order_type: str = field(name="o")
    time_in_force: str = field(name="f", default="")
    quantity: Decimal = field(name="q")
    price: Decimal = field(name="p")
    orig_client_order_id: str = field(name="C", default="")
    execution_type: str = field(name="x")
    status: str = field(name="X")
    reject_reason: str = field(name="r", default="NONE")
    order_id: int = field(name="i")
    last_qty: Decimal = field(name="l")
    cumulative_qty: Decimal = field(name="z")
    last_price: Decimal = field(name="L")
    commission: Decimal = field(name="n", default=ZERO)
    commission_asset: str | None = field(name="N", default=None)
    transaction_ms: int = field(name="T", default=0)
    trade_id: int = field(name="t", default=-1)
    is_maker: bool = field(name="m", default=False)
    cumulative_quote_qty: Decimal = field(name="Z", default=ZERO)
    expiry_reason: str | None = field(name="eR", default=None)


class PositionBalance(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    asset: str = field(name="a")
    free: Decimal = field(name="f")
    locked: Decimal = field(name="l")


class AccountPosition(_Event, tag="outboundAccountPosition", kw_only=True):
    event_ms: int = field(name="E")
    update_ms: int = field(name="u", default=0)
    balances: list[PositionBalance] = field(name="B")


class BalanceDelta(_Event, tag="balanceUpdate", kw_only=True):
    """A deposit, withdrawal or transfer; the new totals follow in `outboundAccountPosition`."""

    event_ms: int = field(name="E")
    asset: str = field(name="a")
    delta: Decimal = field(name="d")
    clear_ms: int = field(name="T", default=0)


class EventStreamTerminated(_Event, tag="eventStreamTerminated", kw_only=True):
    """The subscription ended (e.g. logout or key change): subscribe again."""

    event_ms: int = field(name="E", default=0)


UserEventView = ExecutionReport | AccountPosition | BalanceDelta | EventStreamTerminated | ServerShutdown


class WsApiFrame(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Anything the WebSocket API sends: a response (`id`, `status`, `result`|`error`)
    or a subscription event (`subscriptionId`, `event`)."""

    id: int | str | None = None
    status: int | None = None
    result: Raw = _ABSENT
    error: ErrorBody | None = None
    rate_limits: list[RateLimitInfo] | None = field(name="rateLimits", default=None)
    subscription_id: int | None = field(name="subscriptionId", default=None)
    event: UserEventView | None = None


class SubscriptionResult(msgspec.Struct, frozen=True):
    subscription_id: int = field(name="subscriptionId")


# ---------------------------------------------------------------------------------------
# Pre-built decoders
# ---------------------------------------------------------------------------------------

ERROR = msgspec.json.Decoder(ErrorBody)
SERVER_TIME = msgspec.json.Decoder(ServerTime)
EXCHANGE_INFO = msgspec.json.Decoder(ExchangeInfo)
DEPTH = msgspec.json.Decoder(DepthSnapshot)
ORDER = msgspec.json.Decoder(OrderResponse)
ORDERS = msgspec.json.Decoder(list[OrderResponse])
ACCOUNT = msgspec.json.Decoder(AccountInfo)
MY_TRADES = msgspec.json.Decoder(list[MyTrade])
MARKET_FRAME = msgspec.json.Decoder(MarketFrame)
MARKET_FRAME_TEXT = msgspec.json.Decoder(MarketFrameText)
BOOK_TICKER_FRAME = msgspec.json.Decoder(BookTickerFrame)
LOOSE_FRAME = msgspec.json.Decoder(LooseFrame)
WS_API_FRAME = msgspec.json.Decoder(WsApiFrame)
SUBSCRIPTION_RESULT = msgspec.json.Decoder(SubscriptionResult)
_EVENT_TYPE = msgspec.json.Decoder(_EventType)

ENCODER = msgspec.json.Encoder()


def decode_error(body: bytes) -> ErrorBody | None:
    """The `{code, msg}` of an error answer, or None when the body is something else (HTML, empty)."""
    try:
        return ERROR.decode(body)
    except msgspec.DecodeError:
        return None


# ---------------------------------------------------------------------------------------
# Conversions: market data
# ---------------------------------------------------------------------------------------


def book_snapshot(symbol: str, view: DepthSnapshot) -> BookSnapshot:
    return BookSnapshot(symbol=symbol, last_update_id=view.last_update_id, bids=view.bids, asks=view.asks)


def book_diff(ev: DepthUpdate | DepthUpdateText) -> BookDiff:
    """The diff of a depth update; its levels are Decimal or text, as the update's."""
    return BookDiff(
        symbol=ev.symbol, first_id=ev.first_id, last_id=ev.last_id, bids=ev.bids, asks=ev.asks, venue_ms=ev.event_ms
    )


def public_trade(ev: TradeEvent) -> PublicTrade:
    # The buyer being the maker means the seller hit the bid.
    return PublicTrade(
        symbol=ev.symbol,
        trade_id=ev.trade_id,
        price=ev.price,
        qty=ev.qty,
        taker_side=Side.SELL if ev.buyer_is_maker else Side.BUY,
        venue_ms=ev.trade_ms,
    )


SERVER_SHUTDOWN = "server_shutdown"
STREAM_TERMINATED = "stream_terminated"
UNKNOWN_EVENT = "unknown_event"
VENUE_MESSAGE = "venue_message"
BALANCE_DELTA = "balance_delta"


def decode_market_frame(
    frame: bytes | str, *, text_levels: bool = False
) -> BookDiff | PublicTrade | StreamNotice | None:
    """One combined-stream frame as our market event.

    Returns None for frames that carry nothing (e.g. a subscription ack);
    raises `MalformedFrame` for frames that cannot be read.

    With `text_levels`, a depth update's levels stay the text Binance sent
    (`venues.base.TextLevel`), about four times cheaper to decode; give such a
    diff to `BookSync.on_diff` / `LocalBook.apply_levels` as usual, which
    check the text as they apply it (a level that is not a number raises
    `venues.orderbook.MalformedLevel` there instead of `MalformedFrame` here).
    """
    try:
        data = (MARKET_FRAME_TEXT if text_levels else MARKET_FRAME).decode(frame).data
    except msgspec.DecodeError:
        return _market_slow_path(frame)
    kind = type(data)
    if kind is DepthUpdateText or kind is DepthUpdate:
        return book_diff(data)
    if kind is TradeEvent:
        return public_trade(data)
    return StreamNotice(kind=SERVER_SHUTDOWN, detail=f"server shutdown announced at {data.event_ms}")


def _market_slow_path(frame: bytes | str) -> StreamNotice | None:
    try:
        loose = LOOSE_FRAME.decode(frame)
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"unreadable market frame ({exc}): {_excerpt(frame)}") from None
    if loose.code is not None:
        return StreamNotice(kind=VENUE_MESSAGE, detail=f"error {loose.code}: {loose.msg}")
    if not present(loose.data):
        if loose.id is not None:
            return None  # an answer to a control request, e.g. {"result": null, "id": 1}
        raise MalformedFrame(f"market frame without data: {_excerpt(frame)}")
    if loose.stream is not None and loose.stream.endswith("@bookTicker"):
        return StreamNotice(kind=UNKNOWN_EVENT, detail=f"bookTicker on {loose.stream} (not subscribed by market_stream)")
    try:
        kind = _EVENT_TYPE.decode(loose.data).e
    except msgspec.DecodeError:
        raise MalformedFrame(f"market frame with unreadable data: {_excerpt(frame)}") from None
    if kind in ("depthUpdate", "trade", "serverShutdown"):
        raise MalformedFrame(f"malformed {kind} on {loose.stream}: {_excerpt(frame)}")
    return StreamNotice(kind=UNKNOWN_EVENT, detail=f"{kind or 'untyped'} event on {loose.stream}")


def _excerpt(frame: bytes | str, limit: int = 200) -> str:
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes | bytearray | memoryview) else frame
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------------------------------
# Conversions: instruments, orders, account
# ---------------------------------------------------------------------------------------


def instrument(venue: str, info: SymbolInfo) -> Instrument:
    """Our Instrument from one `exchangeInfo` symbol and its filters.

    NOTIONAL wins over the older MIN_NOTIONAL when both are present. A zero
    tick or step (rule disabled) falls back to the asset precision, since the
    book and rounding need a positive grid.
    """
    by_type = {f.filter_type: f for f in info.filters}
    price = by_type.get("PRICE_FILTER")
    lot = by_type.get("LOT_SIZE")
    notional = by_type.get("NOTIONAL") or by_type.get("MIN_NOTIONAL")
    tick = price.tick_size if price and price.tick_size else Decimal(1).scaleb(-info.quote_asset_precision)
    step = lot.step_size if lot and lot.step_size else Decimal(1).scaleb(-info.base_asset_precision)
    return Instrument(
        venue=venue,
        symbol=info.symbol,
        base=info.base_asset,
        quote=info.quote_asset,
        tick_size=tick.normalize(),
        step_size=step.normalize(),
        min_qty=_or_zero(lot.min_qty if lot else None),
        max_qty=_or_zero(lot.max_qty if lot else None),
        min_price=_or_zero(price.min_price if price else None),
        max_price=_or_zero(price.max_price if price else None),
        min_notional=_or_zero(notional.min_notional if notional else None),
        max_notional=_or_zero(notional.max_notional if notional else None),
        trading=info.status == "TRADING" and info.is_spot_trading_allowed,
        iceberg_allowed=info.iceberg_allowed,
    )


def _or_zero(value: Decimal | None) -> Decimal:
    return value.normalize() if value else ZERO


VENUE_STATUS: dict[str, OrderStatus] = {
    "NEW": OrderStatus.NEW,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "PENDING_CANCEL": OrderStatus.PENDING_CANCEL,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,  # expired by self-trade prevention
    "PENDING_NEW": OrderStatus.PENDING_NEW,  # a waiting leg of an order list
}

# Order types we never send but may find at the venue (placed by hand, say).
# They are reported as what they turn into once triggered, so that
# reconciliation sees every working order instead of failing on one.
VENUE_ORDER_TYPE: dict[str, OrderType] = {
    "LIMIT": OrderType.LIMIT,
    "MARKET": OrderType.MARKET,
    "LIMIT_MAKER": OrderType.LIMIT_MAKER,
    "STOP_LOSS_LIMIT": OrderType.LIMIT,
    "TAKE_PROFIT_LIMIT": OrderType.LIMIT,
    "STOP_LOSS": OrderType.MARKET,
    "TAKE_PROFIT": OrderType.MARKET,
}


_TIME_IN_FORCE = frozenset(t.value for t in TimeInForce)


def order_status(venue_status: str) -> OrderStatus:
    """Our status for a venue status; one we do not know is UNKNOWN (settle it by query)."""
    return VENUE_STATUS.get(venue_status, OrderStatus.UNKNOWN)


def order_state(view: OrderResponse, request: OrderRequest | None = None) -> OrderState:
    """Our OrderState from any order answer; `request` fills in what an ACK leaves out."""
    if view.status is not None:
        status = order_status(view.status)
    else:
        status = OrderStatus.NEW  # an ACK: accepted, nothing more known yet
    if view.side is not None:
        side = Side(view.side)
    elif request is not None:
        side = request.side
    else:
        raise MalformedFrame(f"order answer for {view.symbol} without a side: {view}")
    if view.type is not None:
        order_type = VENUE_ORDER_TYPE.get(view.type, OrderType.LIMIT)
    elif request is not None:
        order_type = request.order_type
    else:
        raise MalformedFrame(f"order answer for {view.symbol} without a type: {view}")
    quantity = view.orig_qty
    if quantity is None:
        quantity = (request.quantity if request is not None else None) or ZERO
    if view.price is not None:
        price = view.price or None  # "0.00000000" on a market order
    else:
        price = request.price if request is not None else None
    if view.time_in_force in _TIME_IN_FORCE:
        time_in_force = TimeInForce(view.time_in_force)
    else:
        time_in_force = request.time_in_force if request is not None else None
    quote_quantity = view.orig_quote_order_qty or (request.quote_quantity if request is not None else None)
    # transactTime is the creation time in a new-order answer, but the cancel's time in a cancel answer
    created_ms = view.time or (view.transact_time if view.orig_client_order_id is None else None) or 0
    return OrderState(
        symbol=view.symbol,
        client_order_id=view.orig_client_order_id or view.client_order_id,
        venue_order_id=str(view.order_id),
        status=status,
        side=side,
        order_type=order_type,
        quantity=quantity,
        filled_qty=view.executed_qty or ZERO,
        price=price,
        quote_filled=view.cumulative_quote_qty or ZERO,
        venue_ms=view.update_time or view.transact_time or view.time or 0,
        time_in_force=time_in_force,
        quote_quantity=quote_quantity or None,
        created_ms=created_ms,
    )


def cancelled_orders(views: list[OrderResponse]) -> list[OrderState]:
    """A cancel-all answer as order states, order lists flattened into their members."""
    out: list[OrderState] = []
    for view in views:
        if view.order_reports is not None:
            out.extend(order_state(member) for member in view.order_reports)
        else:
            out.append(order_state(view))
    return out


def balances(view: AccountInfo) -> list[Balance]:
    return [Balance(asset=b.asset, free=b.free, locked=b.locked) for b in view.balances]


def account_trade(view: MyTrade) -> AccountTrade:
    return AccountTrade(
        symbol=view.symbol,
        trade_id=str(view.id),
        venue_order_id=str(view.order_id),
        client_order_id=None,  # myTrades does not carry it; match on venue_order_id
        side=Side.BUY if view.is_buyer else Side.SELL,
        price=view.price,
        qty=view.qty,
        fee=view.commission,
        fee_asset=view.commission_asset,
        is_maker=view.is_maker,
        venue_ms=view.time,
    )


# ---------------------------------------------------------------------------------------
# Conversions: user data events
# ---------------------------------------------------------------------------------------


def execution_events(venue: str, ev: ExecutionReport, ts: float = 0.0) -> list[Fill | OrderUpdate]:
    """An executionReport as [Fill, OrderUpdate] for a trade, else [OrderUpdate].

    The fill comes first so that whoever sees the order reach FILLED has
    already seen the fill that did it. On a cancel, `c` is the cancel request's
    own id and `C` the order's: the order is named by `C` when it is set.
    """
    client_order_id = ev.orig_client_order_id or ev.client_order_id
    side = Side(ev.side)
    events: list[Fill | OrderUpdate] = []
    if ev.execution_type == "TRADE" and ev.trade_id >= 0:
        events.append(
            Fill(
                venue=venue,
                symbol=ev.symbol,
                client_order_id=client_order_id,
                trade_id=str(ev.trade_id),
                side=side,
                price=ev.last_price,
                qty=ev.last_qty,
                fee=ev.commission,
                fee_asset=ev.commission_asset or "",
                is_maker=ev.is_maker,
                venue_order_id=str(ev.order_id),
                venue_ms=ev.transaction_ms or ev.event_ms,
                ts=ts,
            )
        )
    filled = ev.cumulative_qty
    reason = ev.reject_reason if ev.reject_reason != "NONE" else ""
    if ev.expiry_reason:
        reason = f"{reason}; {ev.expiry_reason}" if reason else ev.expiry_reason
    events.append(
        OrderUpdate(
            venue=venue,
            symbol=ev.symbol,
            client_order_id=client_order_id,
            status=order_status(ev.status),
            side=side,
            quantity=ev.quantity,
            filled_qty=filled,
            price=ev.price or None,
            avg_price=(ev.cumulative_quote_qty / filled) if filled else None,
            venue_order_id=str(ev.order_id),
            reason=reason,
            venue_ms=ev.transaction_ms or ev.event_ms,
            ts=ts,
        )
    )
    return events


def balance_events(venue: str, ev: AccountPosition) -> list[BalanceUpdate]:
    return [
        BalanceUpdate(venue=venue, asset=b.asset, free=b.free, locked=b.locked, venue_ms=ev.update_ms or ev.event_ms)
        for b in ev.balances
    ]


def user_events(venue: str, ev: UserEventView, ts: float = 0.0) -> list[Fill | OrderUpdate | BalanceUpdate | StreamNotice]:
    """Any user-data event as our messages (several per event at most)."""
    if type(ev) is ExecutionReport:
        return execution_events(venue, ev, ts)  # type: ignore[return-value]
    if type(ev) is AccountPosition:
        return balance_events(venue, ev)  # type: ignore[return-value]
    if type(ev) is BalanceDelta:
        return [StreamNotice(kind=BALANCE_DELTA, detail=f"{ev.asset} {ev.delta:+f}")]
    if type(ev) is EventStreamTerminated:
        return [StreamNotice(kind=STREAM_TERMINATED, detail="the venue ended the user data subscription")]
    return [StreamNotice(kind=SERVER_SHUTDOWN, detail="server shutdown announced")]


def event_kind(raw: Raw | bytes) -> str:
    """The `e` of an event outside the fast path ('' if it has none)."""
    try:
        return _EVENT_TYPE.decode(raw).e
    except msgspec.DecodeError:
        return ""


MALFORMED_FRAME = "malformed_frame"

_USER_EVENT_TYPES = frozenset(
    {"executionReport", "outboundAccountPosition", "balanceUpdate", "eventStreamTerminated", "serverShutdown"}
)


def decode_ws_api_frame(frame: bytes | str) -> WsApiFrame | LooseFrame:
    """A WebSocket API frame: typed when it is a known event or a response,
    loose when it is an event type we do not handle. Raises `MalformedFrame`."""
    try:
        return WS_API_FRAME.decode(frame)
    except msgspec.DecodeError:
        pass
    try:
        loose = LOOSE_FRAME.decode(frame)
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"unreadable WebSocket API frame ({exc}): {_excerpt(frame)}") from None
    kind = event_kind(loose.event) if present(loose.event) else ""
    if kind in _USER_EVENT_TYPES or (not kind and present(loose.event)):
        # A known event we failed to read could hide a fill: never let it pass quietly.
        raise MalformedFrame(f"malformed {kind or 'untyped'} event: {_excerpt(frame)}")
    return loose


def frame_user_events(
    venue: str, frame: WsApiFrame | LooseFrame, ts: float = 0.0
) -> list[Fill | OrderUpdate | BalanceUpdate | StreamNotice]:
    """The user-data messages a decoded WebSocket API frame carries (none for a response)."""
    if type(frame) is WsApiFrame:
        return user_events(venue, frame.event, ts) if frame.event is not None else []
    if present(frame.event):
        return [StreamNotice(kind=UNKNOWN_EVENT, detail=f"{event_kind(frame.event)} event (not handled)")]
    return []
