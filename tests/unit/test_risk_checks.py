"""Pre-trade checks of the risk sentinel: each check passing and failing, and the exposure counting."""

import itertools
from decimal import Decimal as D

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import risk_checks as rc
from actors.risk_checks import RiskSentinel
from actors.risk_limits import RiskLimits, set_limit
from daemon.messages import (
    Approval,
    CancelAllOrders,
    CancelOrder,
    Denial,
    Fill,
    OrderIntent,
    OrderUpdate,
    Quote,
    VenueStatus,
)
from daemon.model import Instrument, OrderStatus, OrderType, Side, TradingState

BTC = Instrument(
    venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.001"),
    min_qty=D("0.001"), max_qty=D("100"), min_notional=D("0.5"),
)  # fmt: skip
ETH = Instrument(venue="sim", symbol="ETHUSDT", base="ETH", quote="USDT", tick_size=D("0.01"), step_size=D("0.01"))
BNB = Instrument(venue="other", symbol="BNBUSDT", base="BNB", quote="USDT", tick_size=D("0.01"), step_size=D("0.01"))
HALTED_PAIR = Instrument(venue="sim", symbol="OLDUSDT", base="OLD", quote="USDT", tick_size=D("0.01"), step_size=D("1"), trading=False)

_ids = itertools.count(1)

# Limits that do not interfere unless a test asks for them.
OPEN = RiskLimits(  # every check that the test at hand is not about, off
    price_collar_bps=None,
    prevent_self_trade=False,
    max_orders_per_second=None,
    max_orders_per_minute=None,
    max_open_orders_per_instrument=None,
    max_open_orders=None,
    stale_quote_seconds=1e6,
)


def quote(symbol="BTCUSDT", venue="sim", bid="100", ask="100.2", ts=0.0) -> Quote:
    return Quote(venue=venue, symbol=symbol, bid=D(bid), bid_qty=D(5), ask=D(ask), ask_qty=D(5), ts=ts)


def intent(side=Side.BUY, qty="1", price="100", *, symbol="BTCUSDT", venue="sim", order_type=OrderType.LIMIT, **kw) -> OrderIntent:
    n = next(_ids)
    return OrderIntent(
        client_order_id=f"td-x-{n}", exec_id="x", seq=n, venue=venue, symbol=symbol, side=side,
        order_type=order_type, quantity=D(qty), price=None if price is None else D(price), **kw,
    )  # fmt: skip


def sentinel(limits: RiskLimits = OPEN, **changes) -> RiskSentinel:
    for key, value in changes.items():
        limits = set_limit(limits, key.replace("__", "."), str(value))
    s = RiskSentinel(limits, [BTC, ETH, BNB, HALTED_PAIR])
    s.on_quote(quote())
    s.on_quote(quote("ETHUSDT", bid="10", ask="10.02"))
    s.on_quote(quote("BNBUSDT", venue="other", bid="50", ask="50.1"))
    return s


def fill(order: OrderIntent, qty, price="100", trade_id=None, fee="0", fee_asset="USDT") -> Fill:
    return Fill(
        venue=order.venue, symbol=order.symbol, client_order_id=order.client_order_id,
        trade_id=trade_id or f"t{next(_ids)}", side=order.side, price=D(price), qty=D(qty),
        fee=D(fee), fee_asset=fee_asset, is_maker=True,
    )  # fmt: skip


def update(order: OrderIntent, status: OrderStatus, filled="0", reason="") -> OrderUpdate:
    return OrderUpdate(
        venue=order.venue, symbol=order.symbol, client_order_id=order.client_order_id, status=status,
        side=order.side, quantity=order.quantity, filled_qty=D(filled), price=order.price, reason=reason,
    )  # fmt: skip


def approved(result) -> bool:
    return isinstance(result, Approval)


def denied(result, code: str) -> bool:
    return isinstance(result, Denial) and result.code == code


def give_position(s: RiskSentinel, qty: str, symbol="BTCUSDT", venue="sim") -> None:
    s.set_position(venue, symbol, D(qty))


# --- the basics ---------------------------------------------------------------------------


def test_an_order_within_every_limit_is_approved_and_counted_as_working():
    s = sentinel(RiskLimits())
    order = intent()
    result = s.check(order, now=1.0)
    assert result == Approval(intent=order)
    assert s.book.open_order_count(("sim", "BTCUSDT")) == 1
    assert s.book.pending(("sim", "BTCUSDT"), Side.BUY) == D(1)


def test_unknown_and_not_trading_instruments_are_denied():
    s = sentinel()
    assert denied(s.check(intent(symbol="DOGEUSDT"), 1.0), rc.UNKNOWN_INSTRUMENT)
    assert denied(s.check(intent(symbol="OLDUSDT"), 1.0), rc.INSTRUMENT_NOT_TRADING)
    assert s.book.open_order_count() == 0


def test_malformed_intents_are_denied_with_their_own_codes():
    s = sentinel()
    assert denied(s.check(intent(price=None), 1.0), rc.INVALID_ORDER)
    assert denied(s.check(intent(order_type=OrderType.MARKET, price=None, quote_quantity=D(100)), 1.0), rc.UNSUPPORTED_ORDER)
    assert denied(s.check(intent(qty="NaN"), 1.0), rc.INVALID_ORDER)
    assert denied(s.check(intent(price="Infinity"), 1.0), rc.INVALID_ORDER)
    assert denied(s.check(intent(qty="0"), 1.0), rc.FILTER_LOT_SIZE)
    assert denied(s.check(intent(qty="-1"), 1.0), rc.FILTER_LOT_SIZE)
    assert s.book.open_order_count() == 0


def test_a_client_order_id_that_is_already_working_is_denied():
    s = sentinel()
    order = intent()
    assert approved(s.check(order, 1.0))
    again = s.check(order, 1.1)
    assert denied(again, rc.DUPLICATE_ORDER_ID)
    assert s.book.open_order_count() == 1


@pytest.mark.parametrize(
    ("qty", "price", "code"),
    [
        ("0.0015", "100", rc.FILTER_LOT_SIZE),  # not a multiple of the step
        ("200", "100", rc.FILTER_LOT_SIZE),  # above max_qty
        ("1", "100.005", rc.FILTER_PRICE_FILTER),  # not a multiple of the tick
        ("0.004", "100", rc.FILTER_NOTIONAL),  # 0.4 USDT below min notional 0.5
    ],
)
def test_venue_filters_are_applied(qty, price, code):
    s = sentinel()
    result = s.check(intent(qty=qty, price=price), 1.0)
    assert denied(result, code)
    assert result.reason.startswith("sim:BTCUSDT")
    assert approved(s.check(intent(qty="0.1", price="100"), 1.0))


def test_market_orders_meet_the_min_notional_at_the_touch():
    s = sentinel()
    s.on_quote(quote(bid="99", ask="101"))
    # 0.005 at the ask 101 = 0.505 passes; selling 0.005 at the bid 99 = 0.495 does not.
    assert approved(s.check(intent(qty="0.005", price=None, order_type=OrderType.MARKET), 1.0))
    assert denied(s.check(intent(Side.SELL, qty="0.005", price=None, order_type=OrderType.MARKET), 1.0), rc.FILTER_NOTIONAL)


# --- per-order limits ---------------------------------------------------------------------


def test_max_order_qty_default_and_per_instrument():
    s = sentinel(max_order_qty="2", **{"instruments__sim:ETHUSDT__max_order_qty": "50"})
    assert approved(s.check(intent(qty="2"), 1.0))
    result = s.check(intent(qty="2.001"), 1.0)
    assert denied(result, rc.MAX_ORDER_QTY)
    assert "max_order_qty" in result.reason
    assert approved(s.check(intent(qty="50", price="10", symbol="ETHUSDT"), 1.0))
    assert denied(s.check(intent(qty="50.01", price="10", symbol="ETHUSDT"), 1.0), rc.MAX_ORDER_QTY)


def test_max_order_notional_for_limit_orders_uses_the_limit_price():
    s = sentinel(max_order_notional="1000")
    assert approved(s.check(intent(qty="10", price="100"), 1.0))
    assert denied(s.check(intent(qty="10", price="100.01"), 1.0), rc.MAX_ORDER_NOTIONAL)


def test_max_order_notional_for_market_orders_uses_the_touch():
    s = sentinel(max_order_notional="1001")
    s.on_quote(quote(bid="99.9", ask="100.2"))
    # 10 at the mid (100.05) = 1000.5 would pass; at the ask it is 1002.
    assert denied(s.check(intent(qty="10", price=None, order_type=OrderType.MARKET), 1.0), rc.MAX_ORDER_NOTIONAL)
    assert approved(s.check(intent(Side.SELL, qty="10", price=None, order_type=OrderType.MARKET), 1.0))


def test_price_collar_around_the_mid_on_both_sides():
    s = sentinel(price_collar_bps="100")  # 1 % around the mid 100.1
    assert approved(s.check(intent(price="99.11"), 1.0))
    assert approved(s.check(intent(Side.SELL, price="101.09"), 1.0))
    assert denied(s.check(intent(price="99.09"), 1.0), rc.PRICE_COLLAR)
    result = s.check(intent(Side.SELL, price="101.11"), 1.0)
    assert denied(result, rc.PRICE_COLLAR)
    assert "bps" in result.reason
    # a market order has no price to collar
    assert approved(s.check(intent(price=None, order_type=OrderType.MARKET), 1.0))


# --- market data and venues ---------------------------------------------------------------


def test_no_quote_and_unusable_quotes_are_denied():
    s = RiskSentinel(OPEN, [BTC])
    assert denied(s.check(intent(), 1.0), rc.NO_MARKET_DATA)
    s.on_quote(quote(bid="101", ask="100"))  # crossed
    assert denied(s.check(intent(), 1.0), rc.NO_MARKET_DATA)
    s.on_quote(quote(bid="0", ask="100"))  # one-sided
    assert denied(s.check(intent(), 1.0), rc.NO_MARKET_DATA)
    s.on_quote(quote(bid="99.9", ask="100"))
    assert approved(s.check(intent(), 1.0))


def test_stale_quote_is_denied_after_the_threshold():
    s = sentinel(stale_quote_seconds="10")
    s.on_quote(quote(ts=100.0))
    assert approved(s.check(intent(), now=110.0))
    result = s.check(intent(), now=110.5)
    assert denied(result, rc.STALE_MARKET_DATA)
    assert "10.5 s old" in result.reason
    s.on_quote(quote(ts=110.4))
    assert approved(s.check(intent(), now=110.5))


def test_a_down_or_banned_venue_is_denied_while_the_status_lasts():
    s = sentinel(**{"venue_down__enabled": "false"})
    for state in ("down", "banned"):
        s.on_venue_status(VenueStatus(venue="sim", state=state))
        assert denied(s.check(intent(), 1.0), rc.VENUE_DOWN)
        assert approved(s.check(intent(symbol="BNBUSDT", venue="other", price="50"), 1.0))
    s.on_venue_status(VenueStatus(venue="sim", state="rate_limited"))
    assert approved(s.check(intent(), 1.0))


# --- position and exposure ----------------------------------------------------------------


def test_max_position_counts_the_position_and_working_orders_on_the_same_side():
    s = sentinel(max_position="5")
    give_position(s, "2")
    assert approved(s.check(intent(qty="2"), 1.0))  # 2 + 2 working
    assert denied(s.check(intent(qty="1.01"), 1.0), rc.MAX_POSITION)  # 2 + 2 + 1.01
    assert approved(s.check(intent(qty="1"), 1.0))  # exactly 5
    # working sells do not offset working buys: both may fill
    assert approved(s.check(intent(Side.SELL, qty="7"), 1.0))  # 2 - 7 = -5
    assert denied(s.check(intent(Side.SELL, qty="0.01"), 1.0), rc.MAX_POSITION)


def test_max_position_for_a_short():
    s = sentinel(max_position="5")
    give_position(s, "-4")
    assert approved(s.check(intent(Side.SELL, qty="1"), 1.0))
    assert denied(s.check(intent(Side.SELL, qty="0.01"), 1.0), rc.MAX_POSITION)
    assert approved(s.check(intent(Side.BUY, qty="9"), 1.0))  # -4 + 9 = 5


def test_a_per_instrument_position_limit_overrides_the_default():
    s = sentinel(max_position="100", **{"instruments__sim:BTCUSDT__max_position": "1"})
    assert denied(s.check(intent(qty="1.5"), 1.0), rc.MAX_POSITION)
    assert approved(s.check(intent(qty="1.5", price="10", symbol="ETHUSDT"), 1.0))


def test_orders_that_reduce_pass_even_above_a_lowered_position_limit():
    s = sentinel(max_position="10")
    give_position(s, "8")
    s.replace_limits(set_limit(s.limits, "max_position", "5"))
    assert denied(s.check(intent(qty="0.01"), 1.0), rc.MAX_POSITION)
    assert approved(s.check(intent(Side.SELL, qty="1"), 1.0))  # 8 -> 7: still above, but better


def test_gross_exposure_sums_worst_case_positions_across_instruments():
    s = sentinel(max_gross_exposure="1000")  # mids: BTC 100.1, ETH 10.01
    give_position(s, "5")  # 500.5
    give_position(s, "-20", symbol="ETHUSDT")  # 200.2
    assert approved(s.check(intent(Side.SELL, qty="20", price="10.01", symbol="ETHUSDT"), 1.0))  # ETH -40: 400.4
    assert approved(s.check(intent(qty="0.01"), 1.0))  # BTC 5.01: 501.501 + 400.4 = 901.901
    assert denied(s.check(intent(qty="1"), 1.0), rc.MAX_GROSS_EXPOSURE)  # BTC 6.01: 601.601 + 400.4
    # a sell down to flat leaves the BTC worst case (5.01 if the buy fills) unchanged, so it passes
    assert approved(s.check(intent(Side.SELL, qty="5"), 1.0))
    # selling into a short of 11 BTC would not
    assert denied(s.check(intent(Side.SELL, qty="11"), 1.0), rc.MAX_GROSS_EXPOSURE)


def test_gross_exposure_after_a_fill_keeps_the_same_total():
    s = sentinel(max_gross_exposure="1001")
    s.on_quote(quote(bid="100", ask="100"))
    order = intent(qty="10", price="100")
    assert approved(s.check(order, 1.0))
    assert denied(s.check(intent(qty="0.02", price="100"), 1.0), rc.MAX_GROSS_EXPOSURE)
    s.on_fill(fill(order, "4"))
    # 4 in the position + 6 still working = the same 10
    assert s.book.position(("sim", "BTCUSDT")) == D(4)
    assert s.book.pending(("sim", "BTCUSDT"), Side.BUY) == D(6)
    assert denied(s.check(intent(qty="0.02", price="100"), 1.0), rc.MAX_GROSS_EXPOSURE)
    assert approved(s.check(intent(qty="0.01", price="100"), 1.0))


def test_an_instrument_without_any_price_is_reported_unpriced():
    s = RiskSentinel(OPEN, [BTC, ETH])
    s.on_quote(quote())
    give_position(s, "3", symbol="ETHUSDT")
    snap = s.snapshot(1.0)
    assert snap.unpriced == ["sim:ETHUSDT"]
    assert snap.gross_exposure == D(0)


# --- open orders and rates ----------------------------------------------------------------


def test_max_open_orders_per_instrument_and_in_total():
    s = sentinel(max_open_orders_per_instrument="2", max_open_orders="3")
    a, b = intent(), intent()
    assert approved(s.check(a, 1.0)) and approved(s.check(b, 1.0))
    assert denied(s.check(intent(), 1.0), rc.MAX_OPEN_ORDERS)
    assert approved(s.check(intent(symbol="ETHUSDT", price="10"), 1.0))
    result = s.check(intent(symbol="BNBUSDT", venue="other", price="50"), 1.0)
    assert denied(result, rc.MAX_OPEN_ORDERS) and "max_open_orders)" in result.reason
    # a final status frees the slot
    s.on_order_update(update(a, OrderStatus.CANCELED), 2.0)
    assert approved(s.check(intent(), 2.0))


def test_order_rate_per_second_is_a_sliding_window():
    s = sentinel(max_orders_per_second="3")
    for t in (10.0, 10.1, 10.2):
        assert approved(s.check(intent(), t))
    result = s.check(intent(), 10.3)
    assert denied(result, rc.ORDER_RATE) and "max_orders_per_second" in result.reason
    assert denied(s.check(intent(), 10.99), rc.ORDER_RATE)  # 10.0 is inside (9.99, 10.99]
    assert approved(s.check(intent(), 11.0))  # 10.0 is not inside (10.0, 11.0]
    assert denied(s.check(intent(), 11.05), rc.ORDER_RATE)  # 10.1, 10.2, 11.0
    assert approved(s.check(intent(), 11.15))  # 10.1 left


def test_order_rate_per_minute_and_denials_do_not_count():
    s = sentinel(max_orders_per_minute="5", max_order_qty="1")
    for i in range(5):
        assert denied(s.check(intent(qty="2"), 100.0 + i), rc.MAX_ORDER_QTY)
        assert approved(s.check(intent(), 100.0 + i))
    assert denied(s.check(intent(), 159.9), rc.ORDER_RATE)
    assert approved(s.check(intent(), 160.01))


# --- trading state ------------------------------------------------------------------------


def test_halted_denies_every_new_order_but_never_a_cancel():
    s = sentinel()
    give_position(s, "3")
    s.halt("ops", "maintenance")
    assert denied(s.check(intent(), 1.0), rc.TRADING_HALTED)
    assert denied(s.check(intent(Side.SELL), 1.0), rc.TRADING_HALTED)  # even a reducing one
    cancel = CancelOrder(venue="sim", symbol="BTCUSDT", client_order_id="td-x-1")
    cancel_all = CancelAllOrders(venue="sim")
    for state_change in (lambda: None, lambda: s.reduce("ops", "flatten"), lambda: s.resume("ops", "done")):
        state_change()
        assert s.check_cancel(cancel) is cancel
        assert s.check_cancel(cancel_all) is cancel_all


def test_reducing_with_a_long_position_lets_only_sells_down_to_zero():
    s = sentinel()
    give_position(s, "3")
    s.reduce("ops", "wind down")
    result = s.check(intent(Side.BUY, qty="0.1"), 1.0)
    assert denied(result, rc.TRADING_REDUCING)
    assert approved(s.check(intent(Side.SELL, qty="2"), 1.0))
    # the working sell of 2 counts: 1 more is exactly flat, 1.001 would go short
    assert denied(s.check(intent(Side.SELL, qty="1.001"), 1.0), rc.TRADING_REDUCING)
    assert approved(s.check(intent(Side.SELL, qty="1"), 1.0))
    assert denied(s.check(intent(Side.SELL, qty="0.001"), 1.0), rc.TRADING_REDUCING)


def test_reducing_with_a_short_position_lets_only_buys_up_to_zero():
    s = sentinel()
    give_position(s, "-2")
    s.reduce("ops", "wind down")
    assert denied(s.check(intent(Side.SELL, qty="0.1"), 1.0), rc.TRADING_REDUCING)
    assert denied(s.check(intent(Side.BUY, qty="2.001"), 1.0), rc.TRADING_REDUCING)
    assert approved(s.check(intent(Side.BUY, qty="2", price=None, order_type=OrderType.MARKET), 1.0))


def test_reducing_with_no_position_denies_both_sides():
    s = sentinel()
    s.reduce("ops", "wind down")
    assert denied(s.check(intent(Side.BUY), 1.0), rc.TRADING_REDUCING)
    assert denied(s.check(intent(Side.SELL), 1.0), rc.TRADING_REDUCING)


def test_reducing_orders_still_face_the_other_checks():
    s = sentinel(max_order_qty="1")
    give_position(s, "3")
    s.reduce("ops", "wind down")
    assert denied(s.check(intent(Side.SELL, qty="2"), 1.0), rc.MAX_ORDER_QTY)


def test_a_venue_in_reducing_does_not_restrict_other_venues():
    s = sentinel()
    s.reduce("ops", "venue flaky", venue="sim")
    result = s.check(intent(), 1.0)
    assert denied(result, rc.TRADING_REDUCING) and "at sim" in result.reason
    assert approved(s.check(intent(symbol="BNBUSDT", venue="other", price="50"), 1.0))


def test_reduce_only_intents_must_reduce_even_when_active():
    s = sentinel()
    give_position(s, "1")
    assert denied(s.check(intent(Side.BUY, reduce_only=True), 1.0), rc.REDUCE_ONLY)
    assert denied(s.check(intent(Side.SELL, qty="1.5", reduce_only=True), 1.0), rc.REDUCE_ONLY)
    assert approved(s.check(intent(Side.SELL, qty="1", reduce_only=True), 1.0))


# --- working orders, fills and bursts -----------------------------------------------------


def test_a_burst_of_intents_cannot_bypass_max_position():
    s = sentinel(max_position="5")
    results = [s.check(intent(qty="1"), 1.0) for _ in range(12)]
    assert sum(approved(r) for r in results) == 5
    assert all(denied(r, rc.MAX_POSITION) for r in results[5:])


def test_a_burst_of_intents_cannot_bypass_max_open_orders():
    s = sentinel(max_open_orders="4")
    results = [s.check(intent(qty="1"), 1.0) for _ in range(10)]
    assert sum(approved(r) for r in results) == 4


def test_capacity_returns_only_when_an_order_is_final():
    s = sentinel(max_position="2")
    a = intent(qty="2")
    assert approved(s.check(a, 1.0))
    s.on_order_update(update(a, OrderStatus.NEW), 1.1)
    s.on_order_update(update(a, OrderStatus.PENDING_CANCEL), 1.2)
    assert denied(s.check(intent(qty="1"), 1.3), rc.MAX_POSITION)
    s.on_order_update(update(a, OrderStatus.CANCELED), 1.4)
    assert approved(s.check(intent(qty="1"), 1.5))


def test_a_filled_status_before_its_fill_message_still_counts():
    s = sentinel(max_position="2")
    a = intent(qty="2")
    assert approved(s.check(a, 1.0))
    s.on_order_update(update(a, OrderStatus.FILLED, filled="2"), 1.1)
    # the venue says it filled, the fill has not arrived: 2 may still land in the position
    assert s.book.open_order_count() == 0
    assert s.book.pending(("sim", "BTCUSDT"), Side.BUY) == D(2)
    assert denied(s.check(intent(qty="0.5"), 1.2), rc.MAX_POSITION)
    s.on_fill(fill(a, "2"))
    assert s.book.position(("sim", "BTCUSDT")) == D(2)
    assert s.book.pending(("sim", "BTCUSDT"), Side.BUY) == D(0)
    assert a.client_order_id not in s.book.orders
    assert denied(s.check(intent(qty="0.5"), 1.3), rc.MAX_POSITION)
    assert approved(s.check(intent(Side.SELL, qty="2"), 1.4))


def test_partial_fill_then_cancel_leaves_only_the_filled_part():
    s = sentinel(max_position="10")
    a = intent(qty="4")
    s.check(a, 1.0)
    s.on_fill(fill(a, "1"))
    s.on_order_update(update(a, OrderStatus.PARTIALLY_FILLED, filled="1"), 1.1)
    s.on_order_update(update(a, OrderStatus.CANCELED, filled="1"), 1.2)
    assert s.book.position(("sim", "BTCUSDT")) == D(1)
    assert s.book.pending(("sim", "BTCUSDT"), Side.BUY) == D(0)
    assert approved(s.check(intent(qty="9"), 1.3))


def test_a_duplicate_fill_is_applied_once():
    s = sentinel()
    a = intent(qty="2")
    s.check(a, 1.0)
    f = fill(a, "1", trade_id="T1")
    assert s.on_fill(f) is True
    assert s.on_fill(f) is False
    assert s.book.position(("sim", "BTCUSDT")) == D(1)


def test_a_fee_paid_in_the_base_asset_changes_the_position():
    s = sentinel()
    buy, sell = intent(qty="1"), intent(Side.SELL, qty="0.5")
    s.on_fill(fill(buy, "1", fee="0.001", fee_asset="BTC"))
    assert s.book.position(("sim", "BTCUSDT")) == D("0.999")
    s.on_fill(fill(sell, "0.5", fee="0.0005", fee_asset="BTC"))
    assert s.book.position(("sim", "BTCUSDT")) == D("0.4985")
    s.on_fill(fill(buy, "0", fee="1", fee_asset="USDT"))  # a quote fee does not
    assert s.book.position(("sim", "BTCUSDT")) == D("0.4985")


def test_an_order_the_sentinel_did_not_approve_is_counted_when_reported_working():
    s = sentinel(max_open_orders="1")
    stranger = intent(qty="1")  # e.g. reconciled at start
    s.on_order_update(update(stranger, OrderStatus.NEW), 1.0)
    assert denied(s.check(intent(), 1.0), rc.MAX_OPEN_ORDERS)
    s.on_order_update(update(stranger, OrderStatus.CANCELED), 1.1)
    assert approved(s.check(intent(), 1.2))


def test_forgetting_an_order_that_was_never_sent_frees_it():
    s = sentinel(max_open_orders="1")
    a = intent()
    s.check(a, 1.0)
    assert s.forget_order(a.client_order_id) is True
    assert s.forget_order(a.client_order_id) is False
    assert approved(s.check(intent(), 1.0))


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 30)),
        st.tuples(st.just("fill"), st.integers(0, 50), st.integers(1, 30)),
        st.tuples(st.just("final"), st.integers(0, 50), st.booleans()),
    ),
    max_size=60,
)


@given(_OPS)
def test_worst_case_position_never_exceeds_the_limit_whatever_the_order_of_events(ops):
    """Approvals, partial fills and final statuses in any order: what may still fill stays within the limit."""
    s = sentinel(max_position="10")
    key = ("sim", "BTCUSDT")
    orders: list[tuple[OrderIntent, list[D]]] = []
    for op in ops:
        if op[0] == "order":
            order = intent(op[1], qty=str(D(op[2]) / 10))
            if approved(s.check(order, 1.0)):
                orders.append((order, [D(0), D(0), False]))  # filled, reported, final
        elif orders:
            order, state = orders[op[1] % len(orders)]
            left = order.quantity - state[0]
            if state[2]:
                continue  # a venue reports nothing more after a final status
            if op[0] == "fill" and left > 0:
                qty = min(left, D(op[2]) / 100)
                state[0] += qty
                s.on_fill(fill(order, str(qty)))
            elif op[0] == "final":
                # report what really filled: its fills may (True) or may not (False) have arrived
                reported = order.quantity if op[2] else state[0]
                status = OrderStatus.FILLED if reported == order.quantity else OrderStatus.CANCELED
                s.on_order_update(update(order, status, filled=str(reported)), 1.0)
                state[2] = True
                if op[2] and left > 0:
                    state[0] += left
                    s.on_fill(fill(order, str(left)))
        assert s.book.worst_case(key) <= D(10)
        # the running totals agree with a recount of the working orders
        for side in Side:
            recount = sum((o.pending_qty for o in s.book.orders.values() if o.side is side), D(0))
            assert s.book.pending(key, side) == recount
        assert s.book.open_order_count(key) == sum(1 for o in s.book.orders.values() if o.is_open)
    # everything that could fill has been accounted for exactly once
    total = sum((st_[0] * o.side.sign for o, st_ in orders), D(0))
    assert s.book.position(key) == total


# --- reporting ----------------------------------------------------------------------------


def test_snapshot_shows_limits_usage_and_denials_and_encodes_to_json():
    s = sentinel(max_position="5", max_orders_per_second="10", max_gross_exposure="10000")
    a = intent(qty="2")
    s.check(a, 5.0)
    s.check(intent(qty="4"), 5.0)  # denied: max position
    snap = s.snapshot(5.5)
    rows = {(r.key, r.scope): r for r in snap.limits}
    assert rows[("max_position", "sim:BTCUSDT")].usage == D(2)
    assert rows[("max_position", "sim:BTCUSDT")].limit == D(5)
    assert rows[("max_orders_per_second", "")].usage == D(1)
    assert rows[("max_open_orders_per_instrument", "sim:BTCUSDT")].usage == D(1)
    assert rows[("max_gross_exposure", "")].usage == D("200.2")
    assert snap.denials == {rc.MAX_POSITION: 1}
    assert snap.approvals == 1
    assert snap.state is TradingState.ACTIVE
    data = msgspec.json.decode(msgspec.json.encode(snap))
    assert data["positions"][0]["instrument"] == "sim:BTCUSDT"
    assert data["positions"][0]["working_buy"] == "2"
    assert {b["name"] for b in data["breakers"]} == {
        "daily_loss", "drawdown", "var", "rejects", "stale_data", "venue_down", "supervisor",
    }  # fmt: skip


# --- self-trade prevention -----------------------------------------------------------------


def test_an_order_that_would_trade_against_our_own_resting_order_is_refused():
    s = sentinel(prevent_self_trade="true")
    assert approved(s.check(intent(Side.SELL, qty="1", price="100.1"), 1.0))  # rests on the ask side
    crossing = s.check(intent(Side.BUY, qty="1", price="100.1"), 1.0)
    assert not approved(crossing) and crossing.code == "SELF_TRADE"
    assert "would trade against our own SELL" in crossing.reason
    assert approved(s.check(intent(Side.BUY, qty="1", price="100.05"), 1.0))  # below our sell: no cross
    market = s.check(intent(Side.BUY, qty="1", price=None, order_type=OrderType.MARKET), 1.0)
    assert not approved(market) and market.code == "SELF_TRADE"  # the touch (100.2) reaches our sell at 100.1
    other_symbol = s.check(intent(Side.BUY, qty="1", price="10.02", symbol="ETHUSDT"), 1.0)
    assert approved(other_symbol)


def test_self_trade_prevention_can_be_switched_off_and_ignores_finished_orders():
    assert RiskLimits().prevent_self_trade  # on by default
    s = sentinel(prevent_self_trade="false")
    assert approved(s.check(intent(Side.SELL, qty="1", price="100.1"), 1.0))
    assert approved(s.check(intent(Side.BUY, qty="1", price="100.1"), 1.0))
    s = sentinel(prevent_self_trade="true")
    resting = intent(Side.SELL, qty="1", price="100.1")
    assert approved(s.check(resting, 1.0))
    s.on_order_update(update(resting, OrderStatus.CANCELED), 1.0)
    assert approved(s.check(intent(Side.BUY, qty="1", price="100.1"), 1.0))
