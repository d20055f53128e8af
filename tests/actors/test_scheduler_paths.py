"""What a scheduler does when things go wrong, and the views an operator reads (sim venue, MockClock)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
import trio

from actors.executions import IdArgs, ListArgs, SubmitArgs
from actors.scheduler import ExecState
from daemon.control import CommandError
from daemon.messages import ExecutionProgress, Fill
from daemon.model import OrderStatus
from exec_fakes import WALL0, World
from venues.sim.config import BTCUSDT, SimAccountConfig, SimConfig

RICH = (SimAccountConfig(name="demo", balances={"USDT": D("10000000"), "BTC": D("100")}),)
FAST = SimConfig(seed=3, start_ms=int(WALL0 * 1000), instruments=(BTCUSDT,), market_step=2.0, accounts=RICH)


async def started(nursery: trio.Nursery, tmp_path, **kwargs) -> World:
    w = World(tmp_path, sim=FAST)
    await w.start(nursery, **kwargs)
    return w


async def test_denials_in_a_row_fail_the_execution(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    w.approver.deny = lambda intent: "MAX_ORDER_QTY"
    exec_id = await w.submit(algo="twap", quantity="0.1", duration="10m", style="cross", max_rejects=3)
    assert await w.wait_final(exec_id, timeout=600) is ExecState.FAILED
    assert len(w.intents(exec_id)) == 3
    last = w.tape.states(exec_id)[-1][1]
    assert last.state == "FAILED" and "rejected" in last.reason
    final = w.tape.of(ExecutionProgress, exec_id)[-1][1]
    assert final.state == "FAILED" and final.children_rejected == 3 and final.filled == 0
    assert (await w.journal.execution(exec_id)).state == "FAILED"


async def test_without_a_risk_sentinel_nothing_is_sent_and_the_execution_fails(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path, approver=False)
    exec_id = await w.submit(algo="twap", quantity="0.1", duration="10m", style="cross", max_rejects=2)
    assert await w.wait_final(exec_id, timeout=600) is ExecState.FAILED
    assert await w.journal.intents(exec_id) == []


async def test_a_child_risk_never_answered_counts_until_the_venue_settles_it(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    w.approver.silent = lambda intent: intent.seq == 1  # journaled and sent, but the reply is lost
    exec_id = await w.submit(algo="twap", quantity="0.1", duration="10m", style="cross", slices=5)
    assert await w.wait_final(exec_id, timeout=700) is ExecState.COMPLETED
    assert sum(f.qty for _, f in w.tape.of(Fill, exec_id)) == D("0.1")  # never more: the unknown child counted
    first = w.scheduler(exec_id).ledger.children[f"td-{exec_id}-1"]
    assert first.status is OrderStatus.FILLED


async def test_a_child_that_never_reached_the_journal_stops_counting_after_the_grace(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    w.approver.forward_silent = False
    w.approver.silent = lambda intent: intent.seq == 1  # swallowed: never journaled, never sent
    exec_id = await w.submit(algo="twap", quantity="0.1", duration="10m", style="cross", slices=2)
    assert await w.wait_final(exec_id, timeout=900) is ExecState.COMPLETED
    first = w.scheduler(exec_id).ledger.children[f"td-{exec_id}-1"]
    assert first.denied and "not sent" in first.detail
    assert sum(f.qty for _, f in w.tape.of(Fill, exec_id)) == D("0.1")


async def test_cancels_the_venue_never_confirms_hold_the_end_only_so_long(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    below = ((await w.quote()).bid - D("300")).quantize(D("0.01"))
    exec_id = await w.submit(algo="twap", quantity="0.05", duration="2m", style="passive", slices=2, limit=str(below))
    await trio.sleep(90)
    live = w.scheduler(exec_id).ledger.live()
    assert live and all(c.status is OrderStatus.NEW for c in live)
    w.stop_gateway()
    end = w.scheduler(exec_id).params.end_time
    assert await w.wait_final(exec_id, timeout=600) is ExecState.COMPLETED
    ended_at = w.tape.states(exec_id)[-1][0]
    assert end + 30 <= ended_at <= end + 35  # 3 x cancel_wait (10 s) after the end time
    assert "unconfirmed" in w.tape.states(exec_id)[-1][1].reason


async def test_a_crashed_scheduler_cancels_its_children_and_waits_for_an_operator(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    below = ((await w.quote()).bid - D("300")).quantize(D("0.01"))
    exec_id = await w.submit(algo="twap", quantity="0.2", duration="30m", style="passive", slices=6, limit=str(below))
    await trio.sleep(60)
    assert await w.open_at_venue(exec_id)
    crashing = w.scheduler(exec_id)

    def boom(*args, **kwargs):
        raise RuntimeError("a bug in the algorithm")

    crashing.algo.decide = boom
    crashing._poke()
    with trio.fail_after(30):
        await crashing.done.wait()
    assert crashing.state is ExecState.INTERRUPTED
    with trio.fail_after(10):  # the state change reaches the bus's subscribers just after `done`
        while w.tape.states(exec_id)[-1][1].state != "INTERRUPTED":
            await trio.sleep(0.01)
    change = w.tape.states(exec_id)[-1][1]
    assert change.state == "INTERRUPTED" and "RuntimeError: a bug in the algorithm" in change.reason
    await trio.sleep(5)
    assert await w.open_at_venue(exec_id) == []
    assert (await w.journal.execution(exec_id)).state == "INTERRUPTED"
    assert not w.manager.supervisor.has_child(f"scheduler[{exec_id}]")  # temporary: never restarted blindly

    resumed = await w.manager.call("resume", IdArgs(id=exec_id), "operator")
    assert resumed["state"] == "RUNNING"
    await trio.sleep(60)
    assert await w.open_at_venue(exec_id)
    cancelled = await w.manager.call("cancel", IdArgs(id=exec_id), "operator")
    assert cancelled["id"] == exec_id
    assert await w.wait_final(exec_id, timeout=60) is ExecState.CANCELLED
    cids = [i.client_order_id for _, i in w.intents(exec_id)]
    assert len(cids) == len(set(cids))


async def test_a_quote_amount_parent_spends_at_most_its_amount(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    exec_id = await w.submit(algo="twap", quote_amount="3000", duration="10m", style="cross", slices=5)
    assert await w.wait_final(exec_id, timeout=700) is ExecState.COMPLETED
    spent = sum(f.qty * f.price for _, f in w.tape.of(Fill, exec_id))
    assert D("2900") < spent <= D("3000")
    record = await w.journal.execution(exec_id)
    assert D("0.04") < record.quantity < D("0.05")  # the base it was worth at the decision price
    shown = await w.manager.show(exec_id)
    assert shown["quote_amount"] == "3000" and shown["quantity"] is None
    assert float(spent) / 30 == pytest.approx(shown["filled_pct"])


async def test_a_later_start_waits_pending_and_sends_nothing_before(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    exec_id = await w.submit(algo="twap", quantity="0.05", duration="5m", style="cross", start="+5m")
    submitted = trio.current_time()
    await trio.sleep(200)
    assert w.scheduler(exec_id).state is ExecState.PENDING
    assert w.intents(exec_id) == []
    assert await w.wait_final(exec_id, timeout=900) is ExecState.COMPLETED
    assert min(t for t, _ in w.intents(exec_id)) >= submitted + 300
    states = [c.state for _, c in w.tape.states(exec_id)]
    assert states == ["RUNNING", "COMPLETED"]


async def test_progress_is_published_at_a_bounded_rate_and_ends_with_the_final_state(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    exec_id = await w.submit(algo="twap", quantity="0.2", duration="10m", style="cross")
    assert await w.wait_final(exec_id, timeout=700) is ExecState.COMPLETED
    events = w.tape.of(ExecutionProgress, exec_id)
    times = [t for t, _ in events[:-1]]
    assert all(b - a >= 5.0 - 1e-6 for a, b in zip(times, times[1:]))  # progress_interval = 5 s in these tests
    assert 100 <= len(events) <= 130
    last = events[-1][1]
    assert last.state == "COMPLETED" and last.filled == D("0.2") and abs(last.filled_pct - 100) < 1e-9
    assert last.children_working == 0 and last.children_filled >= 1 and last.avg_price is not None
    running = [e for _, e in events if e.state == "RUNNING"]
    assert any(e.schedule_pct is not None and e.participation is not None for e in running)


async def test_list_show_and_the_refusals_an_operator_sees(nursery, autojump_clock, tmp_path):
    w = await started(nursery, tmp_path)
    m = w.manager
    await w.quote()
    preview = await m.submit(SubmitArgs(algo="vwap", symbol="btcusdt", side="sell", quantity=D("1"), duration="2h", max_participation=0.1, confirm=False), "t")
    assert preview["id"] is None and preview["estimate"]["expected_bps"] > 0
    assert preview["estimate"]["volatility_source"] in ("feed", "config") and preview["estimate"]["currency"] == "USDT"
    assert (await m.list_executions(ListArgs()))["executions"] == []

    done_id = await w.submit(algo="twap", quantity="0.01", duration="2m", style="cross")
    assert await w.wait_final(done_id, timeout=300) is ExecState.COMPLETED
    live_id = await w.submit(algo="pov", quantity="5", rate=0.05)
    await trio.sleep(30)

    listed = (await m.list_executions(ListArgs()))["executions"]
    assert [r["id"] for r in listed] == [done_id, live_id]
    assert [r["state"] for r in listed] == ["COMPLETED", "RUNNING"]
    done = await m.show(done_id[:5])  # a unique prefix is enough
    assert done["id"] == done_id and done["filled"] == "0.01" and done["avg_price"] > 0
    assert done["slippage_bps"] is not None and done["report"]["fill_rate"] == pytest.approx(1.0)
    assert [t["state"] for t in done["transitions"]] == ["RUNNING", "COMPLETED"]
    live = await m.show(live_id)
    assert {"id", "state", "filled", "avg_price", "slippage_bps", "report"} <= set(live)
    assert live["state"] == "RUNNING" and live["report"] is None and live["estimate"]["expected_bps"] > 0

    async def refused(code: str, start: str, **kwargs):
        kwargs.setdefault("symbol", "BTCUSDT")
        kwargs.setdefault("side", "buy")
        with pytest.raises(CommandError) as caught:
            await m.submit(SubmitArgs(**kwargs), "t")
        assert caught.value.code == code, caught.value.message
        assert caught.value.message.startswith(start), caught.value.message

    await refused("bad_args", "rate:", algo="twap", quantity=D("1"), duration="1h", rate=0.1)
    await refused("bad_args", "limit:", algo="twap", quantity=D("1"), duration="1h", limit=D("64000.005"))
    await refused("bad_args", "duration:", algo="twap", quantity=D("1"), duration="soon")
    await refused("bad_args", "duration:", algo="vwap", quantity=D("1"))
    await refused("bad_args", "limit:", algo="iceberg", quantity=D("1"), display=D("0.1"))
    await refused("bad_args", "side:", algo="pov", quantity=D("1"), rate=0.1, side="long")
    await refused("bad_args", "algo:", algo="sniper", quantity=D("1"))
    await refused("bad_args", "quantity:", algo="pov", quantity=D("0.000001"), rate=0.1)
    await refused("not_found", "symbol:", algo="pov", quantity=D("1"), rate=0.1, symbol="DOGEUSDT")
    await refused("not_found", "venue:", algo="pov", quantity=D("1"), rate=0.1, venue="kraken")
    m.stats[("sim", "BTCUSDT")].quote_at = trio.current_time() - 120  # a feed gone quiet: no decision price
    await refused("unavailable", "the last quote for BTCUSDT", algo="pov", quantity=D("1"), rate=0.1)
    with pytest.raises(CommandError) as caught:
        await m.show("ffffffff")
    assert caught.value.code == "not_found"
    with pytest.raises(CommandError) as caught:
        await m.call("resume", IdArgs(id=live_id), "t")
    assert caught.value.code == "refused" and "not PAUSED" in caught.value.message
