"""Iceberg tips and POV targets, decided from hand-built order views."""

from decimal import Decimal as D

import pytest

from actors.algos import (
    ChildStyle,
    ExecutionParams,
    IcebergParams,
    LiveChild,
    MarketState,
    OrderView,
    PovParams,
    Urgency,
    make_algorithm,
)
from actors.algos.iceberg import Iceberg
from actors.algos.pov import Pov
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("5"), iceberg_allowed=True)
MARKET = MarketState(bid=D("60000.00"), ask=D("60000.01"))


def iceberg(**overrides) -> Iceberg:
    fields = dict(instrument=BTC, side=Side.BUY, quantity=D("1"), limit_price=D("59950.00"),
                  algo=IcebergParams(display=D("0.05"), refill_delay=2.0))
    fields.update(overrides)
    algo = make_algorithm(ExecutionParams(**fields))
    assert isinstance(algo, Iceberg)
    return algo


def tip(cid="t1", qty="0.05", status=OrderStatus.NEW, filled="0"):
    return LiveChild(client_order_id=cid, quantity=D(qty), status=status, placed_at=0.0, filled=D(filled),
                     price=D("59950.00"), style=ChildStyle.PASSIVE)


# --- Iceberg -------------------------------------------------------------------------------


def test_one_tip_of_display_size_rests_at_the_limit():
    decision = iceberg().decide(0.0, MARKET, OrderView())
    (first,) = decision.place
    assert first.quantity == D("0.05") and first.price == D("59950.00")
    assert first.order_type is OrderType.LIMIT and first.time_in_force is TimeInForce.GTC
    assert first.iceberg_qty is None
    assert decision.schedule is None


def test_nothing_more_while_a_tip_is_live_whatever_its_state():
    algo = iceberg()
    for status in (OrderStatus.PENDING_NEW, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNKNOWN,
                   OrderStatus.PENDING_CANCEL):
        decision = algo.decide(10.0, MARKET, OrderView(filled=D("0.01"), live=(tip(status=status, filled="0.01"),),
                                                       sent=1))
        assert decision.place == () and decision.cancel == ()


def test_refill_waits_for_the_delay_after_the_tip_is_done():
    algo = iceberg()
    done = OrderView(filled=D("0.05"), sent=1, last_closed_at=10.0)
    decision = algo.decide(11.0, MARKET, done)
    assert decision.place == () and decision.wake_at == 12.0
    (refill,) = algo.decide(12.0, MARKET, done).place
    assert refill.quantity == D("0.05")


def test_the_last_tip_is_what_is_left():
    (last,) = iceberg().decide(100.0, MARKET, OrderView(filled=D("0.98"), sent=20, last_closed_at=50.0)).place
    assert last.quantity == D("0.02")


def test_randomised_tips_never_show_more_than_display():
    algo = iceberg(size_jitter=0.4, time_jitter=0.4, seed=11)
    sizes = [algo.tip_size(i) for i in range(200)]
    assert max(sizes) <= D("0.05") and min(sizes) >= D("0.03")
    assert len(set(sizes)) > 20
    assert sizes == [iceberg(size_jitter=0.4, time_jitter=0.4, seed=11).tip_size(i) for i in range(200)]
    delays = [algo.refill_delay(i) for i in range(200)]
    assert 1.2 <= min(delays) < max(delays) <= 2.8


def test_native_iceberg_is_one_order_carrying_the_display():
    algo = iceberg(algo=IcebergParams(display=D("0.05"), native=True, max_parts=10))
    (order,) = algo.decide(0.0, MARKET, OrderView()).place
    assert order.quantity == D("0.5")  # at most max_parts tips per venue order
    assert order.iceberg_qty == D("0.05") and order.price == D("59950.00")
    (rest,) = algo.decide(5.0, MARKET, OrderView(filled=D("0.97"), sent=2, last_closed_at=4.0)).place
    assert rest.quantity == D("0.03") and rest.iceberg_qty is None  # smaller than the display: plain limit


# --- POV -----------------------------------------------------------------------------------


def pov(**overrides) -> Pov:
    fields = dict(instrument=BTC, side=Side.BUY, quantity=D("10"), algo=PovParams(rate=0.1, band=0.2),
                  child_style=ChildStyle.CROSS)
    fields.update(overrides)
    algo = make_algorithm(ExecutionParams(**fields))
    assert isinstance(algo, Pov)
    return algo


def at_volume(volume, includes_own=True):
    return MarketState(bid=D("60000.00"), ask=D("60000.01"), volume=D(volume), volume_includes_own=includes_own)


def test_pov_targets_rate_over_one_minus_rate_of_the_others():
    decision = pov().decide(0.0, at_volume("9"), OrderView())
    assert sum(p.quantity for p in decision.place) == D("1")  # 0.1 / 0.9 * 9


def test_pov_takes_its_own_fills_out_of_the_observed_volume():
    # 10 traded, 1 of it ours: others 9, target 1, already done
    assert pov().decide(0.0, at_volume("10"), OrderView(filled=D("1"))).place == ()
    # a source that does not print our fills: the whole volume is the others'
    decision = pov().decide(0.0, at_volume("9", includes_own=False), OrderView(filled=D("0.5")))
    assert sum(p.quantity for p in decision.place) == D("0.5")


def test_pov_working_children_never_push_past_the_upper_band():
    algo = pov(min_child=D("0.5"))
    # target 0.1/0.9*1.8 = 0.2; upper band 0.12/0.88*1.8 = 0.245: a 0.5 child would overshoot
    decision = algo.decide(0.0, at_volume("1.8"), OrderView())
    assert decision.place == () and "minimum child" in decision.note


def test_pov_below_the_band_escalates_per_urgency():
    passive = dict(child_style=ChildStyle.PASSIVE)
    market = MarketState(bid=D("60000.00"), ask=D("60001.00"), volume=D("9"))
    assert {p.style for p in pov(urgency=Urgency.HIGH, **passive).decide(0, market, OrderView()).place} == {
        ChildStyle.CROSS}
    assert {p.style for p in pov(urgency=Urgency.MEDIUM, **passive).decide(0, market, OrderView()).place} == {
        ChildStyle.MID}
    assert {p.style for p in pov(urgency=Urgency.LOW, **passive).decide(0, market, OrderView()).place} == {
        ChildStyle.PASSIVE}
    # inside the band (others 9, target 1, floor 0.78): no escalation
    market = MarketState(bid=D("60000.00"), ask=D("60001.00"), volume=D("9.9"))
    inside = pov(urgency=Urgency.HIGH, **passive).decide(0, market, OrderView(filled=D("0.9")))
    assert {p.style for p in inside.place} == {ChildStyle.PASSIVE}


def test_pov_limit_price_holds():
    decision = pov(limit_price=D("59000.00")).decide(0.0, at_volume("9"), OrderView())
    assert all(p.price <= D("59000.00") for p in decision.place)


def test_pov_without_end_runs_until_done_and_schedule_follows_volume():
    algo = pov()
    assert algo.params.end_time is None
    assert algo.schedule_fraction(0.0, at_volume("50")) == pytest.approx(0.5)
    assert algo.decide(1e9, at_volume("1000"), OrderView(filled=D("10"))).finished is not None
