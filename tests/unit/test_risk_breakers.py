"""Breakers of the risk sentinel: each trip, its latch, and the resume that re-arms it."""

import datetime as dt
from decimal import Decimal as D

import numpy as np
import pytest

from actors.risk_breakers import (
    DAILY_LOSS,
    DRAWDOWN,
    REJECTS,
    STALE_DATA,
    SUPERVISOR,
    VAR,
    VENUE_DOWN,
    EquityBreakers,
    trading_day,
)
from actors import risk_checks as rc
from actors.risk_checks import RiskSentinel
from actors.risk_limits import RiskLimits, set_limit
from daemon.analytics import historical_var, parametric_var
from daemon.messages import (
    Approval,
    BreakerTripped,
    Denial,
    FeedStatus,
    OrderIntent,
    OrderUpdate,
    Quote,
    SupervisorGaveUp,
    TradingStateChanged,
    VenueStatus,
)
from daemon.model import Instrument, OrderStatus, OrderType, Side, TradingState

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED
BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.001"))
BNB = Instrument(venue="other", symbol="BNBUSDT", base="BNB", quote="USDT", tick_size=D("0.01"), step_size=D("0.01"))


def utc_ms(*args) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)


NOON = utc_ms(2026, 3, 2, 12, 0)


def sentinel(**changes) -> RiskSentinel:
    limits = RiskLimits(stale_quote_seconds=1e6)
    for key, value in changes.items():
        limits = set_limit(limits, key.replace("__", "."), str(value))
    return RiskSentinel(limits, [BTC, BNB])


def tripped(events, breaker: str) -> BreakerTripped | None:
    return next((e for e in events if isinstance(e, BreakerTripped) and e.breaker == breaker), None)


def quote(venue="sim", symbol="BTCUSDT", ts=0.0) -> Quote:
    return Quote(venue=venue, symbol=symbol, bid=D(100), bid_qty=D(1), ask=D("100.1"), ask_qty=D(1), ts=ts)


def rejected(n: int) -> OrderUpdate:
    return OrderUpdate(
        venue="sim", symbol="BTCUSDT", client_order_id=f"c{n}", status=OrderStatus.REJECTED, side=Side.BUY,
        quantity=D(1), reason="-2010 insufficient balance",
    )  # fmt: skip


def buy(n: int = 1, venue="sim", symbol="BTCUSDT") -> OrderIntent:
    return OrderIntent(
        client_order_id=f"b{n}", exec_id="x", seq=n, venue=venue, symbol=symbol, side=Side.BUY,
        order_type=OrderType.LIMIT, quantity=D(1), price=D(100),
    )  # fmt: skip


# --- daily loss ---------------------------------------------------------------------------


def test_trading_day_starts_at_the_configured_hour():
    assert trading_day(utc_ms(2026, 3, 2, 7, 59), 8) == trading_day(utc_ms(2026, 3, 1, 8, 0), 8)
    assert trading_day(utc_ms(2026, 3, 2, 8, 0), 8) == trading_day(utc_ms(2026, 3, 1, 8, 0), 8) + 1
    assert trading_day(utc_ms(2026, 3, 2, 0, 0), 0) == trading_day(utc_ms(2026, 3, 1, 23, 59), 0) + 1


def test_daily_loss_trips_past_the_limit_and_kills_by_default():
    s = sentinel(daily_loss__limit="100")
    assert s.on_equity(D(1000), NOON, 1.0) == []
    assert s.on_equity(D(900), NOON + 1000, 2.0) == []  # exactly the limit is allowed
    events = s.on_equity(D("899.99"), NOON + 2000, 3.0)
    trip = tripped(events, DAILY_LOSS)
    assert trip is not None and trip.kill is True and trip.action is HALTED
    assert "100.01" in trip.detail
    assert TradingStateChanged(state=HALTED, previous=ACTIVE, reason=trip.detail, by="breaker:daily_loss") in events
    assert s.state is HALTED


def test_daily_loss_latches_when_equity_recovers_and_rearms_on_resume():
    s = sentinel(daily_loss__limit="100", daily_loss__action="halt")
    s.on_equity(D(1000), NOON, 1.0)
    assert tripped(s.on_equity(D(850), NOON, 2.0), DAILY_LOSS).kill is False
    assert s.on_equity(D(1000), NOON, 3.0) == []
    assert s.state is HALTED and s.states.is_latched(DAILY_LOSS)
    s.on_equity(D(850), NOON, 4.0)
    s.resume("alice", "reviewed the loss")
    assert s.state is ACTIVE
    # re-armed from the equity at resume (850): only a further loss of 100 trips again
    assert s.on_equity(D(760), NOON, 5.0) == []
    assert tripped(s.on_equity(D(749), NOON, 6.0), DAILY_LOSS) is not None


def test_daily_loss_reference_rolls_over_at_the_configured_utc_hour():
    s = sentinel(daily_loss__limit="100", day_start_hour_utc="8")
    s.on_equity(D(1000), utc_ms(2026, 3, 2, 7, 0), 1.0)
    assert s.on_equity(D(920), utc_ms(2026, 3, 2, 7, 59), 2.0) == []
    # a new trading day starts at 08:00: the reference becomes 910
    assert s.on_equity(D(910), utc_ms(2026, 3, 2, 8, 0), 3.0) == []
    assert s.equity.day_start_equity == D(910)
    assert s.on_equity(D(811), utc_ms(2026, 3, 2, 9, 0), 4.0) == []
    assert tripped(s.on_equity(D(809), utc_ms(2026, 3, 2, 9, 1), 5.0), DAILY_LOSS) is not None


def test_a_disabled_or_unset_breaker_never_trips():
    s = sentinel(daily_loss__limit="100", daily_loss__enabled="false")
    s.on_equity(D(1000), NOON, 1.0)
    assert s.on_equity(D(1), NOON, 2.0) == []
    s = sentinel()  # no limits set at all
    s.on_equity(D(1000), NOON, 1.0)
    assert s.on_equity(D(1), NOON, 2.0) == []
    assert s.state is ACTIVE


def test_a_limit_set_at_run_time_applies_at_the_next_update():
    s = sentinel()
    s.on_equity(D(1000), NOON, 1.0)
    assert s.on_equity(D(800), NOON, 2.0) == []
    s.replace_limits(set_limit(s.limits, "daily_loss.limit", "150"))
    assert tripped(s.on_equity(D(800), NOON, 3.0), DAILY_LOSS) is not None


# --- drawdown -----------------------------------------------------------------------------


def test_drawdown_from_the_peak():
    s = sentinel(drawdown__limit="0.1", drawdown__action="halt")
    s.on_equity(D(1000), NOON, 1.0)
    s.on_equity(D(1200), NOON, 2.0)  # new peak
    assert s.on_equity(D(1080), NOON, 3.0) == []  # exactly 10 %
    events = s.on_equity(D(1079), NOON, 4.0)
    trip = tripped(events, DRAWDOWN)
    assert trip is not None and trip.action is HALTED and trip.kill is False
    assert "peak 1200" in trip.detail
    assert s.state is HALTED


def test_drawdown_rearms_from_the_equity_at_resume():
    s = sentinel(drawdown__limit="0.1", drawdown__action="reduce")
    s.on_equity(D(1000), NOON, 1.0)
    s.on_equity(D(850), NOON, 2.0)
    assert s.state is REDUCING
    s.resume("alice", "ok")
    assert s.equity.peak == D(850)
    assert s.on_equity(D(800), NOON, 3.0) == []
    assert tripped(s.on_equity(D(760), NOON, 4.0), DRAWDOWN) is not None


# --- VaR ----------------------------------------------------------------------------------


def _returns_curve(returns, start=10_000.0):
    equity = [start]
    for r in returns:
        equity.append(equity[-1] * (1 + r))
    return [D(str(float(e))) for e in equity]


RETURNS = np.array([0.01, -0.02, 0.015, -0.03, 0.005, 0.02, -0.01, 0.0, -0.025, 0.012] * 3)


@pytest.mark.parametrize(("method", "estimate"), [("historical", historical_var), ("parametric", parametric_var)])
@pytest.mark.parametrize("level", [0.95, 0.99])
def test_var_trips_when_the_estimate_exceeds_the_limit(method, estimate, level):
    expected = estimate(RETURNS, level)
    curve = _returns_curve(RETURNS)
    for limit, should_trip in ((expected * 1.01, False), (expected * 0.99, True)):
        s = sentinel(
            var__limit=f"{limit:.6f}", var__method=method, var__level=level, var__min_samples=30,
            var__window=100, var__sample_seconds=1,
        )  # fmt: skip
        events = []
        for i, equity in enumerate(curve):
            events += s.on_equity(equity, NOON, float(i))
        trip = tripped(events, VAR)
        assert (trip is not None) is should_trip
        assert s.equity.var(s.limits) == pytest.approx(expected, rel=1e-6)
        if should_trip:
            assert trip.action is REDUCING and s.state is REDUCING
            assert len(events) == 2  # tripped once, at the 30th return, and latched


def test_var_needs_min_samples_and_samples_at_most_once_per_interval():
    s = sentinel(var__limit="0.0001", var__min_samples=5, var__window=10, var__sample_seconds=60)
    curve = _returns_curve([0.05, -0.05] * 10)
    # many updates inside one sampling interval count once
    for i, equity in enumerate(curve):
        assert s.on_equity(equity, NOON, 10.0 + i) == []
    assert s.equity.sample_count == 1
    events = []
    for i, equity in enumerate(curve[:6]):
        events += s.on_equity(equity, NOON, 100.0 + 60.0 * i)
    # samples at 100..400 give 5 returns after the first one at t=10: the 5th return trips
    assert tripped(events, VAR) is not None
    assert s.equity.sample_count == 7


def test_var_window_keeps_only_the_last_returns():
    s = sentinel(var__limit="0.5", var__min_samples=2, var__window=3, var__sample_seconds=1)
    for i, equity in enumerate(_returns_curve([0.01] * 10)):
        s.on_equity(equity, NOON, float(i))
    assert s.equity.sample_count == 4  # window + 1 equities give `window` returns


def test_resume_restarts_the_var_history():
    s = sentinel(var__limit="0.001", var__min_samples=3, var__window=10, var__sample_seconds=1)
    for i, equity in enumerate(_returns_curve([0.05, -0.05, 0.05, -0.05])):
        s.on_equity(equity, NOON, float(i))
    assert s.states.is_latched(VAR)
    s.resume("alice", "accept")
    assert s.equity.var(s.limits) is None
    assert s.on_equity(D(10_000), NOON, 10.0) == []


# --- rejects ------------------------------------------------------------------------------


def test_too_many_rejects_in_the_window_halts():
    s = sentinel(rejects__max_rejects=3, rejects__window_seconds=10)
    assert s.on_order_update(rejected(1), 100.0) == []
    assert s.on_order_update(rejected(2), 101.0) == []
    assert s.on_order_update(rejected(3), 102.0) == []
    trip = tripped(s.on_order_update(rejected(4), 109.9), REJECTS)
    assert trip is not None and trip.action is HALTED
    assert "-2010" in trip.detail
    assert s.state is HALTED


def test_rejects_spread_beyond_the_window_do_not_trip():
    s = sentinel(rejects__max_rejects=3, rejects__window_seconds=10)
    for i in range(20):
        assert s.on_order_update(rejected(i), 100.0 + 4 * i) == []
    assert s.state is ACTIVE


def test_other_statuses_are_not_rejects():
    s = sentinel(rejects__max_rejects=1)
    for i in range(5):
        update = OrderUpdate(
            venue="sim", symbol="BTCUSDT", client_order_id=f"c{i}", status=OrderStatus.CANCELED, side=Side.BUY, quantity=D(1)
        )
        assert s.on_order_update(update, 1.0) == []


# --- stale data and venues ----------------------------------------------------------------


def test_a_stale_feed_puts_only_its_venue_in_reducing_until_resumed():
    s = sentinel()
    s.on_quote(quote(ts=1.0))
    s.on_quote(quote("other", "BNBUSDT", ts=1.0))
    events = s.on_feed_status(FeedStatus(venue="sim", state="stale", detail="no frame for 12 s"))
    trip = tripped(events, STALE_DATA)
    assert trip is not None and trip.venue == "sim" and trip.action is REDUCING
    assert s.state is ACTIVE and s.state_for("sim") is REDUCING
    assert isinstance(s.check(buy(1), 2.0), Denial)
    assert s.check(buy(1), 2.0).code == rc.TRADING_REDUCING
    assert isinstance(s.check(buy(2, "other", "BNBUSDT"), 2.0), Approval)
    # live again: still latched until an operator resumes the venue
    assert s.on_feed_status(FeedStatus(venue="sim", state="live")) == []
    assert s.state_for("sim") is REDUCING
    s.resume("alice", "feed is back", venue="sim")
    assert isinstance(s.check(buy(3), 2.0), Approval)


def test_quote_silence_from_a_venue_trips_on_tick():
    s = sentinel(stale_data__after_seconds=30)
    s.on_quote(quote(ts=100.0))
    assert s.on_tick(130.0) == []
    trip = tripped(s.on_tick(130.5), STALE_DATA)
    assert trip is not None and trip.venue == "sim"
    assert s.on_tick(200.0) == []  # latched: no repeat
    # after a resume the silence is timed from the resume, not from the last quote
    s.resume("alice", "checked", venue="sim")
    assert s.on_tick(229.0) == []
    assert tripped(s.on_tick(231.0), STALE_DATA) is not None


def test_a_venue_going_down_trips_venue_reducing():
    s = sentinel()
    s.on_quote(quote())
    trip = tripped(s.on_venue_status(VenueStatus(venue="sim", state="banned", detail="418")), VENUE_DOWN)
    assert trip is not None and trip.venue == "sim" and "banned: 418" in trip.detail
    assert s.check(buy(1), 1.0).code == rc.VENUE_DOWN
    s.on_venue_status(VenueStatus(venue="sim", state="up"))
    assert s.check(buy(2), 1.0).code == rc.TRADING_REDUCING
    assert s.on_venue_status(VenueStatus(venue="sim", state="rate_limited")) == []


def test_venue_breakers_can_be_disabled():
    s = sentinel(stale_data__enabled="false", venue_down__enabled="false")
    s.on_quote(quote(ts=0.0))
    assert s.on_feed_status(FeedStatus(venue="sim", state="down")) == []
    assert s.on_venue_status(VenueStatus(venue="sim", state="down")) == []
    assert s.on_tick(1e5) == []
    assert s.state_for("sim") is ACTIVE


def test_a_supervisor_giving_up_asks_for_the_kill():
    s = sentinel()
    events = s.on_supervisor_gave_up(
        SupervisorGaveUp(supervisor="root", restarts=5, period=60.0, last_error="journal: disk full")
    )
    trip = tripped(events, SUPERVISOR)
    assert trip is not None and trip.kill is True and trip.action is HALTED
    assert "disk full" in trip.detail
    assert s.state is HALTED
    assert s.check(buy(1), 1.0).code == rc.TRADING_HALTED


def test_trips_show_in_the_snapshot_with_their_age():
    s = sentinel(rejects__max_rejects=1)
    s.on_order_update(rejected(1), 10.0)
    s.on_order_update(rejected(2), 11.0)
    snap = s.snapshot(16.0)
    assert snap.state is HALTED
    assert [(t.breaker, t.age_seconds) for t in snap.trips] == [(REJECTS, 5.0)]
    breakers = {b.name: b for b in snap.breakers}
    assert breakers[REJECTS].latched is True
    assert breakers[REJECTS].value == D(2)
    assert breakers[DAILY_LOSS].latched is False


def test_equity_breakers_measure_nothing_before_the_first_equity():
    eq = EquityBreakers()
    assert eq.daily_loss is None and eq.drawdown is None
    eq.rearm()
    assert eq.peak is None
