"""VWAP: the volume curve, adaptation to observed volume, the participation cap, profiles."""

import math
from decimal import Decimal as D

import pytest

from actors.algos import ExecutionParams, MarketState, OrderView, VwapParams, make_algorithm
from actors.algos.vwap import DAY, Vwap, learn_intraday_profile, profile_from_intraday
from daemon.model import Instrument, Side

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("5"))


def vwap(**algo) -> Vwap:
    params = ExecutionParams(instrument=BTC, side=Side.BUY, quantity=D("1"), duration=1000.0,
                             algo=VwapParams(**algo))
    made = make_algorithm(params)
    assert isinstance(made, Vwap)
    return made


def market(volume="0"):
    return MarketState(bid=D("60000.00"), ask=D("60000.01"), volume=D(volume))


def test_profile_share_is_piecewise_linear_over_equal_buckets():
    algo = vwap(profile=(3.0, 1.0))
    assert algo.profile_share(0.0) == 0.0
    assert algo.profile_share(250.0) == pytest.approx(0.375)
    assert algo.profile_share(500.0) == pytest.approx(0.75)
    assert algo.profile_share(750.0) == pytest.approx(0.875)
    assert algo.profile_share(1000.0) == 1.0 and algo.profile_share(2000.0) == 1.0


def test_target_is_total_times_the_curve_at_the_next_release():
    algo = vwap(profile=(3.0, 1.0), interval=100.0)
    decision = algo.decide(0.0, market(), OrderView())
    assert sum(p.quantity for p in decision.place) == D("0.15")  # U(100) = 0.15
    assert decision.wake_at == 100.0


def test_without_a_forecast_the_observed_volume_does_not_move_the_schedule():
    algo = vwap()
    assert algo.volume_share(500.0, D("0")) == algo.volume_share(500.0, D("1000")) == 0.5


def test_with_a_forecast_the_schedule_follows_observed_volume():
    algo = vwap(expected_volume=D("100"))
    on_forecast = algo.volume_share(500.0, D("50"))
    busy = algo.volume_share(500.0, D("80"))
    quiet = algo.volume_share(500.0, D("20"))
    assert on_forecast == pytest.approx(0.5)
    assert quiet < on_forecast < busy
    assert algo.volume_share(500.0, D("0")) == 0.0  # nothing traded: nothing due
    assert algo.volume_share(1000.0, D("0")) == 1.0  # but everything is due at the end


def test_participation_cap_holds_filled_plus_working_to_the_share_of_others():
    algo = vwap(max_participation=0.2, interval=100.0)
    # others traded 4 BTC: at 20% we may have 1 BTC, but only 0.1 is due
    decision = algo.decide(0.0, market("4"), OrderView())
    assert sum(p.quantity for p in decision.place) == D("0.1")
    # others traded 0.4 BTC (our 0.02 printed too): cap 0.4 * 0.2 / 0.8 = 0.1 of the 0.6 due
    decision = algo.decide(500.0, market("0.42"), OrderView(filled=D("0.02")))
    assert sum(p.quantity for p in decision.place) == D("0.08")
    assert "participation" in decision.note
    # a cap that allows less than half a step waits for more volume
    decision = algo.decide(500.0, market("0.22"), OrderView(filled=D("0.02")))
    assert decision.place == ()


def test_children_are_at_least_half_a_step():
    algo = vwap(interval=100.0, run_ahead=0.0)  # 10 steps of 0.1
    decision = algo.decide(100.0, market(), OrderView(filled=D("0.16")))
    assert decision.place == ()  # 0.04 due, below 0.05
    decision = algo.decide(100.0, market(), OrderView(filled=D("0.14")))
    assert sum(p.quantity for p in decision.place) == D("0.06")
    # with room to run ahead, the small amount due is topped up to half a step
    decision = vwap(interval=100.0, run_ahead=0.5).decide(100.0, market(), OrderView(filled=D("0.16")))
    assert sum(p.quantity for p in decision.place) == D("0.05")


def test_intraday_profile_is_integrated_over_the_horizon():
    hourly = [1.0] * 12 + [3.0] * 12  # the afternoon trades three times as much
    noon = 12 * 3600.0
    # two hours either side of noon, in four buckets
    weights = profile_from_intraday(hourly, start_utc=5 * DAY + noon - 7200.0, duration=14400.0, buckets=4)
    assert weights == pytest.approx((1.0, 1.0, 3.0, 3.0))  # volume in units of one hour's weight


def test_intraday_profile_wraps_around_midnight():
    hourly = [2.0] + [1.0] * 22 + [4.0]
    weights = profile_from_intraday(hourly, start_utc=DAY - 3600.0, duration=7200.0, buckets=2)
    assert weights == pytest.approx((4.0, 2.0))


def test_learned_profile_folds_days_onto_one():
    trades = [(d * DAY + 3600.0 * h + 5.0, D("1") if h < 12 else D("2")) for d in range(3) for h in range(24)]
    learned = learn_intraday_profile(trades, bins=24)
    assert learned == pytest.approx([3.0] * 12 + [6.0] * 12)
    with pytest.raises(ValueError):
        learn_intraday_profile([])
    with pytest.raises(ValueError):
        profile_from_intraday([0.0, 0.0], 0.0, 10.0)


def test_learned_profile_drives_the_schedule():
    hourly = learn_intraday_profile([(3600.0 * h, 1.0 + math.sin(h)) for h in range(24)], bins=24)
    weights = profile_from_intraday(hourly, start_utc=0.0, duration=DAY, buckets=24)
    params = ExecutionParams(instrument=BTC, side=Side.BUY, quantity=D("1"), duration=DAY,
                             algo=VwapParams(profile=weights))
    algo = make_algorithm(params)
    expected = sum(hourly[:6]) / sum(hourly)
    assert algo.schedule_fraction(6 * 3600.0, market()) == pytest.approx(expected)
