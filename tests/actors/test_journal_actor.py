"""The journal actor: acknowledgement after commit, group commit, stopping, failures.

These run on trio's real clock: the actor's work happens in a worker thread,
and an autojumping MockClock would jump while a commit is in flight. Every
wait is bounded by `fail_after` so a bug fails fast instead of hanging.
"""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal as D

import pytest
import trio
import trio.testing

from daemon.journal import Journal, JournalBatchError, JournalClosed, JournalUnavailable
from daemon.journal_store import JournalConflict, JournalLocked, JournalStore
from daemon.messages import ExecutionCheckpoint, ExecutionStateChanged, Fill, OrderIntent, OrderUpdate
from daemon.model import OrderStatus, OrderType, Side

LIMIT = 10  # seconds; only reached when something is broken


def intent(seq: int = 0, **changes) -> OrderIntent:
    fields = dict(
        client_order_id=f"td-e1-{seq}",
        exec_id="e1",
        seq=seq,
        venue="sim",
        symbol="BTCUSDT",
        side=Side.SELL,
        order_type=OrderType.LIMIT,
        quantity=D("1.25"),
        price=D("3000.5"),
    )
    fields.update(changes)
    return OrderIntent(**fields)


def fill(trade_id: int, cid: str = "td-e1-0") -> Fill:
    return Fill(
        venue="sim",
        symbol="BTCUSDT",
        client_order_id=cid,
        trade_id=str(trade_id),
        side=Side.SELL,
        price=D("3000.5"),
        qty=D("0.25"),
        fee=D("0.75"),
        fee_asset="USDT",
        is_maker=False,
    )


class GatedStore(JournalStore):
    """A store whose commits wait for the test to let them through."""

    entered: threading.Event
    release: threading.Event

    def apply(self, records):
        self.entered.set()
        if not self.release.wait(LIMIT):
            raise AssertionError("the test never released the commit")
        return super().apply(records)


class BrokenDiskStore(JournalStore):
    def apply(self, records):
        raise sqlite3.OperationalError("disk I/O error")


def gated(path):
    store = GatedStore.open(path)
    store.entered = threading.Event()
    store.release = threading.Event()
    return store


async def wait_for_thread_event(event: threading.Event) -> None:
    assert await trio.to_thread.run_sync(event.wait, LIMIT), "the worker thread never got there"


@pytest.fixture
def path(tmp_path):
    return tmp_path / "journal.sqlite"


async def test_records_are_acknowledged_with_their_outcome_and_readable(path, nursery):
    journal = Journal(path)
    with trio.fail_after(LIMIT):
        assert await nursery.start(journal.run) is journal
        assert await journal.record_intent(intent()) is True
        assert await journal.record_intent(intent()) is False
        with pytest.raises(JournalConflict):
            await journal.record_intent(intent(quantity=D("2")))
        assert await journal.intents_without_ack() == [intent()]
        assert await journal.record_update(
            OrderUpdate(venue="sim", symbol="BTCUSDT", client_order_id="td-e1-0", status=OrderStatus.NEW,
                        side=Side.SELL, quantity=D("1.25"))
        ) is True
        assert await journal.intents_without_ack() == []
        assert [o.client_order_id for o in await journal.open_orders()] == ["td-e1-0"]
        assert await journal.record_fill(fill(1)) is True
        assert await journal.record_fill(fill(1)) is False
        assert await journal.record_fills([fill(2), fill(1), fill(3)]) == [True, False, True]
        assert [f.fill.trade_id for f in await journal.fills(exec_id="e1")] == ["1", "2", "3"]
        assert await journal.last_trade_id("sim", "BTCUSDT") == "3"
        assert await journal.next_child_seq("e1") == 1

        assert await journal.record_execution(
            "e1", algo="TWAP", venue="sim", symbol="BTCUSDT", side=Side.SELL, quantity=D("5"),
            params={"duration": 600}, by="alice",
        ) is True
        await journal.record_execution_state(ExecutionStateChanged(exec_id="e1", state="RUNNING", previous="PENDING"))
        await journal.checkpoint(ExecutionCheckpoint(exec_id="e1", next_seq=1, filled_qty=D("0.75")))
        (execution,) = await journal.executions(unfinished=True)
        assert execution.state == "RUNNING" and execution.checkpoint.filled_qty == D("0.75")

        command_id = await journal.record_command(uid=1000, user="alice", command="pause", args={"exec_id": "e1"})
        await journal.record_command_result(command_id, ok=True, result={"state": "PAUSED"})
        (audit,) = await journal.commands()
        assert (audit.user, audit.command, audit.ok) == ("alice", "pause", True)
        assert journal.stats().refused == 1  # the conflicting intent
    journal.stop()


async def test_queued_requests_are_committed_together_in_one_transaction(path, nursery):
    journal = Journal(path)
    results: dict[int, bool] = {}

    async def record(trade_id: int) -> None:
        results[trade_id] = await journal.record_fill(fill(trade_id % 15))

    with trio.fail_after(LIMIT):
        for trade_id in range(20):
            nursery.start_soon(record, trade_id)
        while journal.stats().queued < 20:
            await trio.sleep(0.001)
        await nursery.start(journal.run)
        while len(results) < 20:
            await trio.sleep(0.001)
    stats = journal.stats()
    assert (stats.batches, stats.records, stats.largest_batch) == (1, 20, 20)
    # 15 distinct trade ids: exactly one caller per id heard "new"
    assert sum(results.values()) == 15
    assert len(await journal.fills()) == 15
    journal.stop()


async def test_a_caller_hears_back_only_after_the_commit(path, nursery):
    holder: list[GatedStore] = []

    def open_store():
        holder.append(gated(path))
        return holder[0]

    journal = Journal(path, open_store=open_store)
    acknowledged = trio.Event()

    async def record() -> None:
        await journal.record_fill(fill(1))
        acknowledged.set()

    with trio.fail_after(LIMIT):
        await nursery.start(journal.run)
        nursery.start_soon(record)
        await wait_for_thread_event(holder[0].entered)
        await trio.testing.wait_all_tasks_blocked()
        assert not acknowledged.is_set()
        holder[0].release.set()
        await acknowledged.wait()
        assert [f.fill.trade_id for f in await journal.fills()] == ["1"]
    journal.stop()


async def test_a_cancelled_caller_does_not_withdraw_its_record(path, nursery):
    journal = Journal(path)
    with trio.fail_after(LIMIT):
        with trio.move_on_after(0) as late:
            await journal.record_fill(fill(1))  # cancelled at once, before queueing
        assert late.cancelled_caught
        assert journal.stats().queued == 0

        async def record_then_give_up(task_status=trio.TASK_STATUS_IGNORED):
            with trio.CancelScope() as caller:
                task_status.started(caller)
                await journal.record_fill(fill(2))

        caller = await nursery.start(record_then_give_up)
        while journal.stats().queued < 1:
            await trio.sleep(0.001)
        caller.cancel()  # it gives up waiting; the request is already in the inbox
        await nursery.start(journal.run)
        while journal.stats().records < 1:
            await trio.sleep(0.001)
        assert [f.fill.trade_id for f in await journal.fills()] == ["2"]
    journal.stop()


async def test_stop_commits_what_is_queued_then_refuses_new_records(path):
    journal = Journal(path)
    results = []

    async def record(trade_id: int) -> None:
        results.append(await journal.record_fill(fill(trade_id)))

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for trade_id in range(5):
                nursery.start_soon(record, trade_id)
            while journal.stats().queued < 5:
                await trio.sleep(0.001)
            journal.stop()
            await journal.run()  # drains the inbox, closes the file, returns
        assert results == [True] * 5
        with pytest.raises(JournalClosed):
            await journal.record_fill(fill(9))
        with pytest.raises(JournalClosed):
            await journal.fills()
    with JournalStore.open(path) as store:  # the lock was released
        assert len(store.fills()) == 5


async def test_a_failed_commit_fails_its_callers_and_crashes_the_actor(path):
    journal = Journal(path, open_store=lambda: BrokenDiskStore.open(path))
    errors = []

    async def record(trade_id: int) -> None:
        try:
            await journal.record_fill(fill(trade_id))
        except JournalUnavailable as exc:
            errors.append(exc)

    with trio.fail_after(LIMIT):
        with pytest.RaisesGroup(pytest.RaisesExc(JournalUnavailable, match="disk I/O error")):
            async with trio.open_nursery() as nursery:
                for trade_id in range(3):
                    nursery.start_soon(record, trade_id)
                while journal.stats().queued < 3:
                    await trio.sleep(0.001)
                await nursery.start(journal.run)
    assert len(errors) == 3 and all("not durable" in str(e) for e in errors)


async def test_a_refused_record_in_a_batch_is_reported_with_the_rest_committed(path, nursery):
    journal = Journal(path)
    with trio.fail_after(LIMIT):
        await nursery.start(journal.run)
        await journal.record_intent(intent())
        with pytest.raises(JournalBatchError) as info:
            await journal.record_batch([fill(1), intent(quantity=D("9")), fill(2)])
        outcome = info.value.results
        assert outcome[0] is True and outcome[2] is True and isinstance(outcome[1], JournalConflict)
        assert len(await journal.fills()) == 2
    journal.stop()


async def test_a_cancelled_journal_can_be_restarted_and_serves_what_waited(path):
    journal = Journal(path)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            assert await journal.record_fill(fill(1)) is True
            nursery.cancel_scope.cancel()  # as a supervisor stopping the child
        with pytest.raises(JournalClosed):
            await journal.fills()
        waiting = []

        async def record() -> None:
            waiting.append(await journal.record_fill(fill(2)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            while journal.stats().queued < 1:
                await trio.sleep(0.001)
            await nursery.start(journal.run)  # the restart reopens the same file
            while not waiting:
                await trio.sleep(0.001)
            assert [f.fill.trade_id for f in await journal.fills()] == ["1", "2"]
            journal.stop()
        assert waiting == [True]


async def test_reads_before_the_journal_runs_say_so():
    journal = Journal(":memory:")
    with pytest.raises(JournalClosed, match="not open"):
        await journal.open_orders()


async def test_a_second_journal_on_the_same_file_fails_to_start(path, nursery):
    with trio.fail_after(LIMIT):
        await nursery.start(Journal(path).run)
        with pytest.raises(JournalLocked, match="in use by another process"):
            await nursery.start(Journal(path).run)
