"""The sim matching engine: order types, fills, fees, balances, filters, errors, events."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal as D

import pytest

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce
from venues.base import Balance, BookDiff, OrderNotFound, OrderRejected, OrderRequest, PublicTrade, VenueError
from venues.sim.engine import SimEngine

BTC = Instrument(
    venue="sim",
    symbol="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick_size=D("0.01"),
    step_size=D("0.00001"),
    min_qty=D("0.00001"),
    max_qty=D("9000"),
    min_price=D("0.01"),
    max_price=D("1000000"),
    min_notional=D("5"),
)
ETH = Instrument(
    venue="sim",
    symbol="ETHUSDT",
    base="ETH",
    quote="USDT",
    tick_size=D("0.01"),
    step_size=D("0.0001"),
    min_notional=D("5"),
)


@pytest.fixture
def engine() -> SimEngine:
    eng = SimEngine([BTC, ETH], clock_ms=lambda: 1_700_000_000_000)
    for name in ("alice", "bob"):
        eng.open_account(name)
        eng.deposit(name, "USDT", D("1000000"))
        eng.deposit(name, "BTC", D("10"))
        eng.deposit(name, "ETH", D("100"))
    return eng


def limit(side: Side, qty: str, price: str, tif: TimeInForce = TimeInForce.GTC, cid: str = "", symbol: str = "BTCUSDT"):
    return OrderRequest(
        symbol=symbol,
        client_order_id=cid,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=D(qty),
        price=D(price),
        time_in_force=tif,
    )


def market(side: Side, qty: str | None = None, quote: str | None = None, cid: str = "") -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT",
        client_order_id=cid,
        side=side,
        order_type=OrderType.MARKET,
        quantity=None if qty is None else D(qty),
        quote_quantity=None if quote is None else D(quote),
    )


def maker(side: Side, qty: str, price: str, cid: str = "") -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT",
        client_order_id=cid,
        side=side,
        order_type=OrderType.LIMIT_MAKER,
        quantity=D(qty),
        price=D(price),
    )


def free(engine: SimEngine, account: str, asset: str) -> D:
    return engine.balance(account, asset).free


def locked(engine: SimEngine, account: str, asset: str) -> D:
    return engine.balance(account, asset).locked


@contextmanager
def rejected(code: int, message: str | None = None) -> Iterator[pytest.ExceptionInfo[VenueError]]:
    """pytest.raises for a venue refusal with Binance's code (and message)."""
    with pytest.raises(VenueError) as info:
        yield info
    assert info.value.code == code, info.value
    if message is not None:
        assert info.value.message == message


# --- resting and matching ------------------------------------------------------------------


def test_limit_order_rests_and_locks_quote(engine):
    state = engine.place_order("alice", limit(Side.BUY, "0.5", "60000", cid="a1"))
    assert state.status is OrderStatus.NEW
    assert state.venue_order_id == "1" and state.client_order_id == "a1"
    assert (state.quantity, state.filled_qty, state.price) == (D("0.5"), 0, D("60000"))
    assert state.time_in_force is TimeInForce.GTC and state.created_ms == 1_700_000_000_000
    assert locked(engine, "alice", "USDT") == D("30000")
    assert free(engine, "alice", "USDT") == D("970000")
    snap = engine.snapshot("BTCUSDT")
    assert snap.bids == ((D("60000"), D("0.5")),) and snap.asks == ()
    assert snap.last_update_id == 1
    assert engine.open_orders("alice") == [state]
    assert engine.audit() == []


def test_crossing_limit_fills_at_the_resting_price_and_refunds_the_difference(engine):
    engine.place_order("bob", limit(Side.SELL, "0.5", "60000"))
    state = engine.place_order("alice", limit(Side.BUY, "0.5", "60100"))
    assert state.status is OrderStatus.FILLED
    assert state.quote_filled == D("30000")  # at the maker's 60000, not the taker's 60100
    # alice paid 30000 USDT (nothing stays locked) and got 0.5 BTC less the 0.1% taker fee.
    assert free(engine, "alice", "USDT") == D("970000") and locked(engine, "alice", "USDT") == 0
    assert free(engine, "alice", "BTC") == D("10.4995")
    # bob gave 0.5 BTC and got 30000 USDT less the 0.1% maker fee.
    assert free(engine, "bob", "BTC") == D("9.5") and locked(engine, "bob", "BTC") == 0
    assert free(engine, "bob", "USDT") == D("1029970")
    assert engine.fees_collected() == {"BTC": D("0.0005"), "ETH": 0, "USDT": D("30")}
    assert engine.snapshot("BTCUSDT").asks == ()
    assert engine.last_price("BTCUSDT") == D("60000")
    assert engine.audit() == []


def test_partial_fill_rests_the_remainder(engine):
    engine.place_order("bob", limit(Side.SELL, "0.2", "60000"))
    state = engine.place_order("alice", limit(Side.BUY, "0.5", "60000"))
    assert state.status is OrderStatus.PARTIALLY_FILLED
    assert state.filled_qty == D("0.2")
    assert engine.snapshot("BTCUSDT").bids == ((D("60000"), D("0.3")),)
    assert locked(engine, "alice", "USDT") == D("18000")  # 0.3 x 60000 still backs the order
    assert engine.audit() == []


def test_taker_sweeps_levels_best_price_first(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60002"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "60001"))
    state = engine.place_order("alice", limit(Side.BUY, "0.25", "60002"))
    trades = engine.my_trades("alice", "BTCUSDT")
    assert [(t.price, t.qty) for t in trades] == [
        (D("60000"), D("0.1")),
        (D("60001"), D("0.1")),
        (D("60002"), D("0.05")),
    ]
    assert state.quote_filled == D("6000") + D("6000.1") + D("3000.1")
    assert engine.snapshot("BTCUSDT").asks == ((D("60002"), D("0.05")),)


def test_time_priority_within_a_level(engine):
    first = engine.place_order("bob", limit(Side.SELL, "0.1", "60000", cid="first"))
    second = engine.place_order("alice", limit(Side.SELL, "0.1", "60000", cid="second"))
    engine.place_order("alice", limit(Side.BUY, "0.15", "60000", cid="taker"))
    assert engine.query_order("bob", "BTCUSDT", client_order_id="first").status is OrderStatus.FILLED
    still = engine.query_order("alice", "BTCUSDT", venue_order_id=second.venue_order_id)
    assert still.status is OrderStatus.PARTIALLY_FILLED and still.filled_qty == D("0.05")
    assert first.venue_order_id < second.venue_order_id


def test_cancel_behind_in_the_queue_keeps_priority_of_the_rest(engine):
    a = engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    b = engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    c = engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.cancel_order("bob", "BTCUSDT", venue_order_id=a.venue_order_id)
    engine.place_order("alice", limit(Side.BUY, "0.1", "60000"))
    assert engine.query_order("bob", "BTCUSDT", venue_order_id=b.venue_order_id).status is OrderStatus.FILLED
    assert engine.query_order("bob", "BTCUSDT", venue_order_id=c.venue_order_id).status is OrderStatus.NEW
    assert engine.audit() == []


def test_ioc_fills_what_it_can_and_expires_the_rest(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    state = engine.place_order("alice", limit(Side.BUY, "0.3", "60000", TimeInForce.IOC))
    assert state.status is OrderStatus.EXPIRED and state.filled_qty == D("0.1")
    assert locked(engine, "alice", "USDT") == 0
    assert engine.snapshot("BTCUSDT").bids == ()
    assert engine.open_orders("alice") == []


def test_ioc_without_liquidity_expires_unfilled(engine):
    state = engine.place_order("alice", limit(Side.BUY, "0.3", "60000", TimeInForce.IOC))
    assert state.status is OrderStatus.EXPIRED and state.filled_qty == 0
    assert free(engine, "alice", "USDT") == D("1000000")
    assert engine.last_update_id("BTCUSDT") == 0  # the visible book never changed


def test_fok_fills_entirely_or_not_at_all(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "60010"))
    before = engine.last_update_id("BTCUSDT")
    killed = engine.place_order("alice", limit(Side.BUY, "0.25", "60010", TimeInForce.FOK))
    assert killed.status is OrderStatus.EXPIRED and killed.filled_qty == 0
    assert engine.last_update_id("BTCUSDT") == before
    assert engine.my_trades("alice", "BTCUSDT") == []
    filled = engine.place_order("alice", limit(Side.BUY, "0.2", "60010", TimeInForce.FOK))
    assert filled.status is OrderStatus.FILLED and filled.quote_filled == D("12001")


def test_fok_respects_its_limit_price(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "60010"))
    state = engine.place_order("alice", limit(Side.BUY, "0.2", "60005", TimeInForce.FOK))
    assert state.status is OrderStatus.EXPIRED and state.filled_qty == 0


def test_market_buy_by_quantity_sweeps_and_expires_when_the_book_runs_out(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "61000"))
    state = engine.place_order("alice", market(Side.BUY, qty="0.3"))
    assert state.status is OrderStatus.EXPIRED
    assert state.filled_qty == D("0.2") and state.quote_filled == D("12100")
    assert state.price is None and state.time_in_force is None
    assert free(engine, "alice", "USDT") == D("1000000") - D("12100")
    assert locked(engine, "alice", "USDT") == 0
    assert engine.audit() == []


def test_market_sell_by_quantity(engine):
    engine.place_order("bob", limit(Side.BUY, "0.1", "60000"))
    engine.place_order("bob", limit(Side.BUY, "0.1", "59000"))
    state = engine.place_order("alice", market(Side.SELL, qty="0.15"))
    assert state.status is OrderStatus.FILLED and state.quote_filled == D("6000") + D("2950")
    assert free(engine, "alice", "BTC") == D("9.85")
    assert free(engine, "alice", "USDT") == D("1000000") + (D("8950") - D("8.95"))


def test_market_buy_by_quote_amount_spends_at_most_the_amount(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "1", "60500"))
    state = engine.place_order("alice", market(Side.BUY, quote="10000"))
    # 0.1 at 60000 = 6000, then floor(4000 / 60500 to the step) = 0.06611 at 60500 = 3999.655
    assert state.filled_qty == D("0.16611")
    assert state.quote_filled == D("6000") + D("3999.655")
    assert state.quote_filled <= D("10000")
    assert state.quote_quantity == D("10000") and state.quantity == D("0.16611")
    assert state.status is OrderStatus.FILLED
    assert engine.audit() == []


def test_market_sell_by_quote_amount_receives_at_most_the_amount(engine):
    engine.place_order("bob", limit(Side.BUY, "1", "50000"))
    state = engine.place_order("alice", market(Side.SELL, quote="1000"))
    assert state.filled_qty == D("0.02") and state.quote_filled == D("1000")
    assert free(engine, "alice", "BTC") == D("9.98")


def test_market_order_on_an_empty_book_expires(engine):
    state = engine.place_order("alice", market(Side.BUY, qty="0.1"))
    assert state.status is OrderStatus.EXPIRED and state.filled_qty == 0


def test_limit_maker_rests_or_is_refused_if_it_would_take(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    state = engine.place_order("alice", maker(Side.BUY, "0.1", "59999"))
    assert state.status is OrderStatus.NEW and state.order_type is OrderType.LIMIT_MAKER
    before = engine.snapshot("BTCUSDT")
    with rejected(-2010, "Order would immediately match and take."):
        engine.place_order("alice", maker(Side.BUY, "0.1", "60000"))
    with rejected(-2010, "Order would immediately match and take."):
        engine.place_order("bob", maker(Side.SELL, "0.1", "59999"))
    assert engine.snapshot("BTCUSDT") == before
    assert len(engine.open_orders("alice")) == 1


# --- cancel, query, ids ---------------------------------------------------------------------


def test_cancel_unlocks_and_removes_the_level(engine):
    state = engine.place_order("alice", limit(Side.BUY, "0.5", "60000", cid="c1"))
    cancelled = engine.cancel_order("alice", "BTCUSDT", client_order_id="c1")
    assert cancelled.status is OrderStatus.CANCELED and cancelled.venue_order_id == state.venue_order_id
    assert locked(engine, "alice", "USDT") == 0 and free(engine, "alice", "USDT") == D("1000000")
    assert engine.snapshot("BTCUSDT").bids == ()
    assert engine.query_order("alice", "BTCUSDT", client_order_id="c1").status is OrderStatus.CANCELED
    with rejected(-2011, "Unknown order sent."):
        engine.cancel_order("alice", "BTCUSDT", client_order_id="c1")


def test_cancel_and_query_of_unknown_orders(engine):
    with pytest.raises(OrderNotFound) as info:
        engine.cancel_order("alice", "BTCUSDT", venue_order_id=99)
    assert (info.value.code, info.value.message) == (-2011, "Unknown order sent.")
    with pytest.raises(OrderNotFound) as info:
        engine.query_order("alice", "BTCUSDT", client_order_id="never")
    assert (info.value.code, info.value.message) == (-2013, "Order does not exist.")
    with rejected(-1102):
        engine.query_order("alice", "BTCUSDT")
    with rejected(-1121, "Invalid symbol."):
        engine.query_order("alice", "NOPE", venue_order_id=1)


def test_an_account_cannot_see_or_cancel_another_accounts_order(engine):
    state = engine.place_order("bob", limit(Side.SELL, "0.1", "60000", cid="mine"))
    with rejected(-2011):
        engine.cancel_order("alice", "BTCUSDT", venue_order_id=state.venue_order_id)
    with rejected(-2013):
        engine.query_order("alice", "BTCUSDT", client_order_id="mine")
    assert engine.open_orders("alice") == []


def test_cancel_with_both_ids_must_agree(engine):
    state = engine.place_order("alice", limit(Side.BUY, "0.1", "60000", cid="x"))
    with rejected(-2011):
        engine.cancel_order("alice", "BTCUSDT", venue_order_id=state.venue_order_id, client_order_id="y")
    done = engine.cancel_order("alice", "BTCUSDT", venue_order_id=state.venue_order_id, client_order_id="x")
    assert done.status is OrderStatus.CANCELED


def test_cancel_all_cancels_only_that_account_and_symbol(engine):
    engine.place_order("alice", limit(Side.BUY, "0.1", "60000"))
    engine.place_order("alice", limit(Side.SELL, "0.1", "61000"))
    engine.place_order("alice", limit(Side.BUY, "1", "3000", symbol="ETHUSDT"))
    engine.place_order("bob", limit(Side.BUY, "0.1", "59000"))
    update_id = engine.last_update_id("BTCUSDT")
    cancelled = engine.cancel_all("alice", "BTCUSDT")
    assert [s.status for s in cancelled] == [OrderStatus.CANCELED, OrderStatus.CANCELED]
    assert engine.last_update_id("BTCUSDT") == update_id + 1  # one operation, one update
    assert [o.symbol for o in engine.open_orders("alice")] == ["ETHUSDT"]
    assert len(engine.open_orders("bob")) == 1
    assert engine.cancel_all("alice", "BTCUSDT") == []
    assert locked(engine, "alice", "BTC") == 0


def test_duplicate_client_id_among_open_orders_is_refused(engine):
    engine.place_order("alice", limit(Side.BUY, "0.1", "60000", cid="dup"))
    with rejected(-2010, "Duplicate order sent."):
        engine.place_order("alice", limit(Side.BUY, "0.1", "60000", cid="dup"))
    # Another account, or another symbol, may use it.
    engine.place_order("bob", limit(Side.BUY, "0.1", "60000", cid="dup"))
    engine.place_order("alice", limit(Side.BUY, "1", "3000", cid="dup", symbol="ETHUSDT"))
    # Once closed, the id is free again; queries by id then see the newest order.
    engine.cancel_order("alice", "BTCUSDT", client_order_id="dup")
    again = engine.place_order("alice", limit(Side.BUY, "0.2", "60000", cid="dup"))
    assert engine.query_order("alice", "BTCUSDT", client_order_id="dup") == again


def test_order_and_trade_ids_increase_per_symbol(engine):
    a = engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    b = engine.place_order("bob", limit(Side.SELL, "1", "3000", symbol="ETHUSDT"))
    c = engine.place_order("alice", limit(Side.BUY, "0.2", "60000"))
    assert (a.venue_order_id, b.venue_order_id, c.venue_order_id) == ("1", "1", "2")
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    trades = engine.my_trades("alice", "BTCUSDT")
    assert [t.trade_id for t in trades] == ["1", "2"]
    assert [t.trade_id for t in engine.my_trades("alice", "BTCUSDT", from_trade_id="2")] == ["2"]
    assert engine.last_trade_id("BTCUSDT") == 2 and engine.last_trade_id("ETHUSDT") == 0


def test_generated_client_ids_are_unique(engine):
    a = engine.place_order("alice", limit(Side.BUY, "0.1", "60000"))
    b = engine.place_order("alice", limit(Side.BUY, "0.1", "60000"))
    assert a.client_order_id and b.client_order_id and a.client_order_id != b.client_order_id
    assert engine.query_order("alice", "BTCUSDT", client_order_id=b.client_order_id) == b


def test_order_trades_lists_the_fills_of_one_order(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "60001"))
    state = engine.place_order("alice", limit(Side.BUY, "0.2", "60001", cid="full"))
    fills = engine.order_trades("alice", "BTCUSDT", client_order_id="full")
    assert [(f.price, f.qty, f.fee, f.fee_asset, f.is_maker) for f in fills] == [
        (D("60000"), D("0.1"), D("0.0001"), "BTC", False),
        (D("60001"), D("0.1"), D("0.0001"), "BTC", False),
    ]
    assert all(f.venue_order_id == state.venue_order_id for f in fills)


def test_history_limit_forgets_the_oldest_closed_orders(engine):
    engine.open_account("short", history_limit=2)
    engine.deposit("short", "USDT", D("100000"))
    ids = [engine.place_order("short", limit(Side.BUY, "0.1", "60000", cid=f"h{i}")).venue_order_id for i in range(3)]
    for i in range(3):
        engine.cancel_order("short", "BTCUSDT", client_order_id=f"h{i}")
    with rejected(-2013):
        engine.query_order("short", "BTCUSDT", venue_order_id=ids[0])
    assert engine.query_order("short", "BTCUSDT", client_order_id="h2").status is OrderStatus.CANCELED


# --- balances and fees ------------------------------------------------------------------------


def test_orders_beyond_the_free_balance_are_refused(engine):
    engine.open_account("poor")
    engine.deposit("poor", "USDT", D("1000"))
    engine.deposit("poor", "BTC", D("0.01"))
    insufficient = "Account has insufficient balance for requested action."
    with rejected(-2010, insufficient):
        engine.place_order("poor", limit(Side.BUY, "0.1", "60000"))
    with rejected(-2010, insufficient):
        engine.place_order("poor", limit(Side.SELL, "0.02", "60000"))
    engine.place_order("poor", limit(Side.BUY, "0.01", "60000"))  # locks 600
    with rejected(-2010, insufficient):  # only 400 left free
        engine.place_order("poor", limit(Side.BUY, "0.01", "50000"))
    engine.place_order("bob", limit(Side.SELL, "1", "70000"))
    with rejected(-2010, insufficient):
        engine.place_order("poor", market(Side.BUY, qty="0.01"))  # costs 700
    with rejected(-2010, insufficient):
        engine.place_order("poor", market(Side.BUY, quote="401"))
    with rejected(-2010, insufficient):
        engine.place_order("poor", market(Side.SELL, qty="0.02"))
    assert engine.balance("poor", "USDT") == Balance(asset="USDT", free=D("400"), locked=D("600"))


def test_fees_follow_each_accounts_maker_and_taker_rates(engine):
    engine.set_fees("alice", maker_fee=D("0"), taker_fee=D("0.002"))
    engine.set_fees("bob", maker_fee=D("0.0005"), taker_fee=D("0.001"))
    assert engine.fee_rates("bob") == (D("0.0005"), D("0.001"))
    engine.place_order("bob", limit(Side.BUY, "1", "50000"))  # bob makes, buying
    engine.place_order("alice", limit(Side.SELL, "1", "50000"))  # alice takes, selling
    (bob_trade,) = engine.my_trades("bob", "BTCUSDT")
    (alice_trade,) = engine.my_trades("alice", "BTCUSDT")
    assert (bob_trade.fee, bob_trade.fee_asset, bob_trade.is_maker) == (D("0.0005"), "BTC", True)
    assert (alice_trade.fee, alice_trade.fee_asset, alice_trade.is_maker) == (D("100"), "USDT", False)
    assert free(engine, "bob", "BTC") == D("10.9995")
    assert free(engine, "alice", "USDT") == D("1049900")


def test_fee_rates_must_be_fractions(engine):
    with pytest.raises(ValueError, match="maker fee"):
        engine.set_fees("alice", maker_fee=D("-0.1"), taker_fee=D("0.001"))
    with pytest.raises(ValueError, match="taker fee"):
        engine.open_account("carol", taker_fee=D("1"))


def test_unlimited_accounts_trade_without_funds_and_totals_stay_exact(engine):
    engine.open_account("street", unlimited=True, history_limit=0)
    engine.place_limit_ticks("street", "BTCUSDT", False, 6_000_000, 100_000)  # sells 1 BTC it does not have
    engine.place_order("alice", market(Side.BUY, qty="0.5"))
    # It sold 0.5 of them; the other 0.5 stays locked behind its resting order.
    assert engine.balance("street", "BTC") == Balance(asset="BTC", free=D("-1"), locked=D("0.5"))
    assert engine.asset_total("BTC") == engine.deposited("BTC") == D("20")
    assert engine.asset_total("USDT") == engine.deposited("USDT")
    assert engine.audit() == []


def test_deposits_must_be_positive_and_fit_the_asset_precision(engine):
    with pytest.raises(ValueError, match="8 decimals"):
        engine.deposit("alice", "USDT", D("0.000000001"))
    with pytest.raises(ValueError):
        engine.deposit("alice", "USDT", D("-1"))
    with pytest.raises(KeyError, match="open_account"):
        engine.deposit("nobody", "USDT", D("1"))


# --- filters and parameter errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (limit(Side.BUY, "0.1", "60000.001"), "Filter failure: PRICE_FILTER"),
        (limit(Side.BUY, "0.1", "0"), "Filter failure: PRICE_FILTER"),
        (limit(Side.BUY, "0.00001", "2000000"), "Filter failure: PRICE_FILTER"),
        (limit(Side.BUY, "0.000015", "60000"), "Filter failure: LOT_SIZE"),
        (limit(Side.BUY, "0", "60000"), "Filter failure: LOT_SIZE"),
        (limit(Side.BUY, "9000.1", "1"), "Filter failure: LOT_SIZE"),
        (limit(Side.BUY, "0.00001", "60000"), "Filter failure: NOTIONAL"),  # 0.6 USDT < 5
        (market(Side.BUY, qty="0.000015"), "Filter failure: LOT_SIZE"),
        (market(Side.BUY, quote="4"), "Filter failure: NOTIONAL"),
    ],
)
def test_filter_failures_use_binance_codes(engine, request_, message):
    before = engine.snapshot("BTCUSDT")
    with rejected(-1013, message):
        engine.place_order("alice", request_)
    assert engine.snapshot("BTCUSDT") == before
    assert engine.balance("alice", "USDT").locked == 0


def test_market_orders_are_checked_against_the_last_price_notional(engine):
    engine.place_order("bob", limit(Side.SELL, "1", "60000"))
    with rejected(-1013, "Filter failure: NOTIONAL"):
        engine.place_order("alice", market(Side.BUY, qty="0.00005"))  # 3 USDT at the ask
    engine.place_order("alice", market(Side.BUY, qty="0.0001"))  # 6 USDT is fine


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="",
                side=Side.BUY,
                order_type=OrderType.LIMIT,
                quantity=D("1"),
                price=D("1"),
            ),
            -1102,
            "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
        ),
        (
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="",
                side=Side.BUY,
                order_type=OrderType.LIMIT,
                quantity=D("1"),
                time_in_force=TimeInForce.GTC,
            ),
            -1102,
            "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
        ),
        (
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="",
                side=Side.BUY,
                order_type=OrderType.LIMIT_MAKER,
                quantity=D("1"),
                price=D("1"),
                time_in_force=TimeInForce.GTC,
            ),
            -1106,
            "Parameter 'timeInForce' sent when not required.",
        ),
        (
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="",
                side=Side.BUY,
                order_type=OrderType.MARKET,
                quantity=D("1"),
                price=D("1"),
            ),
            -1106,
            "Parameter 'price' sent when not required.",
        ),
        (
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="",
                side=Side.BUY,
                order_type=OrderType.MARKET,
                quantity=D("1"),
                quote_quantity=D("1"),
            ),
            -1106,
            "Parameter 'quoteOrderQty' sent when not required.",
        ),
        (
            OrderRequest(symbol="BTCUSDT", client_order_id="", side=Side.BUY, order_type=OrderType.MARKET),
            -1102,
            None,
        ),
        (
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="",
                side=Side.BUY,
                order_type=OrderType.MARKET,
                quote_quantity=D("10.000000001"),
            ),
            -1111,
            None,
        ),
        (
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="",
                side=Side.BUY,
                order_type=OrderType.LIMIT,
                quantity=D("1"),
                price=D("100"),
                time_in_force=TimeInForce.GTC,
                iceberg_qty=D("0.1"),
            ),
            -2010,
            "Unsupported order combination",
        ),
        (
            OrderRequest(
                symbol="XRPUSDT", client_order_id="", side=Side.BUY, order_type=OrderType.MARKET, quantity=D("1")
            ),
            -1121,
            "Invalid symbol.",
        ),
    ],
)
def test_malformed_orders_are_refused_like_binance(engine, request_, code, message):
    with pytest.raises(OrderRejected) as info:
        engine.place_order("alice", request_)
    assert info.value.code == code
    if message is not None:
        assert info.value.message == message


def test_closed_market_refuses_new_orders_but_allows_cancels(engine):
    engine.place_order("alice", limit(Side.BUY, "0.1", "60000", cid="open"))
    engine.set_trading("BTCUSDT", False)
    assert engine.instrument("BTCUSDT").trading is False
    with rejected(-2010, "Market is closed."):
        engine.place_order("alice", limit(Side.BUY, "0.1", "60000"))
    assert engine.cancel_order("alice", "BTCUSDT", client_order_id="open").status is OrderStatus.CANCELED
    engine.set_trading("BTCUSDT", True)
    assert engine.instrument("BTCUSDT").trading is True


# --- events -------------------------------------------------------------------------------------


def test_taker_events_mirror_binance_execution_reports(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "60001"))
    events: list = []
    engine.subscribe_account("alice", events.append)
    engine.place_order("alice", limit(Side.BUY, "0.3", "60001", TimeInForce.IOC, cid="ioc"))
    kinds = [(type(e).__name__, getattr(e, "status", None)) for e in events]
    assert kinds == [
        ("OrderUpdate", OrderStatus.NEW),
        ("Fill", None),
        ("OrderUpdate", OrderStatus.PARTIALLY_FILLED),
        ("Fill", None),
        ("OrderUpdate", OrderStatus.PARTIALLY_FILLED),
        ("OrderUpdate", OrderStatus.EXPIRED),
        ("BalanceUpdate", None),
        ("BalanceUpdate", None),
    ]
    fills = [e for e in events if isinstance(e, Fill)]
    assert [(f.trade_id, f.price, f.qty, f.fee, f.fee_asset, f.is_maker) for f in fills] == [
        ("1", D("60000"), D("0.1"), D("0.0001"), "BTC", False),
        ("2", D("60001"), D("0.1"), D("0.0001"), "BTC", False),
    ]
    last = events[5]
    assert isinstance(last, OrderUpdate)
    assert last.filled_qty == D("0.2") and last.quote_filled == D("12000.1")
    assert last.avg_price == D("60000.5") and last.client_order_id == "ioc" and last.venue == "sim"
    balances = {e.asset: e for e in events if isinstance(e, BalanceUpdate)}
    assert balances["BTC"].free == D("10.1998")
    assert balances["USDT"].free == D("1000000") - D("12000.1") and balances["USDT"].locked == 0


def test_maker_events_and_cancel_events(engine):
    events: list = []
    engine.subscribe_account("bob", events.append)
    engine.place_order("bob", limit(Side.SELL, "0.3", "60000", cid="rest"))
    engine.place_order("alice", limit(Side.BUY, "0.1", "60000"))
    engine.cancel_order("bob", "BTCUSDT", client_order_id="rest")
    updates = [(e.status, e.filled_qty) for e in events if isinstance(e, OrderUpdate)]
    assert updates == [
        (OrderStatus.NEW, 0),
        (OrderStatus.PARTIALLY_FILLED, D("0.1")),
        (OrderStatus.CANCELED, D("0.1")),
    ]
    (fill,) = [e for e in events if isinstance(e, Fill)]
    assert fill.is_maker and fill.fee_asset == "USDT" and fill.fee == D("6")
    final_btc = [e for e in events if isinstance(e, BalanceUpdate) and e.asset == "BTC"][-1]
    assert (final_btc.free, final_btc.locked) == (D("9.9"), 0)


def test_public_events_trades_then_one_diff_per_operation(engine):
    events: list = []
    engine.subscribe_market(events.append, ["BTCUSDT"])
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.2", "60001"))
    engine.place_order("alice", limit(Side.BUY, "0.15", "60001"))
    engine.place_order("alice", limit(Side.BUY, "1", "3000", symbol="ETHUSDT"))  # not subscribed
    assert [type(e) for e in events] == [BookDiff, BookDiff, PublicTrade, PublicTrade, BookDiff]
    assert [(e.first_id, e.last_id) for e in events if isinstance(e, BookDiff)] == [(1, 1), (2, 2), (3, 3)]
    trades = [e for e in events if isinstance(e, PublicTrade)]
    assert [(t.trade_id, t.price, t.qty, t.taker_side) for t in trades] == [
        (1, D("60000"), D("0.1"), Side.BUY),
        (2, D("60001"), D("0.05"), Side.BUY),
    ]
    assert events[-1].asks == ((D("60000"), 0), (D("60001"), D("0.15")))
    assert events[-1].bids == ()


def test_batch_publishes_one_diff_with_every_changed_level(engine):
    events: list = []
    engine.subscribe_market(events.append)
    with engine.batch():
        engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
        engine.place_order("alice", limit(Side.BUY, "0.1", "59000"))
        engine.cancel_all("bob", "BTCUSDT")
        assert events == []  # nothing is published half-way
    (diff,) = events
    assert (diff.first_id, diff.last_id) == (1, 1)
    assert diff.bids == ((D("59000"), D("0.1")),) and diff.asks == ((D("60000"), 0),)


def test_snapshot_plus_diffs_rebuild_the_book(engine):
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    snapshot = engine.snapshot("BTCUSDT", depth=None)
    book = {("b", p): q for p, q in snapshot.bids} | {("a", p): q for p, q in snapshot.asks}
    last = snapshot.last_update_id
    diffs: list = []
    engine.subscribe_market(lambda e: diffs.append(e) if isinstance(e, BookDiff) else None)
    engine.place_order("alice", limit(Side.BUY, "0.3", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.5", "60100"))
    engine.place_order("bob", market(Side.SELL, qty="0.05"))
    engine.cancel_all("alice", "BTCUSDT")
    for diff in diffs:
        assert diff.first_id == last + 1
        last = diff.last_id
        for side, levels in (("b", diff.bids), ("a", diff.asks)):
            for price, qty in levels:
                if qty:
                    book[(side, price)] = qty
                else:
                    book.pop((side, price), None)
    final = engine.snapshot("BTCUSDT", depth=None)
    assert final.last_update_id == last
    assert book == {("b", p): q for p, q in final.bids} | {("a", p): q for p, q in final.asks}


def test_a_failing_observer_is_dropped_and_the_engine_carries_on(engine):
    calls = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("observer bug")

    good: list = []
    engine.subscribe_market(broken)
    engine.subscribe_market(good.append)
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    engine.place_order("bob", limit(Side.SELL, "0.1", "60001"))
    assert len(calls) == 1 and len(good) == 2
    assert engine.audit() == []


def test_observers_cannot_change_the_engine_from_a_callback(engine):
    attempts = []

    def meddler(event):
        try:
            engine.place_order("alice", limit(Side.BUY, "0.1", "50000"))
        except RuntimeError as exc:
            attempts.append(str(exc))

    engine.subscribe_market(meddler)
    engine.place_order("bob", limit(Side.SELL, "0.1", "60000"))
    assert attempts and "queue the event" in attempts[0]
    assert engine.open_orders("alice") == []


def test_unsubscribe_stops_events(engine):
    events: list = []
    unsubscribe = engine.subscribe_account("alice", events.append)
    unsubscribe()
    engine.place_order("alice", limit(Side.BUY, "0.1", "60000"))
    assert events == []


def test_snapshot_depth_and_best_prices(engine):
    for i in range(5):
        engine.place_order("bob", limit(Side.SELL, "0.1", str(60000 + i)))
        engine.place_order("alice", limit(Side.BUY, "0.1", str(59000 - i)))
    snap = engine.snapshot("BTCUSDT", depth=2)
    assert [p for p, _ in snap.bids] == [D("59000"), D("58999")]
    assert [p for p, _ in snap.asks] == [D("60000"), D("60001")]
    assert engine.best_bid("BTCUSDT") == (D("59000"), D("0.1"))
    assert engine.best_ask("BTCUSDT") == (D("60000"), D("0.1"))
    assert engine.mid("BTCUSDT") == D("59500")
    assert engine.best_ticks("BTCUSDT") == (5_900_000, 6_000_000)


def test_engine_needs_known_accounts_and_instruments():
    with pytest.raises(ValueError):
        SimEngine([])
    with pytest.raises(ValueError, match="twice"):
        SimEngine([BTC, BTC])
    engine = SimEngine([BTC])
    engine.open_account("x")
    with pytest.raises(ValueError, match="already exists"):
        engine.open_account("x")
    with pytest.raises(VenueError):
        engine.snapshot("ETHUSDT")
