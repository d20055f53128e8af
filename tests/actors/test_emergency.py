"""The emergency stop on MockClock, with fake gateways: parallel, bounded, retried, reported, shielded."""

from decimal import Decimal as D

import trio

from daemon import topics
from daemon.emergency import GRACE
from daemon.health import Level
from daemon.messages import Approval, Denial, KillReport, OrderIntent, TradingStateChanged
from daemon.model import OrderStatus, OrderType, Side, TimeInForce, TradingState
from risk_fakes import (
    BrokenGateway,
    FakeExecutions,
    FakeGateway,
    FakeVenue,
    HangingGateway,
    fill,
    intent,
    logged,
    settle,
    start_rig,
    update,
)

DEADLINE = 10.0  # the default [daemon] kill_deadline


def with_gateways(rig, **gateways):
    rig.daemon.services["gateways"] = gateways
    return gateways


async def test_every_venue_is_cancelled_in_parallel_with_retries_and_a_full_report(nursery, autojump_clock):
    rig = await start_rig(nursery)
    slow = FakeVenue("slow", 30, latency=1.0)
    flaky = FakeVenue("flaky", 40, cancel_failures=1)  # the first cancel-all answers 503
    limited = FakeVenue("limited", 30, rate_limited=1, retry_after=0.5)  # the first query answers 429
    gws = with_gateways(rig, slow=FakeGateway(slow), flaky=FakeGateway(flaky), limited=FakeGateway(limited))

    report = await rig.emergency.run("runaway algo", by="alice")

    assert isinstance(report, KillReport) and report.complete
    by_venue = {v.venue: v for v in report.venues}
    assert sorted(by_venue) == ["flaky", "limited", "slow"]
    for name, venue, count in (("slow", slow, 30), ("flaky", flaky, 40), ("limited", limited, 30)):
        assert venue.open == {}  # the venue's own book: nothing of ours is open
        assert by_venue[name].cancelled == count and by_venue[name].verified and by_venue[name].still_open == ()
        assert by_venue[name].error == ""
    assert by_venue["flaky"].attempts >= 2  # the cancel-all that failed was tried again
    # limited waited out the venue's retry_after before asking again
    (first_query, t0), (_, t1) = [c for c in limited.calls if c[0] == "open_orders"][:2]
    assert t1 - t0 >= 0.5
    # parallel: every gateway had started before any finished
    assert max(g.started_at for g in gws.values()) < min(g.finished_at for g in gws.values())
    assert report.elapsed < sum(g.finished_at - g.started_at for g in gws.values())
    assert logged("kill.done", "reason=\"runaway algo\" by=alice venues=3 cancelled=100 still_open=0")


async def test_a_venue_that_never_empties_is_reported_with_its_ids_at_the_deadline(nursery, autojump_clock):
    rig = await start_rig(nursery)
    stuck = FakeVenue("stuck", 5, stuck=("stuck-a", "stuck-b"))
    fine = FakeVenue("fine", 5)
    with_gateways(rig, stuck=FakeGateway(stuck), fine=FakeGateway(fine))
    started = trio.current_time()

    report = await rig.emergency.run("test", by="alice", deadline=3.0)

    assert trio.current_time() - started <= 3.0 + GRACE
    assert not report.complete
    stuck_report, fine_report = sorted(report.venues, key=lambda v: v.venue != "stuck")
    assert stuck_report.still_open == ("stuck-a", "stuck-b") and not stuck_report.verified
    assert stuck_report.cancelled == 5 and stuck_report.attempts > 2 and "still open" in stuck_report.error
    assert fine_report.verified and fine_report.still_open == () and fine.open == {}
    assert logged("kill.venue", "venue=stuck cancelled=5 still_open=2 open_ids=stuck-a,stuck-b")
    assert logged("kill.done", "complete=false")


async def test_a_gateway_that_hangs_or_raises_gets_an_error_report_and_the_kill_stays_bounded(nursery, autojump_clock):
    rig = await start_rig(nursery)
    ok = FakeVenue("ok", 3)
    with_gateways(rig, hangs=HangingGateway(), broken=BrokenGateway(), ok=FakeGateway(ok))
    started = trio.current_time()

    report = await rig.emergency.run("test", by="alice", deadline=2.0)

    assert trio.current_time() - started <= 2.0 + 2 * GRACE
    by_venue = {v.venue: v for v in report.venues}
    assert not by_venue["hangs"].verified and "no answer within the deadline" in by_venue["hangs"].error
    assert not by_venue["broken"].verified and "ConnectionError: gateway crashed mid-kill" in by_venue["broken"].error
    assert by_venue["ok"].verified and ok.open == {}
    assert not report.complete
    assert logged("kill.done", "unverified=broken,hangs")


async def test_halted_refuses_new_orders_from_the_first_instant_of_the_kill(nursery, autojump_clock):
    rig = await start_rig(nursery)
    executions = FakeExecutions(count=3)
    executions.risk = rig.risk
    rig.daemon.services["executions"] = executions
    venue = FakeVenue("sim", 4)
    gateway = FakeGateway(venue)
    answers = []

    async def try_an_order():  # a scheduler that did not stop yet, mid-kill
        answers.append(await rig.submit(intent(qty="0.1")))

    gateway.during = try_an_order
    with_gateways(rig, sim=gateway)

    report = await rig.emergency.run("halt test", by="alice")

    assert executions.calls == [("stop_all", "halt test")] and executions.state_when_called is TradingState.HALTED
    assert report.executions_stopped == 3
    assert isinstance(answers[0], Denial) and answers[0].code == "TRADING_HALTED"
    await settle()
    assert rig.gateways["sim"].received == []  # nothing reached the gateway's order inbox


async def test_executions_that_do_not_stop_in_time_do_not_hold_up_the_cancels(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.daemon.services["executions"] = FakeExecutions(hang=True)
    venue = FakeVenue("sim", 2)
    with_gateways(rig, sim=FakeGateway(venue))
    report = await rig.emergency.run("test", by="alice", deadline=4.0)
    assert report.complete and venue.open == {} and report.executions_stopped == 0
    assert report.elapsed <= 4.0
    assert logged("kill.executions_slow")


async def test_a_cancelled_kill_still_finishes_cancelling_within_its_deadline(nursery, autojump_clock):
    rig = await start_rig(nursery)
    slow = FakeVenue("slow", 10, latency=1.5)
    with_gateways(rig, slow=FakeGateway(slow))
    outcome = {}

    async def operator():
        with trio.CancelScope() as scope:
            outcome["scope"] = scope
            await rig.emergency.run("client goes away", by="alice")
            outcome["returned"] = True

    nursery.start_soon(operator)
    await trio.sleep(1.0)
    outcome["scope"].cancel()  # e.g. the control connection dropped
    cancelled_at = trio.current_time()
    assert slow.open  # still cancelling ...
    while rig.emergency.running:
        await trio.sleep(0.1)
    assert slow.open == {}  # ... and it finished the job despite the cancel
    assert trio.current_time() - cancelled_at <= DEADLINE + 2 * GRACE
    assert rig.risk.state is TradingState.HALTED
    assert rig.journal.of(KillReport)[-1].complete  # journaled on the way out
    assert logged("kill.done", "reason=\"client goes away\"")


async def test_a_cancelled_kill_with_a_hanging_gateway_is_still_bounded(nursery, autojump_clock):
    rig = await start_rig(nursery)
    with_gateways(rig, hangs=HangingGateway())
    started = trio.current_time()
    with trio.move_on_after(0.5):
        await rig.emergency.run("test", by="alice", deadline=3.0)
    assert trio.current_time() - started <= 3.0 + 2 * GRACE  # the shield has a deadline
    report = rig.emergency.last_report
    assert report.venues[0].error and not report.complete


async def test_the_kill_is_journaled_logged_and_shown_until_resume(nursery, autojump_clock):
    rig = await start_rig(nursery)
    with_gateways(rig, sim=FakeGateway(FakeVenue("sim", 2)))
    report = await rig.emergency.run("drill", by="alice")
    await rig.risk.drain()
    assert rig.journal.of(KillReport) == [report]
    halted = [e for e in rig.journal.of(TradingStateChanged) if e.state is TradingState.HALTED]
    assert halted[0].by == "alice" and halted[0].reason == "kill: drill"
    assert logged("kill.started", "reason=drill by=alice")
    assert rig.daemon.notifier.last_status.startswith("HALTED by kill (drill): 2 cancelled, 0 still open")
    level, reasons = rig.daemon.health.summary()
    assert level is Level.CRITICAL and rig.daemon.trading_state is TradingState.HALTED
    snapshot = rig.risk.snapshot()
    assert snapshot["emergency"] == "drill" and snapshot["state"] == "HALTED"
    rig.risk.resume("alice", "drill over")
    assert rig.daemon.health.summary()[0] is Level.HEALTHY and rig.risk.snapshot()["emergency"] is None


async def test_flatten_closes_positions_through_the_risk_path_and_halts_again(nursery, autojump_clock):
    rig = await start_rig(nursery, fill_market=True)
    long = intent(qty="0.5")
    assert isinstance(await rig.submit(long), Approval)
    await rig.publish(topics.FILL, fill(long, "0.5"))
    await rig.publish(topics.ORDER_UPDATE, update(long, OrderStatus.FILLED, "0.5"))
    short = intent(Side.SELL, qty="2", price="10", symbol="ETHUSDT", venue="other")
    assert isinstance(await rig.submit(short), Approval)
    await rig.publish(topics.FILL, fill(short, "2", "10"))
    await rig.publish(topics.ORDER_UPDATE, update(short, OrderStatus.FILLED, "2"))
    with_gateways(rig, sim=FakeGateway(FakeVenue("sim", 1)), other=FakeGateway(FakeVenue("other", 1)))

    report = await rig.emergency.run("flatten", by="alice", flatten=True)
    await settle()

    assert report.complete
    flat = {(f.venue, f.symbol): f for f in report.flattened}
    assert flat[("sim", "BTCUSDT")].quantity == D("0.5") and flat[("sim", "BTCUSDT")].outcome.startswith("filled 0.5")
    assert flat[("other", "ETHUSDT")].quantity == D(-2) and flat[("other", "ETHUSDT")].outcome.startswith("filled 2")
    sent = [m for g in rig.gateways.values() for m in g.received if isinstance(m, OrderIntent) and m.reduce_only]
    assert {(m.side, m.quantity, m.order_type, m.time_in_force) for m in sent} == {
        (Side.SELL, D("0.5"), OrderType.MARKET, TimeInForce.IOC),
        (Side.BUY, D(2), OrderType.MARKET, TimeInForce.IOC),
    }
    assert rig.risk.sentinel.book.position(("sim", "BTCUSDT")) == 0
    assert rig.risk.sentinel.book.position(("other", "ETHUSDT")) == 0
    assert rig.risk.state is TradingState.HALTED
    await rig.risk.drain()
    states = [e.state for e in rig.journal.of(TradingStateChanged) if e.venue is None]
    assert states == [TradingState.HALTED, TradingState.REDUCING, TradingState.HALTED]


async def test_a_flatten_the_risk_checks_refuse_is_reported_not_forced(nursery, autojump_clock):
    rig = await start_rig(nursery, fill_market=True)
    long = intent(qty="0.5")
    assert isinstance(await rig.submit(long), Approval)
    await rig.publish(topics.FILL, fill(long, "0.5"))
    await rig.publish(topics.ORDER_UPDATE, update(long, OrderStatus.FILLED, "0.5"))
    await trio.sleep(20)  # the quote is stale now: a market order cannot be priced
    report = await rig.emergency.run("flatten", by="alice", flatten=True)
    (entry,) = report.flattened
    assert entry.outcome.startswith("denied STALE_MARKET_DATA")
    assert rig.risk.sentinel.book.position(("sim", "BTCUSDT")) == D("0.5")
    assert rig.risk.state is TradingState.HALTED
    assert logged("kill.flatten_refused", f"cid={entry.client_order_id}")


async def test_daemon_emergency_stop_and_breakers_use_the_same_procedure(nursery, autojump_clock):
    rig = await start_rig(nursery)
    venue = FakeVenue("sim", 3)
    with_gateways(rig, sim=FakeGateway(venue))
    assert rig.daemon.emergency_hooks == [rig.emergency.hook]
    report = await rig.daemon.emergency_stop("second SIGINT")
    assert isinstance(report, KillReport) and report.by == "daemon" and report.reason == "second SIGINT"
    assert venue.open == {} and rig.risk.state is TradingState.HALTED


async def test_two_kills_at_once_both_halt_and_run_one_after_the_other(nursery, autojump_clock):
    rig = await start_rig(nursery)
    venue = FakeVenue("sim", 3, latency=0.5)
    with_gateways(rig, sim=FakeGateway(venue))
    reports = []

    async def kill(who):
        reports.append(await rig.emergency.run("twice", by=who))

    async with trio.open_nursery() as both:
        both.start_soon(kill, "alice")
        both.start_soon(kill, "breaker:rejects")
    assert [r.complete for r in reports] == [True, True]
    assert sorted(r.venues[0].cancelled for r in reports) == [0, 3]
