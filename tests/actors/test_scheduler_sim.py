"""Schedulers on the in-process sim venue (real gateway and feed) under MockClock.

Each test runs an execution against the synthetic market for up to an hour
of trio time and checks what the venue and the bus saw: fills, orders,
state changes.
"""

from __future__ import annotations

from decimal import Decimal as D

import trio

from actors.executions import IdArgs
from actors.scheduler import ExecState
from daemon.messages import Fill, MarketTrade, OrderUpdate
from exec_fakes import WALL0, World
from venues.sim.config import BTCUSDT, SimAccountConfig, SimConfig
from venues.sim.market import volume_curve

RICH = (SimAccountConfig(name="demo", balances={"USDT": D("10000000"), "BTC": D("100")}),)
# One instrument and a 2 s market step keep an hour of market cheap.
FAST = SimConfig(seed=11, start_ms=int(WALL0 * 1000), instruments=(BTCUSDT,), market_step=2.0, accounts=RICH)


def cumulative(points: list[tuple[float, D]], at: float) -> D:
    return sum((q for t, q in points if t <= at), D(0))


async def test_a_1_btc_twap_over_an_hour_completes_on_schedule_with_exactly_1_btc(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    exec_id = await w.submit(algo="twap", quantity="1", duration="1h", style="cross")
    start = w.scheduler(exec_id).params.start
    assert await w.wait_final(exec_id, timeout=3700) is ExecState.COMPLETED

    fills = [(t, f.qty) for t, f in w.tape.of(Fill, exec_id)]
    assert sum(q for _, q in fills) == D("1")
    assert all(start <= t <= start + 3600 for t, _ in fills)
    # 60 slices of 1/60 BTC, one a minute: the fills keep to the plan within one slice
    slice_ = D(1) / 60
    for k in range(60):
        due = D(k + 1) / 60
        assert abs(cumulative(fills, start + 60 * k + 30) - due) <= slice_, k
    # nothing is sent before its slice
    for t, intent in w.intents(exec_id):
        k = int((t - start) // 60)
        assert intent.quantity <= 3 * slice_ + D("0.00001")  # the catch-up bound
        assert k < 60
    record = await w.journal.execution(exec_id)
    assert record.state == "COMPLETED"
    report = record.checkpoint.algo_state["report"]
    assert abs(report["filled"] - 1.0) < 1e-9 and abs(report["fill_rate"] - 1.0) < 1e-9
    assert set(report["shortfall"]) >= {"delay_bps", "trading_bps", "opportunity_bps", "fees_bps", "total_bps"}


async def test_vwap_follows_the_market_volume_curve(nursery, autojump_clock, tmp_path):
    # a 2 h session: the hour traded is busy at first and quiet later
    sim = SimConfig(
        seed=5, start_ms=int(WALL0 * 1000), instruments=(BTCUSDT,), market_step=2.0, session_seconds=7200.0, accounts=RICH
    )
    w = World(tmp_path, sim=sim)
    await w.start(nursery)
    buckets = 12
    profile = [
        sum(volume_curve((b + (i + 0.5) / 10) / buckets / 2, sim.volume_floor) for i in range(10)) for b in range(buckets)
    ]
    exec_id = await w.submit(algo="vwap", quantity="2", duration="1h", style="cross", profile=profile, interval="1m")
    start = w.scheduler(exec_id).params.start
    assert await w.wait_final(exec_id, timeout=3700) is ExecState.COMPLETED

    fills = [(t, f.qty) for t, f in w.tape.of(Fill, exec_id)]
    assert sum(q for _, q in fills) == D("2")
    trades = [(t, m.qty) for t, m in w.tape.of(MarketTrade) if start <= t <= start + 3600]
    total = sum(q for _, q in trades)
    worst = 0.0
    for minute in range(5, 60, 5):
        at = start + 60 * minute
        ours = float(cumulative(fills, at) / 2)
        market = float(cumulative(trades, at) / total)
        worst = max(worst, abs(ours - market))
    assert worst < 0.1, worst
    # and it is not simply linear: the first half of the hour carries more than half the volume
    assert cumulative(fills, start + 1800) > D("1.1")


async def test_an_iceberg_never_shows_more_than_its_display(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    quote = await w.quote()
    limit = (quote.mid + D("20")).quantize(D("0.01"))  # a little through the mid: tips trade steadily
    exec_id = await w.submit(algo="iceberg", quantity="0.3", display="0.03", limit=str(limit), refill_delay="5s")
    state = await w.wait_final(exec_id, timeout=3600)
    assert state is ExecState.COMPLETED

    shown: dict[str, D] = {}
    for _, update in w.tape.of(OrderUpdate, exec_id):
        if update.status.is_final:
            shown.pop(update.client_order_id, None)
        else:
            shown[update.client_order_id] = update.quantity - update.filled_qty
        assert sum(shown.values(), D(0)) <= D("0.03")
    intents = [i for _, i in w.intents(exec_id)]
    assert len(intents) >= 10 and all(i.quantity <= D("0.03") and i.price == limit for i in intents)
    assert sum(f.qty for _, f in w.tape.of(Fill, exec_id)) == D("0.3")


async def test_pov_stays_within_its_participation_band(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    exec_id = await w.submit(algo="pov", quantity="10", rate=0.1, band=0.2, style="cross", min_child="0.01")
    start = w.scheduler(exec_id).params.start
    await trio.sleep(1200)
    await w.manager.call("cancel", IdArgs(id=exec_id), "test")
    assert await w.wait_final(exec_id, timeout=60) is ExecState.CANCELLED

    fills = [(t, f.qty) for t, f in w.tape.of(Fill, exec_id)]
    trades = [(t, m.qty) for t, m in w.tape.of(MarketTrade) if t >= start]
    shares = []
    for minute in range(3, 20):
        at = start + 60 * minute
        ours, market = cumulative(fills, at), cumulative(trades, at)
        shares.append(float(ours / market))
    assert all(0.1 * 0.8 <= share <= 0.1 * 1.2 for share in shares), shares


async def test_cancel_mid_way_leaves_no_working_child(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    below = ((await w.quote()).bid - D("300")).quantize(D("0.01"))  # children rest at the limit, unfilled
    exec_id = await w.submit(algo="twap", quantity="1", duration="1h", style="passive", slices=12, limit=str(below))
    await trio.sleep(600)
    scheduler = w.scheduler(exec_id)
    assert scheduler.state is ExecState.RUNNING
    assert await w.open_at_venue(exec_id), "a passive child should be resting at the venue"
    answer = await w.manager.call("cancel", IdArgs(id=exec_id, reason="changed my mind"), "test")
    assert answer["id"] == exec_id
    assert await w.wait_final(exec_id, timeout=60) is ExecState.CANCELLED
    assert await w.open_at_venue(exec_id) == []
    assert scheduler.ledger.live() == []
    record = await w.journal.execution(exec_id)
    assert record.state == "CANCELLED"
    assert record.checkpoint.algo_state["report"]["fill_rate"] < 1
    last_change = w.tape.states(exec_id)[-1][1]
    assert last_change.state == "CANCELLED" and last_change.by == "test" and "changed my mind" in last_change.reason


async def test_a_volatility_spike_pauses_the_execution_and_calm_resumes_it(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    exec_id = await w.submit(algo="twap", quantity="1", duration="40m", style="cross")
    await trio.sleep(600)
    w.world.market.force_spike("BTCUSDT", 0.03)
    assert await w.wait_final(exec_id, timeout=3000) is ExecState.COMPLETED

    changes = [(t, c) for t, c in w.tape.states(exec_id)]
    paused = [(t, c) for t, c in changes if c.state == "PAUSED"]
    resumed = [(t, c) for t, c in changes if c.state == "RUNNING" and c.previous == "PAUSED"]
    assert len(paused) == 1 and paused[0][1].by == "volatility" and "bps" in paused[0][1].reason
    assert len(resumed) == 1 and resumed[0][1].by == "volatility"
    t_pause, t_resume = paused[0][0], resumed[0][0]
    assert 600 < t_pause - w.scheduler(exec_id).params.start < 620
    assert t_resume - t_pause >= 30  # calm for calm_for seconds first
    assert not [i for t, i in w.intents(exec_id) if t_pause < t < t_resume]
    assert sum(f.qty for _, f in w.tape.of(Fill, exec_id)) == D("1")


async def test_a_resumed_execution_never_reuses_a_client_order_id(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    exec_id = await w.submit(algo="twap", quantity="0.5", duration="30m", style="passive", slices=30)
    await trio.sleep(600)
    # a crash between intents and their checkpoints: the journal keeps intents, loses checkpoints
    w.journal.drop_checkpoints = True
    await trio.sleep(300)
    w.stop_manager()
    await trio.sleep(30)  # the daemon is down; resting children stay at the venue
    before = [i.seq for i in await w.journal.intents(exec_id)]
    assert before == [i.seq for _, i in w.intents(exec_id)]
    w.journal.drop_checkpoints = False
    record = await w.journal.execution(exec_id)
    assert record.state == "RUNNING" and record.checkpoint.next_seq <= max(before)

    await w.start_manager()
    resumed = w.scheduler(exec_id)
    assert resumed.recovery.from_journal
    assert resumed.ledger.next_seq == max(before) + 1
    assert await w.wait_final(exec_id, timeout=2000) is ExecState.COMPLETED

    cids = [i.client_order_id for _, i in w.intents(exec_id)]
    assert len(cids) == len(set(cids)) and not w.approver.duplicates
    after = [i.seq for _, i in w.intents(exec_id)][len(before) :]
    assert after and min(after) > max(before)
    assert sum(f.qty for _, f in w.tape.of(Fill, exec_id)) == D("0.5")


async def test_on_restart_interrupt_cancels_the_children_and_an_operator_resumes_later(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    below = ((await w.quote()).bid - D("300")).quantize(D("0.01"))
    exec_id = await w.submit(algo="twap", quantity="0.5", duration="30m", style="passive", slices=10, limit=str(below))
    await trio.sleep(400)
    assert await w.open_at_venue(exec_id)
    w.stop_manager()
    await trio.sleep(5)
    from daemon.config import parse

    w.daemon.config = parse("[executions]\non_restart = 'interrupt'\n", "test.toml")
    manager = await w.start_manager()
    await trio.sleep(5)
    assert (await w.journal.execution(exec_id)).state == "INTERRUPTED"
    assert await w.open_at_venue(exec_id) == []
    assert exec_id not in manager.schedulers

    shown = await manager.show(exec_id)
    assert shown["state"] == "INTERRUPTED"
    answer = await manager.call("resume", IdArgs(id=exec_id), "operator")
    assert answer["state"] in ("RUNNING", "PENDING")
    assert await w.wait_final(exec_id, timeout=2000) is ExecState.COMPLETED
    states = [c.state for _, c in w.tape.states(exec_id)]
    assert states[-3:] == ["INTERRUPTED", "RUNNING", "COMPLETED"]
    cids = [i.client_order_id for _, i in w.intents(exec_id)]
    assert len(cids) == len(set(cids))


async def test_operator_pause_resume_amend_and_the_kill(nursery, autojump_clock, tmp_path):
    w = World(tmp_path, sim=FAST)
    await w.start(nursery)
    exec_id = await w.submit(algo="twap", quantity="1", duration="1h", style="passive", slices=20)
    await trio.sleep(400)
    m = w.manager
    paused = await m.call("pause", IdArgs(id=exec_id, reason="lunch"), "alice")
    assert paused["state"] == "PAUSED" and paused["pause_cause"] == "operator"
    t_pause = trio.current_time()
    await trio.sleep(300)
    assert await w.open_at_venue(exec_id) == []
    assert not [i for t, i in w.intents(exec_id) if t > t_pause]
    resumed = await m.call("resume", IdArgs(id=exec_id), "alice")
    assert resumed["state"] == "RUNNING"

    from actors.executions import AmendArgs
    from daemon.control import CommandError

    quote = m.stats[("sim", "BTCUSDT")].quote
    low = (quote.bid - D("500")).quantize(D("0.01"))
    amended = await m.amend(AmendArgs(id=exec_id, limit=str(low), end="+20m"), "alice")
    assert D(amended["limit_price"]) == low
    await trio.sleep(60)
    t_amended = trio.current_time() - 55
    assert all(i.price <= low for t, i in w.intents(exec_id) if t > t_amended)
    try:
        await m.amend(AmendArgs(id=exec_id, limit="1.234"), "alice")
    except CommandError as exc:
        assert exc.code == "bad_args" and exc.message.startswith("limit:")
    else:
        raise AssertionError("a limit off the tick grid must be refused")

    resting = await w.open_at_venue(exec_id)
    stopped = await m.stop_all("test kill")
    assert stopped == 1
    assert w.scheduler(exec_id).state is ExecState.CANCELLED
    assert w.tape.states(exec_id)[-1][1].by == "kill"
    # the scheduler sends nothing on a kill, not even cancels: the kill procedure cancels at the venues
    assert [o.client_order_id for o in await w.open_at_venue(exec_id)] == [o.client_order_id for o in resting]
    try:
        await m.call("pause", IdArgs(id=exec_id), "alice")
    except CommandError as exc:
        assert exc.code == "refused"
    else:
        raise AssertionError("a cancelled execution cannot be paused")
