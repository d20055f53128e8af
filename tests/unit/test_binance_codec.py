"""Binance codec: REST answers and stream frames decode to the right values."""

from decimal import Decimal as D

import msgspec
import pytest

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import OrderStatus, OrderType, Side, TimeInForce
from venues.base import BookDiff, BookSnapshot, OrderRequest, PublicTrade, StreamNotice
from venues.binance import codec
from venues.orderbook import BookSync, LocalBook, MalformedLevel, SyncAction

EXCHANGE_INFO = b"""{
 "timezone": "UTC", "serverTime": 1700000000000,
 "rateLimits": [
  {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
  {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
  {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
  {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}],
 "exchangeFilters": [],
 "symbols": [
  {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
   "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
   "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
   "icebergAllowed": true, "ocoAllowed": true, "isSpotTradingAllowed": true, "isMarginTradingAllowed": false,
   "filters": [
    {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
    {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
    {"filterType": "ICEBERG_PARTS", "limit": 10},
    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "83.1", "stepSize": "0.00000000"},
    {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000},
    {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2"},
    {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": true,
     "maxNotional": "9000000.00000000", "applyMaxToMarket": false, "avgPriceMins": 5},
    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200}],
   "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
   "allowedSelfTradePreventionModes": ["EXPIRE_TAKER"]},
  {"symbol": "OLDCOIN", "status": "BREAK", "baseAsset": "OLD", "quoteAsset": "BTC",
   "baseAssetPrecision": 8, "quoteAssetPrecision": 6, "icebergAllowed": false, "isSpotTradingAllowed": true,
   "filters": [
    {"filterType": "PRICE_FILTER", "minPrice": "0", "maxPrice": "0", "tickSize": "0"},
    {"filterType": "LOT_SIZE", "minQty": "1.00000000", "maxQty": "1000.00000000", "stepSize": "1.00000000"},
    {"filterType": "MIN_NOTIONAL", "minNotional": "0.00010000", "applyToMarket": true, "avgPriceMins": 5}]}
 ]}"""


def test_exchange_info_gives_instruments_with_filters():
    info = codec.EXCHANGE_INFO.decode(EXCHANGE_INFO)
    assert [(r.rate_limit_type, r.seconds, r.limit) for r in info.rate_limits] == [
        ("REQUEST_WEIGHT", 60, 6000),
        ("ORDERS", 10, 100),
        ("ORDERS", 86400, 200000),
        ("RAW_REQUESTS", 300, 61000),
    ]
    btc, old = (codec.instrument("binance", s) for s in info.symbols)
    assert btc.venue == "binance" and btc.symbol == "BTCUSDT"
    assert (btc.base, btc.quote) == ("BTC", "USDT")
    assert btc.tick_size == D("0.01") and str(btc.tick_size) == "0.01"
    assert btc.step_size == D("0.00001")
    assert (btc.min_qty, btc.max_qty) == (D("0.00001"), D("9000"))
    assert (btc.min_price, btc.max_price) == (D("0.01"), D("1000000"))
    assert (btc.min_notional, btc.max_notional) == (D("5"), D("9000000"))
    assert btc.trading and btc.iceberg_allowed
    assert btc.round_qty(D("0.0007856509959")) == D("0.00078")
    # a disabled price filter falls back to the quote precision; MIN_NOTIONAL is used when NOTIONAL is absent
    assert old.tick_size == D("0.000001")
    assert old.min_notional == D("0.0001") and old.max_notional == 0
    assert old.min_price == 0 and old.max_price == 0
    assert not old.trading


def test_depth_snapshot():
    view = codec.DEPTH.decode(
        b'{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"],["4.1","0"]]}'
    )
    snap = codec.book_snapshot("BNBBTC", view)
    assert snap.symbol == "BNBBTC" and snap.last_update_id == 1027024
    assert list(snap.bids) == [(D("4"), D("431"))]
    assert list(snap.asks)[0] == (D("4.000002"), D("12"))


REQUEST = OrderRequest(
    symbol="BTCUSDT",
    client_order_id="td-x-1",
    side=Side.BUY,
    order_type=OrderType.LIMIT,
    quantity=D("0.5"),
    price=D("64000.1"),
    time_in_force=TimeInForce.GTC,
)


def test_order_ack_is_completed_from_the_request():
    view = codec.ORDER.decode(
        b'{"symbol":"BTCUSDT","orderId":28,"orderListId":-1,"clientOrderId":"td-x-1","transactTime":1507725176595}'
    )
    state = codec.order_state(view, REQUEST)
    assert state.status is OrderStatus.NEW
    assert state.venue_order_id == "28" and state.client_order_id == "td-x-1"
    assert state.side is Side.BUY and state.order_type is OrderType.LIMIT
    assert state.quantity == D("0.5") and state.price == D("64000.1")
    assert state.filled_qty == 0 and state.venue_ms == 1507725176595
    assert state.time_in_force is TimeInForce.GTC and state.created_ms == 1507725176595
    assert state.quote_quantity is None


def test_order_ack_without_request_is_refused_clearly():
    view = codec.ORDER.decode(b'{"symbol":"BTCUSDT","orderId":28,"clientOrderId":"a","transactTime":1}')
    with pytest.raises(codec.MalformedFrame, match="without a side"):
        codec.order_state(view)


ORDER_FULL = b"""{"symbol":"BTCUSDT","orderId":28,"orderListId":-1,"clientOrderId":"td-x-2","transactTime":1507725176595,
 "price":"0.00000000","origQty":"10.00000000","executedQty":"10.00000000","origQuoteOrderQty":"0.000000",
 "cummulativeQuoteQty":"10.00000000","status":"FILLED","timeInForce":"GTC","type":"MARKET","side":"SELL",
 "workingTime":1507725176595,"selfTradePreventionMode":"NONE",
 "fills":[{"price":"4000.00000000","qty":"1.00000000","commission":"4.00000000","commissionAsset":"USDT","tradeId":56},
          {"price":"3999.00000000","qty":"9.00000000","commission":"35.99","commissionAsset":"USDT","tradeId":57}]}"""


def test_order_full_answer():
    view = codec.ORDER.decode(ORDER_FULL)
    state = codec.order_state(view)
    assert state.status is OrderStatus.FILLED
    assert state.order_type is OrderType.MARKET and state.side is Side.SELL
    assert state.price is None  # "0.00000000" on a market order
    assert state.filled_qty == D(10) and state.quote_filled == D(10)
    assert state.quote_quantity is None  # "0.000000": ordered by base quantity
    assert state.time_in_force is TimeInForce.GTC
    assert [(f.trade_id, f.price, f.qty) for f in view.fills] == [(56, D(4000), D(1)), (57, D(3999), D(9))]


def test_query_and_open_orders_and_foreign_types():
    views = codec.ORDERS.decode(
        b"""[{"symbol":"LTCBTC","orderId":1,"orderListId":-1,"clientOrderId":"myOrder1","price":"0.1",
        "origQty":"1.0","executedQty":"0.25","cummulativeQuoteQty":"0.025","status":"PARTIALLY_FILLED",
        "timeInForce":"GTC","type":"LIMIT","side":"BUY","stopPrice":"0.0","icebergQty":"0.0","time":1499827319559,
        "updateTime":1499827319600,"isWorking":true,"workingTime":1499827319559,"origQuoteOrderQty":"0.000000",
        "selfTradePreventionMode":"NONE"},
        {"symbol":"LTCBTC","orderId":2,"clientOrderId":"manual","price":"0.2","origQty":"1.0","executedQty":"0",
        "cummulativeQuoteQty":"0","status":"NEW","type":"STOP_LOSS_LIMIT","side":"SELL","time":5},
        {"symbol":"LTCBTC","orderId":3,"clientOrderId":"odd","price":"0.2","origQty":"1.0","executedQty":"0",
        "cummulativeQuoteQty":"0","status":"EXPIRED_IN_MATCH","type":"LIMIT","side":"SELL","time":5},
        {"symbol":"LTCBTC","orderId":4,"clientOrderId":"odd","price":"0.2","origQty":"1.0","executedQty":"0",
        "cummulativeQuoteQty":"0","status":"SOMETHING_NEW","type":"LIMIT","side":"SELL","time":5}]"""
    )
    states = [codec.order_state(v) for v in views]
    first = states[0]
    assert first.status is OrderStatus.PARTIALLY_FILLED
    assert first.filled_qty == D("0.25") and first.quote_filled == D("0.025")
    assert first.venue_ms == 1499827319600 and first.created_ms == 1499827319559
    assert states[1].time_in_force is None
    assert states[1].order_type is OrderType.LIMIT  # a stop-limit shows as what it becomes
    assert states[2].status is OrderStatus.EXPIRED
    assert states[3].status is OrderStatus.UNKNOWN  # to be settled by query, not crashed on


def test_cancel_answer_names_the_original_order():
    view = codec.ORDER.decode(
        b"""{"symbol":"LTCBTC","origClientOrderId":"td-x-3","orderId":4,"orderListId":-1,
        "clientOrderId":"cancelMyOrder1","transactTime":1684804350068,"price":"2.00000000","origQty":"1.00000000",
        "executedQty":"0.00000000","cummulativeQuoteQty":"0.00000000","status":"CANCELED","timeInForce":"GTC",
        "type":"LIMIT","side":"BUY","selfTradePreventionMode":"NONE"}"""
    )
    state = codec.order_state(view)
    assert state.client_order_id == "td-x-3"
    assert state.status is OrderStatus.CANCELED
    assert state.created_ms == 0  # transactTime here is the cancel's time, not the order's
    assert state.venue_ms == 1684804350068


def test_cancel_all_flattens_order_lists():
    views = codec.ORDERS.decode(
        b"""[{"symbol":"BTCUSDT","origClientOrderId":"a","orderId":11,"clientOrderId":"c1","price":"1",
        "origQty":"1","executedQty":"0","cummulativeQuoteQty":"0","status":"CANCELED","type":"LIMIT","side":"BUY"},
        {"orderListId":1929,"contingencyType":"OCO","listStatusType":"ALL_DONE","listOrderStatus":"ALL_DONE",
         "listClientOrderId":"2inzWQdDvZLHbbAmAozX2N","transactionTime":1585230948299,"symbol":"BTCUSDT",
         "orders":[{"symbol":"BTCUSDT","orderId":20,"clientOrderId":"CwOOIPHSmYywx6jZX77TdL"}],
         "orderReports":[
          {"symbol":"BTCUSDT","origClientOrderId":"b","orderId":20,"orderListId":1929,"clientOrderId":"c2",
           "price":"9","origQty":"1","executedQty":"0","cummulativeQuoteQty":"0","status":"CANCELED",
           "type":"STOP_LOSS_LIMIT","side":"SELL"},
          {"symbol":"BTCUSDT","origClientOrderId":"c","orderId":21,"orderListId":1929,"clientOrderId":"c3",
           "price":"11","origQty":"1","executedQty":"0","cummulativeQuoteQty":"0","status":"CANCELED",
           "type":"LIMIT_MAKER","side":"SELL"}]}]"""
    )
    states = codec.cancelled_orders(views)
    assert [s.client_order_id for s in states] == ["a", "b", "c"]
    assert all(s.status is OrderStatus.CANCELED for s in states)


def test_account_and_my_trades():
    account = codec.ACCOUNT.decode(
        b"""{"makerCommission":15,"takerCommission":15,"buyerCommission":0,"sellerCommission":0,
        "commissionRates":{"maker":"0.00150000","taker":"0.00150000","buyer":"0","seller":"0"},
        "canTrade":true,"canWithdraw":true,"canDeposit":true,"brokered":false,"requireSelfTradePrevention":false,
        "preventSor":false,"updateTime":123456789,"accountType":"SPOT",
        "balances":[{"asset":"BTC","free":"4723846.89208129","locked":"0.00000000"},
                    {"asset":"LTC","free":"4763368.68006011","locked":"1.5"}],
        "permissions":["SPOT"],"uid":354937868}"""
    )
    bals = codec.balances(account)
    assert [(b.asset, b.free, b.locked) for b in bals] == [
        ("BTC", D("4723846.89208129"), D(0)),
        ("LTC", D("4763368.68006011"), D("1.5")),
    ]
    trades = codec.MY_TRADES.decode(
        b"""[{"symbol":"BNBBTC","id":28457,"orderId":100234,"orderListId":-1,"price":"4.00000100",
        "qty":"12.00000000","quoteQty":"48.000012","commission":"10.10000000","commissionAsset":"BNB",
        "time":1499865549590,"isBuyer":true,"isMaker":false,"isBestMatch":true}]"""
    )
    t = codec.account_trade(trades[0])
    assert (t.trade_id, t.venue_order_id, t.side, t.is_maker) == ("28457", "100234", Side.BUY, False)
    assert (t.price, t.qty, t.fee, t.fee_asset) == (D("4.000001"), D(12), D("10.1"), "BNB")
    assert t.client_order_id is None and t.venue_ms == 1499865549590


def test_time_and_error_bodies():
    assert codec.SERVER_TIME.decode(b'{"serverTime":1499827319559}').server_time == 1499827319559
    err = codec.decode_error(b'{"code":-1121,"msg":"Invalid symbol."}')
    assert (err.code, err.msg) == (-1121, "Invalid symbol.")
    assert codec.decode_error(b"<html>403 Forbidden</html>") is None
    assert codec.decode_error(b"") is None


# --- market stream frames ----------------------------------------------------------------


def test_depth_update_frame():
    ev = codec.decode_market_frame(
        b'{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC",'
        b'"U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"],["0.0027","0"]]}}'
    )
    assert ev == BookDiff(
        symbol="BNBBTC",
        first_id=157,
        last_id=160,
        bids=[(D("0.0024"), D(10))],
        asks=[(D("0.0026"), D(100)), (D("0.0027"), D(0))],
        venue_ms=1672515782136,
    )


def test_depth_update_frame_with_text_levels_keeps_the_venue_text():
    ev = codec.decode_market_frame(
        b'{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC",'
        b'"U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"],["0.0027","0.00000000"]]}}',
        text_levels=True,
    )
    assert ev == BookDiff(
        symbol="BNBBTC",
        first_id=157,
        last_id=160,
        bids=[("0.0024", "10")],
        asks=[("0.0026", "100"), ("0.0027", "0.00000000")],
        venue_ms=1672515782136,
    )


def test_text_and_decimal_depth_decoding_build_the_same_book():
    frames = [
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":11,"u":12,'
        b'"b":[["60000.01000000","0.00541000"],["59999.99000000","1.20000000"]],'
        b'"a":[["60000.02000000","3.00000000"],["60000.05000000","0.00000001"]]}}',
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":2,"s":"BTCUSDT","U":13,"u":15,'
        b'"b":[["60000.01000000","0.00000000"],["59999.98000000","2.00000000"]],'
        b'"a":[["60000.02000000","0.50000000"],["60000.03000000","0.00000000"]]}}',
    ]
    books = {}
    for text_levels in (False, True):
        sync = BookSync(LocalBook("BTCUSDT", D("0.01")))
        sync.on_snapshot(BookSnapshot(symbol="BTCUSDT", last_update_id=10, bids=[], asks=[(D("60000.03"), D(1))]))
        for frame in frames:
            assert sync.on_diff(codec.decode_market_frame(frame, text_levels=text_levels)) is SyncAction.APPLIED
        books[text_levels] = [[(str(p), str(q)) for p, q in side] for side in (sync.book.bids(), sync.book.asks())]
    assert books[True] == books[False] == [
        [("59999.99000000", "1.20000000"), ("59999.98000000", "2.00000000")],
        [("60000.02000000", "0.50000000"), ("60000.05000000", str(D("0.00000001")))],
    ]


@pytest.mark.parametrize("maker, taker", [(b"true", Side.SELL), (b"false", Side.BUY)])
def test_trade_frame_taker_side(maker, taker):
    frame = (
        b'{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,'
        b'"p":"0.001","q":"100","T":1672515782130,"m":' + maker + b',"M":true}}'
    )
    ev = codec.decode_market_frame(frame)
    assert ev == PublicTrade(
        symbol="BNBBTC", trade_id=12345, price=D("0.001"), qty=D(100), taker_side=taker, venue_ms=1672515782130
    )
    assert codec.decode_market_frame(frame, text_levels=True) == ev  # trades are Decimal on both paths


@pytest.mark.parametrize("text_levels", [False, True])
def test_server_shutdown_frame_is_a_notice(text_levels):
    ev = codec.decode_market_frame(
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}', text_levels=text_levels
    )
    assert isinstance(ev, StreamNotice) and ev.kind == codec.SERVER_SHUTDOWN


@pytest.mark.parametrize("text_levels", [False, True])
def test_other_frames_are_reported_not_crashed_on(text_levels):
    def decode(frame: bytes):
        return codec.decode_market_frame(frame, text_levels=text_levels)

    assert decode(b'{"result":null,"id":1}') is None
    notice = decode(b'{"code":2,"msg":"Invalid request: unknown variant"}')
    assert notice.kind == codec.VENUE_MESSAGE and "unknown variant" in notice.detail
    notice = decode(b'{"stream":"x@aggTrade","data":{"e":"aggTrade","E":5,"a":1}}')
    assert notice.kind == codec.UNKNOWN_EVENT and "aggTrade" in notice.detail
    notice = decode(
        b'{"stream":"x@bookTicker","data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000",'
        b'"a":"25.36520000","A":"40.66000000"}}'
    )
    assert notice.kind == codec.UNKNOWN_EVENT


@pytest.mark.parametrize("text_levels", [False, True])
@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1, 2]",
        b'{"stream":"x"}',
        b'{"stream":"x@trade","data":{"e":"trade","E":1}}',  # a trade missing its fields
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1"]],"a":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1","2","3"]],"a":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"b":[],"a":[]}}',
        b'{"stream":"x@depth","data":[1]}',
    ],
)
def test_malformed_market_frames_raise_a_clear_error(frame, text_levels):
    with pytest.raises(codec.MalformedFrame):
        codec.decode_market_frame(frame, text_levels=text_levels)


def test_text_levels_must_be_json_strings_as_binance_sends_them():
    frame = b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[[1.5,"1"]],"a":[]}}'
    assert codec.decode_market_frame(frame).bids == [(D("1.5"), D(1))]
    with pytest.raises(codec.MalformedFrame):
        codec.decode_market_frame(frame, text_levels=True)


def test_a_level_that_is_not_a_number_is_refused_by_the_decoder_or_by_the_book():
    frame = b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["abc","1"]],"a":[]}}'
    with pytest.raises(codec.MalformedFrame):
        codec.decode_market_frame(frame)
    diff = codec.decode_market_frame(frame, text_levels=True)  # text is checked when applied
    sync = BookSync(LocalBook("X", D("0.01")))
    sync.on_snapshot(BookSnapshot(symbol="X", last_update_id=0, bids=[], asks=[]))
    with pytest.raises(MalformedLevel, match="'abc' is not a decimal number"):
        sync.on_diff(diff)
    assert sync.needs_snapshot


def test_book_ticker_decoder():
    frame = codec.BOOK_TICKER_FRAME.decode(
        b'{"stream":"bnbusdt@bookTicker","data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000",'
        b'"B":"31.21000000","a":"25.36520000","A":"40.66000000"}}'
    )
    assert frame.data.bid == D("25.3519") and frame.data.ask_qty == D("40.66")


# --- user data (WebSocket API) -------------------------------------------------------------

def _execution_report(**overrides) -> bytes:
    fields = {
        "e": "executionReport", "E": 1499405658658, "s": "ETHBTC", "c": "td-x-7", "S": "BUY", "o": "LIMIT",
        "f": "GTC", "q": "1.00000000", "p": "0.10264410", "P": "0.00000000", "F": "0.00000000", "g": -1,
        "C": "", "x": "NEW", "X": "NEW", "r": "NONE", "i": 4293153, "l": "0.00000000", "z": "0.00000000",
        "L": "0.00000000", "n": "0", "N": None, "T": 1499405658657, "t": -1, "v": 3, "I": 8641984,
        "w": True, "m": False, "M": False, "O": 1499405658657, "Z": "0.00000000", "Y": "0.00000000",
        "Q": "0.00000000", "W": 1499405658657, "V": "NONE",
    }  # fmt: skip
    fields.update(overrides)
    return msgspec.json.encode({"subscriptionId": 0, "event": fields})


def _user(frame: bytes):
    return codec.frame_user_events("binance", codec.decode_ws_api_frame(frame), ts=12.5)


def test_execution_report_new():
    (update,) = _user(_execution_report())
    assert isinstance(update, OrderUpdate)
    assert update.venue == "binance" and update.client_order_id == "td-x-7"
    assert update.status is OrderStatus.NEW and update.side is Side.BUY
    assert update.quantity == D(1) and update.price == D("0.1026441")
    assert update.filled_qty == 0 and update.avg_price is None
    assert update.venue_order_id == "4293153" and update.reason == "" and update.ts == 12.5


def test_execution_report_trade_gives_fill_then_update():
    fill, update = _user(
        _execution_report(
            x="TRADE", X="PARTIALLY_FILLED", l="0.4", z="0.6", L="0.1026", n="0.0004", N="ETH",
            t=77, m=True, Z="0.06157", T=1499405658700,
        )  # fmt: skip
    )
    assert isinstance(fill, Fill) and isinstance(update, OrderUpdate)
    assert (fill.trade_id, fill.client_order_id, fill.venue_order_id) == ("77", "td-x-7", "4293153")
    assert (fill.price, fill.qty, fill.fee, fill.fee_asset) == (D("0.1026"), D("0.4"), D("0.0004"), "ETH")
    assert fill.is_maker and fill.side is Side.BUY and fill.venue_ms == 1499405658700
    assert update.status is OrderStatus.PARTIALLY_FILLED
    assert update.filled_qty == D("0.6") and update.avg_price == D("0.06157") / D("0.6")


def test_execution_report_cancel_names_the_original_order():
    (update,) = _user(_execution_report(x="CANCELED", X="CANCELED", c="cancel-req-1", C="td-x-7"))
    assert update.client_order_id == "td-x-7" and update.status is OrderStatus.CANCELED


def test_execution_report_rejected_and_expired_reasons():
    (rejected,) = _user(_execution_report(x="REJECTED", X="REJECTED", r="INSUFFICIENT_BALANCES"))
    assert rejected.status is OrderStatus.REJECTED and rejected.reason == "INSUFFICIENT_BALANCES"
    (expired,) = _user(
        _execution_report(x="EXPIRED", X="EXPIRED", f="IOC", z="0.5", Z="0.05", eR="UNFILLED_IOC_QUANTITY_EXPIRED")
    )
    assert expired.status is OrderStatus.EXPIRED and expired.filled_qty == D("0.5")
    assert expired.reason == "UNFILLED_IOC_QUANTITY_EXPIRED"
    (stp,) = _user(_execution_report(x="TRADE_PREVENTION", X="EXPIRED_IN_MATCH"))
    assert stp.status is OrderStatus.EXPIRED


def test_account_position_gives_one_balance_update_per_asset():
    frame = (
        b'{"subscriptionId":0,"event":{"e":"outboundAccountPosition","E":1564034571105,"u":1564034571073,'
        b'"B":[{"a":"ETH","f":"10000.000000","l":"0.000000"},{"a":"BTC","f":"1.5","l":"0.25"}]}}'
    )
    updates = _user(frame)
    assert updates == [
        BalanceUpdate(venue="binance", asset="ETH", free=D(10000), locked=D(0), venue_ms=1564034571073),
        BalanceUpdate(venue="binance", asset="BTC", free=D("1.5"), locked=D("0.25"), venue_ms=1564034571073),
    ]


def test_balance_delta_and_termination_are_notices():
    (delta,) = _user(b'{"subscriptionId":0,"event":{"e":"balanceUpdate","E":1,"a":"BTC","d":"100.00000000","T":2}}')
    assert delta.kind == codec.BALANCE_DELTA and "BTC +100" in delta.detail
    (ended,) = _user(b'{"subscriptionId":0,"event":{"e":"eventStreamTerminated","E":1728973001334}}')
    assert ended.kind == codec.STREAM_TERMINATED
    (other,) = _user(b'{"subscriptionId":0,"event":{"e":"listStatus","E":1,"s":"X"}}')
    assert other.kind == codec.UNKNOWN_EVENT and "listStatus" in other.detail


def test_ws_api_responses_carry_no_events():
    ok = codec.decode_ws_api_frame(b'{"id":"subscribe-1","status":200,"result":{"subscriptionId":3},"rateLimits":[]}')
    assert ok.status == 200 and codec.SUBSCRIPTION_RESULT.decode(ok.result).subscription_id == 3
    assert codec.frame_user_events("binance", ok) == []
    err = codec.decode_ws_api_frame(
        b'{"id":"subscribe-2","status":400,"error":{"code":-1022,"msg":"Signature for this request is not valid."}}'
    )
    assert err.error.code == -1022 and not codec.present(err.result)


@pytest.mark.parametrize(
    "frame",
    [
        b"{",
        b'{"subscriptionId":0,"event":{"e":"executionReport","E":1,"s":"X"}}',  # a report missing fields: maybe a fill
        b'{"subscriptionId":0,"event":{"x":1}}',
        b'{"subscriptionId":0,"event":{"e":"outboundAccountPosition","E":1,"B":[{"a":"X"}]}}',
    ],
)
def test_malformed_user_frames_raise(frame):
    with pytest.raises(codec.MalformedFrame):
        codec.decode_ws_api_frame(frame)
