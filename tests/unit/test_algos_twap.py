"""TWAP schedule and the shared decision loop (end time, staleness, escalation, rejects)."""

from decimal import Decimal as D

import pytest

from actors.algos import (
    ChildStyle,
    ExecutionParams,
    Finish,
    LiveChild,
    MarketState,
    OrderView,
    TwapParams,
    Urgency,
    amend,
    make_algorithm,
)
from actors.algos.twap import Twap
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("5"))
MARKET = MarketState(bid=D("60000.00"), ask=D("60000.01"))


def twap(**overrides) -> Twap:
    fields = dict(instrument=BTC, side=Side.BUY, quantity=D("1"), duration=3600.0, algo=TwapParams(slices=60))
    fields.update(overrides)
    algo = make_algorithm(ExecutionParams(**fields))
    assert isinstance(algo, Twap)
    return algo


def child(cid="c1", qty="0.01666", *, status=OrderStatus.NEW, placed_at=0.0, price="60000.00",
          style=ChildStyle.PASSIVE, filled="0", tif=None, order_type=OrderType.LIMIT_MAKER):
    return LiveChild(client_order_id=cid, quantity=D(qty), status=status, placed_at=placed_at, filled=D(filled),
                     price=D(price), style=style, time_in_force=tif, order_type=order_type)


def view(filled="0", *live, **kw):
    return OrderView(filled=D(filled), live=tuple(live), sent=len(live), **kw)


def placed(decision):
    return sum((p.quantity for p in decision.place), D(0))


# --- the schedule ----------------------------------------------------------------------


def test_slices_are_even_and_the_last_completes_the_parent():
    algo = twap()
    assert algo.slices == 60 and algo.interval == 60.0
    assert algo.slice_times == tuple(60.0 * i for i in range(60))
    assert algo.fractions[0] == D(1) / D(60) and algo.fractions[-1] == D(1)
    assert list(algo.fractions) == sorted(algo.fractions)


def test_interval_gives_whole_slices_and_the_default_is_one_a_minute():
    assert twap(duration=100.0, algo=TwapParams(interval=30.0)).slice_times == (0.0, 30.0, 60.0)
    assert twap(duration=1800.0, algo=TwapParams()).slices == 30


def test_first_slice_goes_out_at_the_start_and_the_next_is_the_wake_up():
    decision = twap().decide(0.0, MARKET, view())
    assert [p.quantity for p in decision.place] == [D("0.01666")]
    assert decision.place[0].price == D("60000.00") and decision.place[0].style is ChildStyle.PASSIVE
    assert decision.wake_at == 60.0 and decision.schedule == 0.0


def test_rounding_leftovers_are_carried_to_the_next_slice():
    decision = twap().decide(60.0, MARKET, view("0.01666"))
    assert placed(decision) == D("0.01667")  # 2/60 = 0.0333.. rounds to 0.03333


def test_the_last_slice_takes_everything_left():
    decision = twap().decide(3540.0, MARKET, view("0.98334"))
    assert placed(decision) == D("0.01666")
    decision = twap().decide(3540.0, MARKET, view("0.97"))
    assert placed(decision) == D("0.03")


def test_live_children_count_toward_the_slice():
    algo = twap()
    assert algo.decide(30.0, MARKET, view("0", child())).place == ()
    # in flight and UNKNOWN children count as well
    assert algo.decide(30.0, MARKET, view("0", child(status=OrderStatus.PENDING_NEW))).place == ()
    assert algo.decide(30.0, MARKET, view("0", child(status=OrderStatus.UNKNOWN))).place == ()


def test_catch_up_is_bounded_by_k_slices_working():
    algo = twap(algo=TwapParams(slices=60, catch_up=3.0))
    decision = algo.decide(600.0, MARKET, view("0"))  # 11 slices due, nothing done
    assert placed(decision) == D("0.05")  # 3 x 1/60, rounded down
    decision = algo.decide(600.0, MARKET, view("0", child(qty="0.04")))
    assert placed(decision) == D("0.01")


def test_no_run_ahead_beyond_the_tolerance():
    # slice 0.01; the operator wants children of at least 0.012
    loose = twap(algo=TwapParams(slices=100, run_ahead=0.5), min_child=D("0.012"))
    assert placed(loose.decide(0.0, MARKET, view())) == D("0.012")
    tight = twap(algo=TwapParams(slices=100, run_ahead=0.1), min_child=D("0.012"))
    decision = tight.decide(0.0, MARKET, view())
    assert decision.place == () and "minimum child" in decision.note
    assert placed(tight.decide(36.0, MARKET, view())) == D("0.02")


def test_time_and_size_jitter_are_reproducible_and_keep_the_schedule_whole():
    a = twap(time_jitter=0.3, size_jitter=0.3, seed=7)
    b = twap(time_jitter=0.3, size_jitter=0.3, seed=7)
    c = twap(time_jitter=0.3, size_jitter=0.3, seed=8)
    assert a.slice_times == b.slice_times and a.fractions == b.fractions
    assert a.slice_times != c.slice_times and a.fractions != c.fractions
    assert a.slice_times[0] == 0.0 and a.fractions[-1] == D(1)
    assert all(x < y for x, y in zip(a.slice_times, a.slice_times[1:]))
    assert all(x < y for x, y in zip(a.fractions, a.fractions[1:]))
    for i, t in enumerate(a.slice_times):
        assert abs(t - 60.0 * i) <= 0.3 * 60.0 + 1e-9
    for i, f in enumerate(a.fractions):
        assert abs(float(f) - (i + 1) / 60) <= 0.3 / 60 + 1e-9


def test_quote_amount_never_commits_more_than_the_budget():
    algo = twap(quantity=None, quote_amount=D("6000"), algo=TwapParams(slices=10))
    decision = algo.decide(0.0, MARKET, view())
    (child_order,) = decision.place
    assert child_order.quantity == D("0.01")  # 600 USDT at 60000
    assert child_order.quantity * child_order.price <= D("600")


def test_same_inputs_same_decision():
    algo = twap(size_jitter=0.2, time_jitter=0.2, seed=3)
    orders = view("0.1", child(placed_at=500.0))
    assert algo.decide(620.0, MARKET, orders) == algo.decide(620.0, MARKET, orders)


# --- waiting -----------------------------------------------------------------------------


def test_waits_for_the_start_and_for_a_quote():
    algo = twap(start=100.0)
    decision = algo.decide(50.0, MARKET, view())
    assert decision.place == () and decision.wake_at == 100.0
    decision = algo.decide(100.0, MarketState(), view())
    assert decision.place == () and "quote" in decision.note and decision.wake_at == 3700.0


# --- end of the horizon ----------------------------------------------------------------


def test_at_the_end_a_medium_urgency_execution_stops():
    algo = twap(urgency=Urgency.MEDIUM)
    decision = algo.decide(3600.0, MARKET, view("0.9", child("c9", "0.05")))
    assert [c.client_order_id for c in decision.cancel] == ["c9"] and decision.finished is None
    decision = algo.decide(3601.0, MARKET, view("0.9", child("c9", "0.05", status=OrderStatus.PENDING_CANCEL)))
    assert decision.cancel == () and decision.place == ()
    decision = algo.decide(3602.0, MARKET, view("0.92"))
    assert decision.finished is Finish.ENDED and decision.residual == D("0.08")


def test_at_the_end_a_high_urgency_execution_crosses_for_the_rest():
    algo = twap(urgency=Urgency.HIGH, end_overrun=30.0)
    decision = algo.decide(3600.0, MARKET, view("0.9", child("c9", "0.05")))
    assert [c.client_order_id for c in decision.cancel] == ["c9"] and decision.place == ()
    decision = algo.decide(3601.0, MARKET, view("0.92"))
    (sweep,) = decision.place
    assert sweep.quantity == D("0.08") and sweep.time_in_force is TimeInForce.IOC
    assert sweep.style is ChildStyle.CROSS and sweep.price > MARKET.ask
    assert decision.wake_at == 3630.0
    ioc = child("c10", "0.08", price=str(sweep.price), style=ChildStyle.CROSS, tif=TimeInForce.IOC,
                order_type=OrderType.LIMIT)
    assert algo.decide(3601.5, MARKET, view("0.92", ioc)).place == ()
    decision = algo.decide(3630.0, MARKET, view("0.95"))
    assert decision.finished is Finish.ENDED and decision.residual == D("0.05")


def test_finishing_respects_the_limit():
    algo = twap(urgency=Urgency.HIGH, limit_price=D("59990.00"))
    decision = algo.decide(3600.0, MARKET, view("0.9"))
    assert decision.place == () and "limit" in decision.note


# --- staleness, limit, escalation ------------------------------------------------------


def test_a_resting_child_off_the_touch_is_replaced_after_replace_after():
    algo = twap(replace_after=15.0)
    old = child(price="59999.00", placed_at=0.0)
    decision = algo.decide(10.0, MARKET, view("0", old))
    assert decision.cancel == () and decision.wake_at == 15.0
    decision = algo.decide(15.0, MARKET, view("0", old))
    assert [c.client_order_id for c in decision.cancel] == ["c1"] and "stale" in decision.cancel[0].reason
    # the replacement waits until the cancel is confirmed: the old child still counts
    assert decision.place == ()


def test_a_child_at_the_touch_is_left_alone():
    decision = twap().decide(50.0, MARKET, view("0", child(price="60000.00")))
    assert decision.cancel == ()


def test_children_beyond_a_new_limit_are_cancelled_at_once():
    algo = twap(limit_price=D("61000"))
    algo = make_algorithm(amend(algo.params, limit_price=D("59000")))
    decision = algo.decide(1.0, MARKET, view("0", child(price="60000.00", placed_at=0.5)))
    assert [c.reason for c in decision.cancel] == ["priced beyond the limit"]


def test_in_flight_and_unknown_children_are_never_replaced_as_stale():
    algo = twap()
    for status in (OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN, OrderStatus.PENDING_CANCEL):
        decision = algo.decide(100.0, MARKET, view("0", child(price="59000.00", status=status)))
        assert decision.cancel == ()


@pytest.mark.parametrize(
    ("urgency", "style"),
    [(Urgency.LOW, ChildStyle.PASSIVE), (Urgency.MEDIUM, ChildStyle.MID), (Urgency.HIGH, ChildStyle.CROSS)],
)
def test_escalation_when_behind_follows_urgency(urgency, style):
    algo = twap(urgency=urgency, algo=TwapParams(slices=60, catch_up=10.0))
    market = MarketState(bid=D("60000.00"), ask=D("60001.00"))
    decision = algo.decide(180.0, market, view("0"))  # 4 slices due, none filled: 3 behind
    assert {p.style for p in decision.place} == {style}


def test_escalating_cancels_less_aggressive_children_without_waiting():
    algo = twap(urgency=Urgency.HIGH, algo=TwapParams(slices=60, catch_up=10.0))
    decision = algo.decide(180.0, MARKET, view("0", child(qty="0.06666", placed_at=179.0, price="59999.00")))
    assert len(decision.cancel) == 1 and "escalating" in decision.cancel[0].reason


# --- rejects -----------------------------------------------------------------------------


def test_backs_off_after_rejects_and_fails_after_too_many():
    algo = twap(reject_backoff=1.0, max_rejects=3)
    decision = algo.decide(11.0, MARKET, view("0", rejects_in_row=2, last_reject_at=10.0))
    assert decision.place == () and decision.wake_at == 12.0 and "backing off" in decision.note
    assert algo.decide(12.0, MARKET, view("0", rejects_in_row=2, last_reject_at=10.0)).place
    decision = algo.decide(13.0, MARKET, view("0", child(), rejects_in_row=3, last_reject_at=12.0))
    assert decision.finished is None and len(decision.cancel) == 1
    decision = algo.decide(14.0, MARKET, view("0", rejects_in_row=3, last_reject_at=12.0))
    assert decision.finished is Finish.FAILED and decision.residual == D("1")


# --- completion --------------------------------------------------------------------------


def test_filled_parent_is_finished():
    decision = twap().decide(100.0, MARKET, view("1"))
    assert decision.finished is Finish.FILLED and decision.residual == 0


def test_dust_below_the_venue_minimum_finishes_the_parent():
    decision = twap().decide(100.0, MARKET, view("0.99995"))  # 0.00005 BTC is under 5 USDT
    assert decision.finished is Finish.FILLED and decision.residual == D("0.00005")


def test_cancel_all_skips_children_already_being_cancelled():
    algo = twap()
    orders = view("0", child("a"), child("b", status=OrderStatus.PENDING_CANCEL),
                  child("c", status=OrderStatus.UNKNOWN))
    decision = algo.cancel_all(orders, "paused by the operator")
    assert [c.client_order_id for c in decision.cancel] == ["a", "c"]
    assert decision.place == () and decision.finished is None


def test_dust_is_judged_at_the_price_a_child_would_get():
    # 0.00009 BTC is 5.4 USDT at the 60 000 mid, but a passive buy rests at the 55 000 bid: 4.95 USDT
    market = MarketState(bid=D("55000.00"), ask=D("65000.00"))
    decision = twap().decide(100.0, market, view("0.99991"))
    assert decision.finished is Finish.FILLED and decision.residual == D("0.00009")
