"""Child pricing and sizing: the grid, the limit, dust and leftovers."""

from decimal import Decimal as D

import pytest

from actors.algos import ChildStyle, ExecutionParams, MarketState, TwapParams
from actors.algos.children import ChildSizer, beyond_limit, price_child
from daemon.model import Instrument, OrderType, Side, TimeInForce

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("5"))
MARKET = MarketState(bid=D("60000.00"), ask=D("60000.10"))


def params(**overrides):
    fields = dict(instrument=BTC, side=Side.BUY, quantity=D("1"), duration=3600.0, algo=TwapParams())
    fields.update(overrides)
    return ExecutionParams(**fields)


# --- pricing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "style", "price", "order_type", "tif"),
    [
        (Side.BUY, ChildStyle.PASSIVE, "60000.00", OrderType.LIMIT_MAKER, None),
        (Side.SELL, ChildStyle.PASSIVE, "60000.10", OrderType.LIMIT_MAKER, None),
        (Side.BUY, ChildStyle.MID, "60000.05", OrderType.LIMIT_MAKER, None),
        # ask * (1 + 20 bps) = 60120.1002 rounds down for a buy
        (Side.BUY, ChildStyle.CROSS, "60120.10", OrderType.LIMIT, TimeInForce.IOC),
        # bid * (1 - 20 bps) = 59880.0 for a sell
        (Side.SELL, ChildStyle.CROSS, "59880.00", OrderType.LIMIT, TimeInForce.IOC),
    ],
)
def test_each_style_prices_on_the_grid(side, style, price, order_type, tif):
    priced = price_child(params(side=side), style, MARKET)
    assert priced.price == D(price)
    assert priced.order_type is order_type and priced.time_in_force is tif
    assert priced.price % BTC.tick_size == 0


def test_mid_rounds_away_from_crossing():
    market = MarketState(bid=D("60000.00"), ask=D("60000.01"))  # one-tick spread: mid is off the grid
    assert price_child(params(side=Side.BUY), ChildStyle.MID, market).price == D("60000.00")
    assert price_child(params(side=Side.SELL), ChildStyle.MID, market).price == D("60000.01")


def test_limit_caps_every_style():
    buy = params(limit_price=D("60050.00"))
    assert price_child(buy, ChildStyle.CROSS, MARKET).price == D("60050.00")
    sell = params(side=Side.SELL, limit_price=D("60000.05"))
    assert price_child(sell, ChildStyle.PASSIVE, MARKET).price == D("60000.10")
    assert price_child(sell, ChildStyle.CROSS, MARKET).price == D("60000.05")
    low = params(limit_price=D("59990.00"))
    assert price_child(low, ChildStyle.PASSIVE, MARKET).price == D("59990.00")


def test_cross_that_the_limit_keeps_from_the_far_touch_rests_at_the_limit():
    buy = params(limit_price=D("60000.05"))  # between bid and ask: an IOC would not trade
    priced = price_child(buy, ChildStyle.CROSS, MARKET)
    assert priced.style is ChildStyle.PASSIVE and priced.price == D("60000.05")
    assert priced.time_in_force is not TimeInForce.IOC


def test_tiny_collar_still_reaches_the_far_touch():
    priced = price_child(params(collar_bps=0.001), ChildStyle.CROSS, MARKET)
    assert priced.price == D("60000.10") and priced.style is ChildStyle.CROSS


def test_no_quote_no_price():
    assert price_child(params(), ChildStyle.PASSIVE, MarketState()) is None
    assert price_child(params(), ChildStyle.PASSIVE, MarketState(bid=D(0), ask=D(1))) is None


def test_post_only_off_gives_gtc_limits():
    priced = price_child(params(post_only=False), ChildStyle.PASSIVE, MARKET)
    assert priced.order_type is OrderType.LIMIT and priced.time_in_force is TimeInForce.GTC


def test_beyond_limit():
    assert beyond_limit(params(limit_price=D("100")), D("100.01"))
    assert not beyond_limit(params(limit_price=D("100")), D("100"))
    assert beyond_limit(params(side=Side.SELL, limit_price=D("100")), D("99.99"))
    assert not beyond_limit(params(), D("1000000"))


# --- sizing ----------------------------------------------------------------------------

PRICE = D("50000")  # min notional 5 -> venue minimum 0.0001 BTC


def split(sizer, want, left, allow=None, slots=4, cap=None, prefer=None):
    return sizer.split(want=D(want), left=D(left), allow=D(allow if allow is not None else want),
                       price=PRICE, slots=slots, cap=None if cap is None else D(cap),
                       prefer=None if prefer is None else D(prefer))


def test_venue_minimum_comes_from_min_qty_or_min_notional():
    sizer = ChildSizer(params())
    assert sizer.venue_min(PRICE) == D("0.0001")
    assert sizer.venue_min(D("3")) == D("1.66667")  # 5 / 3 rounded up to the step
    assert ChildSizer(params(min_child=D("0.001"))).preferred_min(PRICE) == D("0.001")


def test_quantities_round_down_to_the_step():
    sizes, _ = split(ChildSizer(params()), "0.0166666666", "1")
    assert sizes == [D("0.01666")]


def test_dust_is_never_sent():
    sizes, note = split(ChildSizer(params()), "0.00005", "0.00005")
    assert sizes == [] and "below the venue minimum" in note


def test_a_remainder_below_the_minimum_is_folded_into_the_child():
    # 0.01 wanted, 0.01005 left: the 0.00005 left behind could never be sent
    sizes, _ = split(ChildSizer(params()), "0.01", "0.01005")
    assert sizes == [D("0.01005")]


def test_when_folding_would_exceed_the_max_the_child_shrinks_instead():
    sizes, _ = split(ChildSizer(params(max_child=D("0.01"))), "0.01", "0.01005", slots=1)
    # what the child leaves behind must be at least the venue minimum (0.0001)
    assert sizes == [D("0.00995")]
    assert D("0.01005") - sizes[0] == D("0.0001")


def test_wanted_amount_is_split_by_max_child_and_slots():
    sizer = ChildSizer(params(max_child=D("0.01")))
    assert split(sizer, "0.035", "1", slots=4)[0] == [D("0.01"), D("0.01"), D("0.01"), D("0.005")]
    assert split(sizer, "0.035", "1", slots=2)[0] == [D("0.01"), D("0.01")]


def test_a_fragment_after_a_full_child_waits():
    sizer = ChildSizer(params(max_child=D("0.01"), min_child=D("0.001")))
    assert split(sizer, "0.0105", "1")[0] == [D("0.01")]


def test_small_want_is_topped_up_to_the_minimum_only_within_allow():
    sizer = ChildSizer(params(min_child=D("0.001")))
    assert split(sizer, "0.0004", "1", allow="0.002")[0] == [D("0.001")]
    sizes, note = split(sizer, "0.0004", "1", allow="0.0009")
    assert sizes == [] and "minimum child" in note


def test_the_final_piece_may_be_below_the_preferred_minimum():
    sizer = ChildSizer(params(min_child=D("0.001")))
    assert split(sizer, "0.0003", "0.0003")[0] == [D("0.0003")]


def test_algorithm_cap_and_preference():
    sizer = ChildSizer(params())
    assert split(sizer, "0.05", "1", cap="0.02", slots=1)[0] == [D("0.02")]
    assert split(sizer, "0.004", "1", allow="0.02", prefer="0.01")[0] == [D("0.01")]


def test_cap_below_the_venue_minimum_sends_nothing():
    sizes, note = split(ChildSizer(params()), "0.05", "1", cap="0.00001")
    assert sizes == [] and "below the venue minimum" in note


def test_max_notional_and_max_qty_bound_children():
    inst = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                      step_size=D("0.00001"), max_qty=D("0.5"), max_notional=D("10000"))
    sizer = ChildSizer(params(instrument=inst))
    assert sizer.max_size(PRICE) == D("0.2")
    assert split(sizer, "0.5", "1", slots=3)[0] == [D("0.2"), D("0.2"), D("0.1")]


def test_never_more_than_left():
    sizer = ChildSizer(params(min_child=D("0.01")))
    sizes, _ = split(sizer, "0.5", "0.02", allow="0.5")
    assert sum(sizes) <= D("0.02")
