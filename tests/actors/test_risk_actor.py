"""The risk sentinel actor on MockClock: the order path, the fail-safe, breakers, commands, start-up."""

from decimal import Decimal as D

import pytest
import trio

from actors import risk as risk_mod
from daemon import topics
from daemon.config import parse
from daemon.control import Caller, CommandError
from daemon.health import Level
from daemon.journal import JournalUnavailable
from daemon.messages import (
    Approval,
    BalanceDifference,
    BalanceMismatch,
    BalancesAcknowledged,
    BreakerTripped,
    Denial,
    FeedStatus,
    KillReport,
    OrderUpdate,
    PositionEntry,
    PositionsQuery,
    PositionsReply,
    PositionsSummary,
    RiskLimitChanged,
    TradingStateChanged,
    VenueStatus,
)
from daemon.model import Instrument, OrderStatus, OrderType, Side, TradingState
from risk_fakes import BTC, fill, intent, limits, logged, quote, settle, start_rig, update

ALICE = Caller(pid=1, uid=0, gid=0)  # uid 0 -> user "root"


def command(rig, name):
    return rig.daemon.commands.get(name).handler


# ---------------------------------------------------------------------------------------
# The order path
# ---------------------------------------------------------------------------------------


async def test_an_approved_intent_is_journaled_before_it_reaches_the_gateway(nursery, autojump_clock):
    rig = await start_rig(nursery)
    order = intent(qty="0.5")
    answer = await rig.submit(order)
    await settle()
    assert isinstance(answer, Approval) and answer.intent == order
    assert rig.trace == [("journal", order.client_order_id), ("gateway", order.client_order_id)]
    assert rig.risk.sentinel.book.open_order_count() == 1  # counted as working
    assert logged("order.intent", f"cid={order.client_order_id}")


@pytest.mark.parametrize(
    ("setup", "order", "code"),
    [
        ("max_order_qty", intent(qty="2"), "MAX_ORDER_QTY"),
        ("max_order_notional", intent(qty="1", price="100"), "MAX_ORDER_NOTIONAL"),
        ("collar", intent(price="150"), "PRICE_COLLAR"),
        (None, intent(symbol="DOGEUSDT"), "UNKNOWN_INSTRUMENT"),
        (None, intent(qty="0.0005"), "FILTER_LOT_SIZE"),
        (None, intent(price=None, order_type=OrderType.LIMIT), "INVALID_ORDER"),
        ("max_position", intent(qty="3"), "MAX_POSITION"),
        ("reduce_only", intent(qty="1", reduce_only=True), "REDUCE_ONLY"),
    ],
)
async def test_each_denial_code_reaches_the_caller_journal_log_and_watchers(nursery, autojump_clock, setup, order, code):
    changes = {
        "max_order_qty": {"max_order_qty": 1},
        "max_order_notional": {"max_order_notional": 50},
        "max_position": {"max_position": 2},
        "collar": {"price_collar_bps": 100},
    }.get(setup, {})
    rig = await start_rig(nursery, limits(**changes))
    with rig.daemon.bus.subscribe(topics.ORDER_DENIED) as denied:
        answer = await rig.submit(order)
        await settle()
        assert isinstance(answer, Denial) and answer.code == code
        assert (await denied.receive()).code == code
    assert [d.code for d in rig.journal.of(Denial)] == [code]
    assert logged("risk.denied", f"code={code} exec={order.exec_id} cid={order.client_order_id}")
    assert rig.gateways["sim"].received == []
    assert rig.risk.snapshot()["denials"] == {code: 1}
    assert rig.risk.snapshot()["recent_denials"][0]["code"] == code


async def test_stale_market_data_and_a_down_venue_are_refused(nursery, autojump_clock):
    rig = await start_rig(nursery, limits(stale_quote_seconds=5))
    await trio.sleep(6)
    assert (await rig.submit(intent())).code == "STALE_MARKET_DATA"
    await rig.publish(topics.QUOTE, quote())
    assert isinstance(await rig.submit(intent()), Approval)
    await rig.publish(topics.VENUE_STATUS, VenueStatus(venue="sim", state="down", detail="503s"))
    assert (await rig.submit(intent())).code == "VENUE_DOWN"


async def test_open_order_count_and_rate_limits_apply_across_the_actor(nursery, autojump_clock):
    rig = await start_rig(nursery, limits(max_open_orders=2))
    first, second = intent(qty="0.1"), intent(qty="0.1")
    assert isinstance(await rig.submit(first), Approval)
    assert isinstance(await rig.submit(second), Approval)
    assert (await rig.submit(intent(qty="0.1"))).code == "MAX_OPEN_ORDERS"
    await rig.publish(topics.ORDER_UPDATE, update(first, OrderStatus.CANCELED))
    assert isinstance(await rig.submit(intent(qty="0.1")), Approval)

    rig = await start_rig(nursery, limits(max_orders_per_second=2), venues=("sim",))
    answers = [await rig.submit(intent(qty="0.1")) for _ in range(3)]
    assert [type(a).__name__ for a in answers] == ["Approval", "Approval", "Denial"]
    assert answers[2].code == "ORDER_RATE"
    await trio.sleep(1.1)
    assert isinstance(await rig.submit(intent(qty="0.1")), Approval)


async def test_a_burst_is_journaled_in_one_batch_and_every_caller_answered(nursery, autojump_clock):
    rig = await start_rig(nursery)
    batches = []
    original = rig.journal.record_batch

    async def counting(records):
        batches.append(len(records))
        return await original(records)

    rig.journal.record_batch = counting
    answers = []

    async def one(order):
        answers.append(await rig.submit(order))

    orders = [intent(qty="0.01") for _ in range(20)]
    async with trio.open_nursery() as burst:
        for order in orders:
            burst.start_soon(one, order)
    await settle()
    assert len(answers) == 20 and all(isinstance(a, Approval) for a in answers)
    assert sum(batches) == 20 and len(batches) < 20
    assert [cid for who, cid in rig.trace if who == "gateway"] == [cid for who, cid in rig.trace if who == "journal"]


# ---------------------------------------------------------------------------------------
# Fail-safe
# ---------------------------------------------------------------------------------------


async def test_nothing_is_approved_without_the_journal_positions_or_gateway(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.journal.running = False
    assert (await rig.submit(intent())).code == "JOURNAL_DOWN"
    rig.journal.running = True

    rig.daemon.registry.set_state("positions", "failed", error="boom")
    assert (await rig.submit(intent())).code == "POSITIONS_DOWN"
    rig.daemon.registry.set_state("positions", "running")

    assert (await rig.submit(intent(venue="nowhere"))).code == "GATEWAY_DOWN"
    assert isinstance(await rig.submit(intent()), Approval)
    await settle()
    assert [who for who, _ in rig.trace if who == "gateway"] == ["gateway"]


async def test_a_journal_failure_or_duplicate_sends_nothing_and_forgets_the_order(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.journal.fail = JournalUnavailable("disk full")
    answer = await rig.submit(intent())
    assert answer.code == "JOURNAL_DOWN" and "disk full" in answer.reason
    assert rig.risk.sentinel.book.open_order_count() == 0
    rig.journal.fail = None

    order = intent()
    rig.journal.intents[order.client_order_id] = order  # journaled by an earlier run
    answer = await rig.submit(order)
    assert answer.code == "DUPLICATE_ORDER_ID" and "already journaled" in answer.reason
    conflicting = intent()
    rig.journal.intents[conflicting.client_order_id] = intent()
    assert (await rig.submit(conflicting)).code == "DUPLICATE_ORDER_ID"
    await settle()
    assert rig.gateways["sim"].received == []
    assert rig.risk.sentinel.book.open_order_count() == 0


async def test_halted_refuses_the_next_order_at_once_and_stops_one_being_journaled(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.risk.halt("alice", "maintenance")
    assert rig.daemon.trading_state is TradingState.HALTED  # before anything was journaled
    assert (await rig.submit(intent())).code == "TRADING_HALTED"
    rig.risk.resume("alice", "done")

    # Halted while the approved intent is being journaled: it must not reach the gateway.
    order = intent()
    rig.journal.during_intent = lambda: rig.risk.halt("bob", "kill switch")
    answer = await rig.submit(order)
    await settle()
    assert answer.code == "TRADING_HALTED" and "not sent" in answer.reason
    assert rig.gateways["sim"].received == []
    not_sent = rig.journal.orders[order.client_order_id]
    assert not_sent.status is OrderStatus.REJECTED and not_sent.reason.startswith("not sent")
    assert rig.risk.sentinel.book.open_order_count() == 0


async def test_cancels_are_not_the_sentinels_business(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.risk.halt("alice", "stop")
    with pytest.raises(TypeError, match="takes an OrderIntent"):
        from daemon.messages import CancelOrder

        await rig.submit(CancelOrder(venue="sim", symbol="BTCUSDT", client_order_id="x"))


# ---------------------------------------------------------------------------------------
# Breakers and the trading state
# ---------------------------------------------------------------------------------------


async def test_a_reject_storm_trips_halts_latches_and_resume_clears_it(nursery, autojump_clock):
    rig = await start_rig(nursery, limits(rejects__max_rejects=2, rejects__window_seconds=60, rejects__action="halt"))
    with rig.daemon.bus.subscribe(topics.RISK_BREAKER) as trips, rig.daemon.bus.subscribe(topics.RISK_STATE) as states:
        for _ in range(3):
            order = intent(qty="0.1")
            assert isinstance(await rig.submit(order), Approval)
            await rig.publish(topics.ORDER_UPDATE, update(order, OrderStatus.REJECTED, reason="-2010 insufficient"))
        assert (await trips.receive()).breaker == "rejects"
        assert (await states.receive()).state is TradingState.HALTED
    assert rig.daemon.trading_state is TradingState.HALTED
    level, reasons = rig.daemon.health.summary()
    assert level is Level.CRITICAL and any("HALTED" in r for r in reasons)
    await rig.risk.drain()
    assert [type(r).__name__ for r in rig.journal.of(BreakerTripped | TradingStateChanged)] == [
        "BreakerTripped",
        "TradingStateChanged",
    ]
    assert logged("risk.tripped", "breaker=rejects")

    await trio.sleep(120)  # the storm is long over: still latched
    assert rig.risk.state is TradingState.HALTED
    assert (await rig.submit(intent())).code == "TRADING_HALTED"
    rig.risk.resume("alice", "venue fixed")
    assert rig.risk.state is TradingState.ACTIVE and rig.daemon.health.summary()[0] is Level.HEALTHY
    await rig.publish(topics.QUOTE, quote())
    assert isinstance(await rig.submit(intent(qty="0.1")), Approval)


async def test_silent_market_data_puts_the_venue_in_reducing(nursery, autojump_clock):
    rig = await start_rig(nursery, limits(stale_data__after_seconds=5, stale_quote_seconds=100))
    long = intent(qty="1")
    assert isinstance(await rig.submit(long), Approval)
    await rig.publish(topics.FILL, fill(long, "1"))
    await rig.publish(topics.ORDER_UPDATE, update(long, OrderStatus.FILLED, "1"))
    await trio.sleep(7)  # the tick notices: no quote from sim for 7 s
    assert rig.risk.state_for("sim") is TradingState.REDUCING
    assert rig.risk.state is TradingState.ACTIVE and rig.daemon.health.summary()[0] is Level.DEGRADED
    assert (await rig.submit(intent(qty="0.5"))).code == "TRADING_REDUCING"
    assert isinstance(await rig.submit(intent(Side.SELL, qty="0.5")), Approval)  # reduces: passes
    await rig.publish(topics.FEED_STATUS, FeedStatus(venue="other", state="down"))
    assert rig.risk.state_for("other") is TradingState.REDUCING
    rig.risk.resume("alice", "feeds back", venue="sim")
    assert rig.risk.state_for("sim") is TradingState.ACTIVE and rig.risk.state_for("other") is TradingState.REDUCING


async def test_an_equity_drop_past_the_daily_loss_runs_the_kill(nursery, autojump_clock):
    rig = await start_rig(nursery, limits(daily_loss__limit=100, daily_loss__action="kill"))

    def summary(equity, complete=True):
        return PositionsSummary(
            currency="USDT", equity=D(equity), equity_complete=complete, realised_pnl=D(0), unrealised_pnl=D(0),
            fees=D(0), gross_exposure=D(0), net_exposure=D(0), open_positions=0, utc_ms=1_700_000_000_000, ts=0.0,
        )  # fmt: skip

    await rig.publish(topics.POSITIONS, summary("10000"))
    await rig.publish(topics.POSITIONS, summary("9000", complete=False))  # partial figure: ignored
    assert rig.risk.state is TradingState.ACTIVE
    await rig.publish(topics.POSITIONS, summary("9850"))
    await settle()
    assert rig.risk.state is TradingState.HALTED
    report = rig.emergency.last_report
    assert isinstance(report, KillReport) and report.by == "breaker:daily_loss" and "daily loss 150" in report.reason
    await rig.risk.drain()
    assert rig.journal.of(KillReport) == [report]


async def test_a_balance_mismatch_halts_and_resume_waits_for_the_acknowledgement(nursery, autojump_clock):
    rig = await start_rig(nursery)
    diff = BalanceDifference(asset="BTC", ours=D(1), venue_total=D("0.9"), difference=D("-0.1"), tolerance=D(0))
    await rig.publish(topics.BALANCE_CHECK, BalanceMismatch(venue="sim", differences=(diff,), utc_ms=0))
    assert rig.risk.state is TradingState.HALTED
    with pytest.raises(CommandError, match="ack-balances"):
        await command(rig, "resume")(risk_mod.StateArgs(reason="ignore it"), ALICE)
    await rig.publish(
        topics.BALANCE_CHECK, BalancesAcknowledged(venue="sim", by="alice", reason="fee", adopted=(), utc_ms=0)
    )
    reply = await command(rig, "resume")(risk_mod.StateArgs(reason="balances adopted"), ALICE)
    assert reply["state"] == "ACTIVE"


async def test_a_malformed_message_is_logged_and_the_actor_goes_on(nursery, autojump_clock):
    rig = await start_rig(nursery)
    await rig.publish(topics.ORDER_UPDATE, "garbage")
    bad = OrderUpdate(venue="sim", symbol="BTCUSDT", client_order_id="x", status="NOT_A_STATUS", side=Side.BUY, quantity=D(1))
    await rig.publish(topics.ORDER_UPDATE, bad)
    assert logged("risk.bad_message", "topic=order.update")
    assert isinstance(await rig.submit(intent()), Approval)


# ---------------------------------------------------------------------------------------
# Commands and configuration
# ---------------------------------------------------------------------------------------


async def test_risk_set_validates_journals_who_and_applies(nursery, autojump_clock):
    rig = await start_rig(nursery)
    risk_set = command(rig, "risk-set")
    with pytest.raises(CommandError, match="unknown risk limit 'max_order_qtty'") as bad_key:
        await risk_set(risk_mod.RiskSetArgs(key="max_order_qtty", value="1"), ALICE)
    assert bad_key.value.code == "bad_limit"
    with pytest.raises(CommandError, match="decimal number"):
        await risk_set(risk_mod.RiskSetArgs(key="max_order_qty", value="lots"), ALICE)
    with pytest.raises(CommandError, match="zero or more"):
        await risk_set(risk_mod.RiskSetArgs(key="max_order_qty", value="-1"), ALICE)
    assert rig.journal.of(RiskLimitChanged) == []

    reply = await risk_set(risk_mod.RiskSetArgs(key="max_order_qty", value=0.5, reason="smaller"), ALICE)
    assert reply == {"key": "max_order_qty", "previous": None, "value": "0.5", "by": "root"}
    (change,) = rig.journal.of(RiskLimitChanged)
    assert (change.limit, change.value, change.by, change.reason) == ("max_order_qty", "0.5", "root", "smaller")
    assert (await rig.submit(intent(qty="1"))).code == "MAX_ORDER_QTY"
    assert logged("risk.limit_changed", "key=max_order_qty value=0.5")
    assert rig.daemon.commands.get("risk-set").audited

    rig.journal.running = False
    with pytest.raises(CommandError, match="not changed") as down:
        await risk_set(risk_mod.RiskSetArgs(key="max_order_qty", value="none"), ALICE)
    assert down.value.code == "journal_down" and rig.risk.limits.max_order_qty == D("0.5")


async def test_halt_reduce_resume_commands_need_a_reason_and_say_who(nursery, autojump_clock):
    rig = await start_rig(nursery)
    with pytest.raises(CommandError, match="needs a reason"):
        await command(rig, "halt")(risk_mod.HaltArgs(reason="  "), ALICE)
    reply = await command(rig, "halt")(risk_mod.HaltArgs(reason="news at 14:00"), ALICE)
    assert reply["state"] == "HALTED" and reply["changed"][0]["by"] == "root"
    reply = await command(rig, "reduce")(risk_mod.StateArgs(reason="flatten by hand"), ALICE)
    assert reply["state"] == "REDUCING"
    snap = await command(rig, "risk")(risk_mod.NoArgs(), ALICE)
    assert snap["state"] == "REDUCING" and snap["last_change"]["reason"] == "flatten by hand"
    assert {row["key"] for row in snap["limits"]} >= {"max_order_qty", "max_open_orders"}
    await command(rig, "resume")(risk_mod.StateArgs(reason="ok"), ALICE)
    await rig.risk.drain()
    changes = rig.journal.of(TradingStateChanged)
    assert [(c.state, c.by) for c in changes] == [
        (TradingState.HALTED, "root"),
        (TradingState.REDUCING, "root"),
        (TradingState.ACTIVE, "root"),
    ]
    for name in ("halt", "reduce", "resume", "kill", "risk-set"):
        assert rig.daemon.commands.get(name).audited


async def test_a_reload_with_a_changed_risk_section_replaces_the_limits(nursery, autojump_clock):
    rig = await start_rig(nursery)
    await command(rig, "risk-set")(risk_mod.RiskSetArgs(key="max_order_qty", value="3"), ALICE)
    rig.risk.on_reload(parse("[daemon]\nheartbeat_interval = 5.0\n", "t.toml"))  # the file's [risk] is unchanged
    assert rig.risk.limits.max_order_qty == D(3)  # the live change is kept
    rig.risk.on_reload(parse('[risk]\nmax_order_notional = "1000"\n', "t.toml"))
    assert rig.risk.limits.max_order_notional == D(1000) and rig.risk.limits.max_order_qty is None
    await rig.risk.drain()
    reloaded = [c for c in rig.journal.of(RiskLimitChanged) if c.by == "config reload"]
    assert {(c.limit, c.value) for c in reloaded} == {("max_order_notional", "1000")}
    assert logged("risk.limits_reloaded", "changed=max_order_notional")


# ---------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------


async def test_start_up_counts_journaled_orders_restores_the_state_and_loads_positions(nursery, autojump_clock):
    rig = await start_rig(nursery, limits(max_open_orders=2), start=False)
    old = intent(qty="0.2")
    rig.journal.open.append(update(old, OrderStatus.NEW))
    rig.journal.unacknowledged.append(intent(qty="0.2"))
    rig.journal.records.append(
        TradingStateChanged(state=TradingState.HALTED, previous=TradingState.ACTIVE, reason="kill: runaway", by="bob")
    )

    async def keeper(*, task_status):
        with rig.daemon.bus.serve(topics.POSITIONS_QUERY) as queries:
            task_status.started()
            async for request in queries:
                assert isinstance(request.body, PositionsQuery)
                entry = PositionEntry(
                    venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", quantity=D("1.5"), avg_entry_price=None,
                    mark=None, realised_pnl=D(0), unrealised_pnl=None, fees=D(0),
                )  # fmt: skip
                request.reply(PositionsReply(positions=(entry,), summary=None))

    await nursery.start(keeper)
    await nursery.start(rig.risk.run)
    assert rig.risk.sentinel.book.open_order_count() == 2
    assert rig.risk.sentinel.book.position(("sim", "BTCUSDT")) == D("1.5")
    assert rig.risk.state is TradingState.HALTED and "restored from the journal" in rig.risk.snapshot()["last_change"]["reason"]
    rig.risk.resume("alice", "checked")
    await rig.publish(topics.QUOTE, quote())
    assert (await rig.submit(intent(qty="0.1"))).code == "MAX_OPEN_ORDERS"


async def test_instruments_arrive_later_from_the_services_or_the_bus(nursery, autojump_clock):
    rig = await start_rig(nursery, instruments=())
    assert (await rig.submit(intent())).code == "UNKNOWN_INSTRUMENT"
    rig.daemon.services["instruments"][("sim", "BTCUSDT")] = BTC
    await rig.publish(topics.QUOTE, quote())
    assert isinstance(await rig.submit(intent(qty="0.1")), Approval)
    sol = Instrument(venue="sim", symbol="SOLUSDT", base="SOL", quote="USDT", tick_size=D("0.01"), step_size=D("0.1"))
    await rig.publish(topics.INSTRUMENTS, [sol])
    await rig.publish(topics.QUOTE, quote("SOLUSDT", bid="20", ask="20.02"))
    assert isinstance(await rig.submit(intent(qty="1", price="20", symbol="SOLUSDT")), Approval)


async def test_a_restarted_actor_keeps_the_halt_and_settles_orders_from_the_journal(nursery, autojump_clock):
    rig = await start_rig(nursery, start=False)
    first_run = trio.CancelScope()

    async def run_once(*, task_status):
        with first_run:
            await rig.risk.run(task_status=task_status)

    await nursery.start(run_once)
    await rig.publish(topics.QUOTE, quote())
    order = intent(qty="0.1")
    assert isinstance(await rig.submit(order), Approval)
    rig.risk.halt("alice", "investigating")
    first_run.cancel()  # the actor dies ...
    await settle()
    assert not rig.daemon.bus.serving(topics.RISK_SUBMIT)
    rig.journal.orders[order.client_order_id] = update(order, OrderStatus.CANCELED)  # ... and misses the cancel
    await nursery.start(rig.risk.run)  # ... and is restarted
    assert rig.risk.state is TradingState.HALTED
    assert rig.risk.sentinel.book.open_order_count() == 0
    assert (await rig.submit(intent())).code == "TRADING_HALTED"


async def test_a_full_gateway_queue_is_refused_without_stalling_other_venues(nursery, autojump_clock):
    """One slow venue must not hold up approvals for every other venue."""
    rig = await start_rig(nursery, venues=("other",))
    stuck = rig.daemon.bus.subscribe(topics.orders("sim"), maxsize=1, name="gateway.sim (stuck)")  # never read
    first = await rig.submit(intent(qty="0.1"))
    assert isinstance(first, Approval)
    second = await rig.submit(intent(qty="0.1", price="100.1"))
    assert isinstance(second, Denial) and second.code == "GATEWAY_BUSY"
    assert "queue is full" in second.reason
    eth = await rig.submit(intent(qty="1", symbol="ETHUSDT", venue="other"))
    assert isinstance(eth, Approval)
    await settle()
    # journaled as not sent, and no longer counted as working
    rejected = [u for u in rig.journal.of(OrderUpdate) if u.client_order_id == second.intent.client_order_id]
    assert rejected and rejected[-1].status is OrderStatus.REJECTED
    assert second.intent.client_order_id not in rig.risk.sentinel.book.orders
    stuck.close_reader()
