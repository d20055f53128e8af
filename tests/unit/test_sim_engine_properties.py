"""Properties of the sim matching engine under arbitrary sequences of orders and cancels.

After every operation: the book is not crossed, every asset is conserved
(holdings + fees == deposits), locks back open orders exactly (all checked by
`SimEngine.audit`), every fill is at the maker's price and no worse than
either side's limit, each trade has exactly one buyer and one seller for the
same quantity, and within a price level older orders fill first.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from daemon.messages import Fill, OrderUpdate
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce
from venues.base import OrderRequest, VenueError
from venues.sim.engine import SimEngine

INSTRUMENT = Instrument(
    venue="sim",
    symbol="TSTUSD",
    base="TST",
    quote="USD",
    tick_size=D("0.01"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
)
ACCOUNTS = ("a", "b", "c", "street")  # "street" is unlimited, like the synthetic market

place = st.tuples(
    st.just("place"),
    st.sampled_from(ACCOUNTS),
    st.sampled_from([Side.BUY, Side.SELL]),
    st.sampled_from(["GTC", "IOC", "FOK", "MAKER", "MARKET", "MARKET_QUOTE"]),
    st.integers(min_value=-10, max_value=10),  # ticks around 100.00
    st.integers(min_value=1, max_value=40),  # steps
)
cancel = st.tuples(st.just("cancel"), st.sampled_from(ACCOUNTS), st.integers(min_value=0, max_value=50))
cancel_all = st.tuples(st.just("cancel_all"), st.sampled_from(ACCOUNTS))
operations = st.lists(st.one_of(place, place, place, cancel, cancel_all), min_size=1, max_size=40)


def _request(side: Side, kind: str, offset: int, steps: int, seq: int) -> OrderRequest:
    price = D("100.00") + offset * INSTRUMENT.tick_size
    qty = steps * INSTRUMENT.step_size
    common = {"symbol": "TSTUSD", "client_order_id": f"o{seq}", "side": side}
    if kind == "MARKET":
        return OrderRequest(order_type=OrderType.MARKET, quantity=qty, **common)
    if kind == "MARKET_QUOTE":
        return OrderRequest(order_type=OrderType.MARKET, quote_quantity=qty * 100, **common)
    if kind == "MAKER":
        return OrderRequest(order_type=OrderType.LIMIT_MAKER, quantity=qty, price=price, **common)
    return OrderRequest(
        order_type=OrderType.LIMIT, quantity=qty, price=price, time_in_force=TimeInForce(kind), **common
    )


def _engine() -> SimEngine:
    engine = SimEngine([INSTRUMENT], maker_fee=D("0.001"), taker_fee=D("0.0025"))
    for name in ACCOUNTS[:-1]:
        engine.open_account(name)
        engine.deposit(name, "USD", D("150"))  # small: some orders must be refused
        engine.deposit(name, "TST", D("1.5"))
    engine.open_account("street", unlimited=True, maker_fee=D("0"), taker_fee=D("0.001"))
    return engine


@given(operations)
def test_invariants_hold_after_every_operation(ops):
    engine = _engine()
    fills: list[Fill] = []
    updates: list[OrderUpdate] = []

    def collect(event: object) -> None:
        if isinstance(event, Fill):
            fills.append(event)
        elif isinstance(event, OrderUpdate):
            updates.append(event)

    for name in ACCOUNTS:
        engine.subscribe_account(name, collect)
    limits: dict[str, D | None] = {}  # venue order id -> limit price (None for MARKET)
    opened: dict[str, list[str]] = defaultdict(list)  # account -> venue order ids, in order

    for seq, op in enumerate(ops):
        fills.clear()
        if op[0] == "place":
            _, account, side, kind, offset, steps = op
            request = _request(side, kind, offset, steps, seq)
            try:
                state = engine.place_order(account, request)
            except VenueError:
                continue
            limits[state.venue_order_id] = request.price
            opened[account].append(state.venue_order_id)
        elif op[0] == "cancel":
            _, account, pick = op
            if opened[account]:
                order_id = opened[account][pick % len(opened[account])]
                try:
                    engine.cancel_order(account, "TSTUSD", venue_order_id=order_id)
                except VenueError as exc:
                    assert exc.code == -2011  # only orders that are no longer open
        else:
            engine.cancel_all(op[1], "TSTUSD")

        assert engine.audit() == []

        by_trade: dict[str, list[Fill]] = defaultdict(list)
        for fill in fills:
            by_trade[fill.trade_id].append(fill)
            limit = limits[fill.venue_order_id]
            if limit is not None:
                assert fill.price <= limit if fill.side is Side.BUY else fill.price >= limit
            if fill.is_maker:
                assert fill.price == limit  # makers fill at their own price
        for trade in by_trade.values():
            assert sorted(f.side for f in trade) == [Side.BUY, Side.SELL]
            assert trade[0].qty == trade[1].qty and trade[0].price == trade[1].price
            assert sorted(f.is_maker for f in trade) == [False, True]

        # Time priority: after makers at a price level traded, every order still
        # open at that level on that side is younger (or is the last, partly filled maker).
        for fill in fills:
            if fill.is_maker:
                same_level = [
                    int(o.venue_order_id)
                    for a in ACCOUNTS
                    for o in engine.open_orders(a, "TSTUSD")
                    if o.side is fill.side and o.price == fill.price
                ]
                assert all(i >= int(fill.venue_order_id) for i in same_level)

    # Quantity bookkeeping: every order's final state agrees with the fills it reported.
    final: dict[str, OrderUpdate] = {}
    for update in updates:
        final[update.venue_order_id] = update
    for update in final.values():
        assert 0 <= update.filled_qty <= update.quantity
        if update.status is OrderStatus.FILLED:
            assert update.filled_qty == update.quantity


@given(operations)
def test_cancelling_everything_releases_every_lock(ops):
    engine = _engine()
    for seq, op in enumerate(ops):
        if op[0] != "place":
            continue
        _, account, side, kind, offset, steps = op
        try:
            engine.place_order(account, _request(side, kind, offset, steps, seq))
        except VenueError:
            pass
    for name in ACCOUNTS:
        engine.cancel_all(name, "TSTUSD")
    assert engine.snapshot("TSTUSD", depth=None).bids == ()
    assert engine.snapshot("TSTUSD", depth=None).asks == ()
    for name in ACCOUNTS:
        assert all(b.locked == 0 for b in engine.balances(name, include_zero=True))
    for asset in ("USD", "TST"):
        assert engine.asset_total(asset) == engine.deposited(asset)
    assert engine.audit() == []
