"""The trading state machine: operator commands, latched trips, per-venue REDUCING."""

import pytest

from actors.risk_state import TradingStateMachine, stricter
from daemon.messages import BreakerTripped, TradingStateChanged
from daemon.model import TradingState

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def test_starts_active_everywhere():
    m = TradingStateMachine()
    assert m.state is ACTIVE
    assert m.state_for("sim") is ACTIVE
    assert m.trips == []


def test_stricter_orders_the_states():
    assert stricter(ACTIVE, REDUCING) is REDUCING
    assert stricter(HALTED, REDUCING) is HALTED
    assert stricter(ACTIVE, ACTIVE) is ACTIVE


def test_operator_commands_produce_one_event_per_change():
    m = TradingStateMachine()
    assert m.halt("alice", "maintenance") == [
        TradingStateChanged(state=HALTED, previous=ACTIVE, reason="maintenance", by="alice")
    ]
    assert m.halt("alice", "again") == []  # no change, nothing to journal
    assert m.reduce("bob", "flatten") == [TradingStateChanged(state=REDUCING, previous=HALTED, reason="flatten", by="bob")]
    assert m.resume("bob", "done") == [TradingStateChanged(state=ACTIVE, previous=REDUCING, reason="done", by="bob")]


@pytest.mark.parametrize("command", ["halt", "reduce", "resume"])
def test_operator_commands_need_who_and_why(command):
    m = TradingStateMachine()
    with pytest.raises(ValueError, match="reason"):
        getattr(m, command)("alice", "  ")
    with pytest.raises(ValueError, match="who"):
        getattr(m, command)("", "because")
    assert m.state is ACTIVE


def test_a_trip_latches_until_resume():
    m = TradingStateMachine()
    events = m.trip("drawdown", "12 % below peak", HALTED, at=5.0)
    assert events == [
        BreakerTripped(breaker="drawdown", detail="12 % below peak", action=HALTED),
        TradingStateChanged(state=HALTED, previous=ACTIVE, reason="12 % below peak", by="breaker:drawdown"),
    ]
    assert m.is_latched("drawdown")
    # the condition persisting does not trip again
    assert m.trip("drawdown", "13 % below peak", HALTED, at=6.0) == []
    assert m.trips[0].detail == "12 % below peak" and m.trips[0].at == 5.0
    m.resume("alice", "reviewed")
    assert m.state is ACTIVE and not m.is_latched("drawdown")
    assert len(m.trip("drawdown", "again", HALTED, at=7.0)) == 2


def test_trips_only_make_the_state_stricter():
    m = TradingStateMachine()
    m.halt("alice", "maintenance")
    events = m.trip("var", "VaR high", REDUCING, at=1.0)
    assert events == [BreakerTripped(breaker="var", detail="VaR high", action=REDUCING)]
    assert m.state is HALTED


def test_reduce_lowers_a_breaker_halt_but_keeps_the_trip_latched():
    m = TradingStateMachine()
    m.trip("daily_loss", "lost 5000", HALTED, at=1.0, kill=True)
    m.reduce("alice", "flatten after the kill")
    assert m.state is REDUCING
    assert m.is_latched("daily_loss")
    assert m.trips[0].kill is True
    # the latched breaker does not re-halt on its own
    assert m.trip("daily_loss", "lost 5100", HALTED, at=2.0) == []
    assert m.state is REDUCING


def test_kill_flag_reaches_the_message():
    m = TradingStateMachine()
    events = m.trip("supervisor", "gave up", HALTED, at=1.0, kill=True)
    assert events[0] == BreakerTripped(breaker="supervisor", detail="gave up", action=HALTED, kill=True)


def test_a_venue_trip_puts_only_that_venue_in_reducing():
    m = TradingStateMachine()
    events = m.trip("stale_data", "no quotes", REDUCING, at=1.0, venue="binance")
    assert events == [
        BreakerTripped(breaker="stale_data", detail="no quotes", action=REDUCING, venue="binance"),
        TradingStateChanged(state=REDUCING, previous=ACTIVE, reason="no quotes", by="breaker:stale_data", venue="binance"),
    ]
    assert m.state is ACTIVE
    assert m.state_for("binance") is REDUCING
    assert m.state_for("sim") is ACTIVE
    assert m.venue_states == {"binance": REDUCING}
    # global halt dominates the venue's own state
    m.halt("alice", "stop")
    assert m.state_for("sim") is HALTED and m.state_for("binance") is HALTED
    assert m.venue_state("binance") is REDUCING


def test_a_venue_cannot_be_halted_on_its_own():
    with pytest.raises(ValueError, match="REDUCING"):
        TradingStateMachine().trip("venue_down", "down", HALTED, at=1.0, venue="binance")


def test_a_venue_resume_clears_only_that_venue():
    m = TradingStateMachine()
    m.trip("stale_data", "a", REDUCING, at=1.0, venue="binance")
    m.trip("venue_down", "b", REDUCING, at=1.0, venue="kraken")
    m.trip("rejects", "c", HALTED, at=1.0)
    events = m.resume("alice", "feed back", venue="binance")
    assert events == [TradingStateChanged(state=ACTIVE, previous=REDUCING, reason="feed back", by="alice", venue="binance")]
    assert m.state_for("binance") is HALTED  # the global halt is still latched
    assert m.venue_state("binance") is ACTIVE and m.venue_state("kraken") is REDUCING
    assert {t.breaker for t in m.trips} == {"venue_down", "rejects"}


def test_a_global_resume_clears_every_trip_and_venue():
    m = TradingStateMachine()
    m.trip("stale_data", "a", REDUCING, at=1.0, venue="binance")
    m.trip("rejects", "c", HALTED, at=1.0)
    events = m.resume("alice", "all clear")
    assert TradingStateChanged(state=ACTIVE, previous=HALTED, reason="all clear", by="alice") in events
    assert TradingStateChanged(state=ACTIVE, previous=REDUCING, reason="all clear", by="alice", venue="binance") in events
    assert m.trips == [] and m.venue_states == {}
    assert m.state_for("binance") is ACTIVE


def test_an_operator_can_put_one_venue_in_reducing():
    m = TradingStateMachine()
    m.reduce("alice", "venue flaky", venue="kraken")
    assert m.state is ACTIVE and m.state_for("kraken") is REDUCING
