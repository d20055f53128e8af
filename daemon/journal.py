"""The journal actor: the only writer of the journal, and the durable record's front door.

Other actors hold a `Journal` and await its methods::

    journal = Journal(journal_path())
    await nursery.start(journal.run)
    if await journal.record_intent(intent):      # returns once the intent is on disk
        ...send it...
    new = await journal.record_fill(fill)        # False: this trade id was already journaled

Each call puts a request in a bounded inbox (lossless: callers wait when it is
full) and resolves only after the transaction holding its record has
committed, so an acknowledged record survives a crash. The actor takes one
request with an awaited receive, drains whatever else is already queued, and
commits the lot in one transaction (group commit): under load one fsync
covers many records, which is what lets fills per second scale.

SQLite calls run in a worker thread (`trio.to_thread.run_sync`) under a
`CapacityLimiter(1)`, the one gate to the single connection; reads take the
same gate, so they see every acknowledged write. A commit is never
abandoned: cancellation waits for the thread (``abandon_on_cancel=False``).

Stopping: `stop()` refuses new records, and `run()` returns after committing
everything already queued. Cancelling `run()` instead leaves queued requests
in the inbox for the next `run()` (the supervisor's restart); a batch taken
out but not yet committed fails with `JournalClosed`. A caller that is
cancelled after its request was queued does not withdraw it: the record is
still committed.

A commit that fails (disk full, I/O error) fails every request in the batch
with `JournalUnavailable` and crashes the actor: the daemon must not trade on
without a journal. A record the store refuses on its own (a conflicting
intent, a float where a Decimal belongs) fails only its caller.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import trio

from daemon.journal_store import (
    BalanceSnapshot,
    CommandRecord,
    CommandResult,
    ExecutionRecord,
    JournalConflict,
    JournaledBalances,
    JournaledEvent,
    JournaledFill,
    JournalError,
    JournalLocked,
    JournalSchemaError,
    JournalStore,
    NewExecution,
    OperatorCommand,
    Record,
    RiskEvent,
    UnknownCommand,
    UnknownExecution,
)
from daemon.logs import describe_error, get_logger
from daemon.messages import BalanceUpdate, ExecutionCheckpoint, ExecutionStateChanged, Fill, OrderIntent, OrderUpdate
from daemon.model import Side
from daemon.paths import state_dir

__all__ = [
    "CommandRecord",
    "ExecutionRecord",
    "Journal",
    "JournalBatchError",
    "JournalClosed",
    "JournalConflict",
    "JournaledBalances",
    "JournaledEvent",
    "JournaledFill",
    "JournalError",
    "JournalLocked",
    "JournalSchemaError",
    "JournalStats",
    "JournalStore",
    "JournalUnavailable",
    "UnknownCommand",
    "UnknownExecution",
    "journal_path",
]

log = get_logger("journal")

JOURNAL_FILE = "journal.sqlite"
SLOW_COMMIT_SECONDS = 1.0  # a commit this slow means the disk is in trouble: say so
CLOSE_TIMEOUT = 10.0


def journal_path(override: str | os.PathLike[str] | None = None) -> Path:
    """Where the journal lives.

    `override` (from the config or the command line) wins. Otherwise it is
    ``journal.sqlite`` in the state directory: ``$STATE_DIRECTORY`` under
    systemd (``StateDirectory=``), ``./state`` in a development checkout.
    """
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    return state_dir() / JOURNAL_FILE


class JournalClosed(JournalError):
    """The journal is not running, or stopped before the record was committed."""


class JournalUnavailable(JournalError):
    """The journal could not commit; the record is not known to be durable."""


class JournalBatchError(JournalError):
    """Some records of a `record_batch` were refused; the rest committed.

    `results` has one entry per record: the result, or the exception that
    refused that record.
    """

    def __init__(self, results: list[Any]) -> None:
        refused = [r for r in results if isinstance(r, Exception)]
        super().__init__(f"{len(refused)} of {len(results)} records refused; first: {describe_error(refused[0])}")
        self.results = results


class JournalStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters for `status`: how much went through, and how it was batched."""

    running: bool
    queued: int
    records: int
    batches: int
    largest_batch: int
    refused: int
    last_commit_seconds: float | None


class _Request:
    __slots__ = ("records", "done", "results", "error")

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records
        self.done = trio.Event()
        self.results: list[Any] = []
        self.error: JournalError | None = None

    def resolve(self, results: list[Any]) -> None:
        self.results = results
        self.done.set()

    def fail(self, error: JournalError) -> None:
        self.error = error
        self.done.set()


class Journal:
    """The journal actor and the handle other actors call.

    `path` defaults to `journal_path()`. `inbox_size` bounds the requests
    waiting to be written; `max_batch` bounds the records per transaction.
    `open_store` replaces how the store is opened (tests use it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        inbox_size: int = 1024,
        max_batch: int = 1000,
        durable: bool = True,
        open_store: Callable[[], JournalStore] | None = None,
    ) -> None:
        self.path = journal_path(path)
        self._open_store = open_store or functools.partial(JournalStore.open, self.path, durable=durable)
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[_Request](inbox_size)
        self._limiter = trio.CapacityLimiter(1)
        self._store: JournalStore | None = None
        self._running = False
        self._stopped = False
        self._records = 0
        self._batches = 0
        self._largest_batch = 0
        self._refused = 0
        self._last_commit: float | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Journal] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the journal (migrating it if needed), report ready, and write
        until `stop()` or cancellation. After `stop()` it still commits what
        was queued, then returns."""
        if self._running:
            raise RuntimeError("this journal is already running")
        self._running = True
        try:
            self._store = await trio.to_thread.run_sync(self._open_store, limiter=self._limiter)
            log.info("journal.open", path=self.path, schema_version=self._store.schema_version)
            task_status.started(self)
            await self._serve()
            log.info("journal.stopped", records=self._records, batches=self._batches)
        finally:
            self._running = False
            store, self._store = self._store, None
            if store is not None:
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
                    await trio.to_thread.run_sync(store.close, limiter=self._limiter)
                if scope.cancelled_caught:
                    log.warning("journal.close_timeout", path=self.path, seconds=CLOSE_TIMEOUT)

    def stop(self) -> None:
        """Refuse new records; `run()` commits what is queued, closes the file and returns."""
        self._stopped = True
        self._send.close()

    def stats(self) -> JournalStats:
        return JournalStats(
            running=self._running,
            queued=self._send.statistics().current_buffer_used,
            records=self._records,
            batches=self._batches,
            largest_batch=self._largest_batch,
            refused=self._refused,
            last_commit_seconds=self._last_commit,
        )

    async def _serve(self) -> None:
        receive = self._receive
        while True:
            try:
                first = await receive.receive()
            except trio.EndOfChannel:
                return
            batch = [first]
            count = len(first.records)
            while count < self._max_batch:
                try:
                    request = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                batch.append(request)
                count += len(request.records)
            await self._commit(batch)

    async def _commit(self, batch: list[_Request]) -> None:
        store = self._store
        assert store is not None
        records = [record for request in batch for record in request.records]
        started = time.perf_counter()
        try:
            results = await trio.to_thread.run_sync(
                store.apply, records, limiter=self._limiter, abandon_on_cancel=False
            )
        except Exception as exc:
            log.error("journal.commit_failed", path=self.path, records=len(records), error=describe_error(exc))
            for request in batch:
                error = JournalUnavailable(
                    f"the journal could not commit ({describe_error(exc)}); the record is not durable"
                )
                error.__cause__ = exc
                request.fail(error)
            raise JournalUnavailable(f"commit to {self.path} failed: {describe_error(exc)}") from exc
        except BaseException:
            # Cancelled before the thread started: nothing was written.
            for request in batch:
                request.fail(JournalClosed("the journal stopped before this record was committed"))
            raise
        elapsed = time.perf_counter() - started
        self._last_commit = elapsed
        self._records += len(records)
        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(records))
        if elapsed > SLOW_COMMIT_SECONDS:
            log.warning("journal.slow_commit", seconds=round(elapsed, 3), records=len(records))
        offset = 0
        for request in batch:
            size = len(request.records)
            mine = results[offset : offset + size]
            offset += size
            for record, result in zip(request.records, mine):
                if isinstance(result, Exception):
                    self._refused += 1
                    log.error("journal.record_refused", record=type(record).__name__, error=describe_error(result))
            request.resolve(mine)

    # --- writing -----------------------------------------------------------------------

    async def _submit(self, records: Sequence[Any]) -> list[Any]:
        if self._stopped:
            raise JournalClosed("the journal is stopping and takes no new records")
        request = _Request(records)
        try:
            await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise JournalClosed("the journal is stopping and takes no new records") from None
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.results

    async def _record(self, record: Any) -> Any:
        (result,) = await self._submit((record,))
        if isinstance(result, Exception):
            raise result
        return result

    async def record_intent(self, intent: OrderIntent) -> bool:
        """Journal an intent before its request is sent. True if new; False if
        this very intent was already journaled (do not send it twice: look it up
        at the venue instead). Raises `JournalConflict` if a different intent
        holds the client order id."""
        return await self._record(intent)

    async def record_update(self, update: OrderUpdate) -> bool:
        """Journal an order update (history). True if it became the order's
        latest state; False if it was older news (kept in the history only)."""
        return await self._record(update)

    async def record_fill(self, fill: Fill) -> bool:
        """Journal a fill. True if new; False if (venue, symbol, trade_id, side) was already there."""
        return await self._record(fill)

    async def record_fills(self, fills: Sequence[Fill]) -> list[bool]:
        """Journal many fills in one transaction (reconciliation, a drained stream)."""
        return await self.record_batch(fills)

    async def record_batch(self, records: Sequence[Record]) -> list[Any]:
        """Journal records of any kind in one transaction, results in order.
        Raises `JournalBatchError` (after the others committed) if any was refused."""
        if not records:
            return []
        results = await self._submit(tuple(records))
        if any(isinstance(result, Exception) for result in results):
            raise JournalBatchError(results)
        return results

    async def record_execution(
        self,
        exec_id: str,
        *,
        algo: str,
        venue: str,
        symbol: str,
        side: Side,
        quantity: Decimal,
        params: Any,
        by: str = "",
        state: str = "PENDING",
    ) -> bool:
        """Journal a submitted execution; `params` (a msgspec Struct or plain
        data) is stored as JSON. True if new, False if already journaled the same;
        raises `JournalConflict` if the id is taken by different parameters."""
        return await self._record(
            NewExecution(
                exec_id=exec_id,
                algo=algo,
                venue=venue,
                symbol=symbol,
                side=side,
                quantity=quantity,
                params=params,
                by=by,
                state=state,
            )
        )

    async def record_execution_state(self, change: ExecutionStateChanged) -> int:
        """Journal a state transition and make it the execution's state; returns its seq."""
        return await self._record(change)

    async def checkpoint(self, checkpoint: ExecutionCheckpoint) -> int:
        """Journal an execution's progress checkpoint; returns its seq."""
        return await self._record(checkpoint)

    async def record_risk_event(self, event: RiskEvent) -> int:
        """Journal a trading state change, breaker trip, limit change, denial or kill report; returns its seq."""
        return await self._record(event)

    async def record_command(
        self,
        *,
        uid: int | None,
        user: str,
        command: str,
        args: Mapping[str, Any],
        ok: bool | None = None,
        result: Any = None,
    ) -> int:
        """Audit an operator command (journal it on arrival, `ok=None`); returns its id."""
        return await self._record(
            OperatorCommand(uid=uid, user=user, command=command, args=dict(args), ok=ok, result=result)
        )

    async def record_command_result(self, command_id: int, *, ok: bool, result: Any = None) -> None:
        """Add the outcome to an audited command."""
        await self._record(CommandResult(command_id=command_id, ok=ok, result=result))

    async def record_balances(self, venue: str, balances: Sequence[BalanceUpdate], *, source: str = "reconcile") -> int:
        """Journal a balance snapshot of one venue; returns the snapshot id."""
        return await self._record(BalanceSnapshot(venue=venue, balances=tuple(balances), source=source))

    # --- reading -----------------------------------------------------------------------

    async def _read(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        store = self._store
        if store is None:
            raise JournalClosed("the journal is not open; start Journal.run first")
        call = functools.partial(method, store, *args, **kwargs)
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def intent(self, client_order_id: str) -> OrderIntent | None:
        return await self._read(JournalStore.intent, client_order_id)

    async def intents(self, exec_id: str) -> list[OrderIntent]:
        return await self._read(JournalStore.intents, exec_id)

    async def intents_without_ack(self, venue: str | None = None) -> list[OrderIntent]:
        return await self._read(JournalStore.intents_without_ack, venue)

    async def next_child_seq(self, exec_id: str) -> int:
        return await self._read(JournalStore.next_child_seq, exec_id)

    async def order(self, client_order_id: str) -> OrderUpdate | None:
        return await self._read(JournalStore.order, client_order_id)

    async def open_orders(self, venue: str | None = None, symbol: str | None = None) -> list[OrderUpdate]:
        return await self._read(JournalStore.open_orders, venue, symbol)

    async def orders_by_venue_order_id(
        self, venue: str, symbol: str, venue_order_ids: Sequence[str]
    ) -> dict[str, OrderUpdate]:
        return await self._read(JournalStore.orders_by_venue_order_id, venue, symbol, venue_order_ids)

    async def order_history(self, client_order_id: str) -> list[OrderUpdate]:
        return await self._read(JournalStore.order_history, client_order_id)

    async def fills(
        self,
        *,
        venue: str | None = None,
        symbol: str | None = None,
        exec_id: str | None = None,
        client_order_id: str | None = None,
        since_ms: int | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[JournaledFill]:
        return await self._read(
            JournalStore.fills,
            venue=venue,
            symbol=symbol,
            exec_id=exec_id,
            client_order_id=client_order_id,
            since_ms=since_ms,
            after_seq=after_seq,
            limit=limit,
        )

    async def last_trade_id(self, venue: str, symbol: str) -> str | None:
        return await self._read(JournalStore.last_trade_id, venue, symbol)

    async def last_trade_ids(self) -> dict[tuple[str, str], str]:
        return await self._read(JournalStore.last_trade_ids)

    async def execution(self, exec_id: str) -> ExecutionRecord | None:
        return await self._read(JournalStore.execution, exec_id)

    async def executions(self, *, unfinished: bool = False) -> list[ExecutionRecord]:
        return await self._read(JournalStore.executions, unfinished=unfinished)

    async def execution_transitions(self, exec_id: str) -> list[JournaledEvent]:
        return await self._read(JournalStore.execution_transitions, exec_id)

    async def risk_events(self, *, since_ms: int | None = None, limit: int | None = None) -> list[JournaledEvent]:
        return await self._read(JournalStore.risk_events, since_ms=since_ms, limit=limit)

    async def commands(self, *, since_ms: int | None = None, limit: int | None = None) -> list[CommandRecord]:
        return await self._read(JournalStore.commands, since_ms=since_ms, limit=limit)

    async def latest_balances(self, venue: str | None = None) -> list[BalanceUpdate]:
        return await self._read(JournalStore.latest_balances, venue)

    async def balance_snapshots(
        self, *, venue: str | None = None, sources: Sequence[str] | None = None
    ) -> list[JournaledBalances]:
        return await self._read(JournalStore.balance_snapshots, venue=venue, sources=sources)

    async def integrity_problems(self) -> list[str]:
        return await self._read(JournalStore.integrity_problems)

    async def backup(self, destination: str | os.PathLike[str]) -> Path:
        """A consistent copy of the journal, taken while the daemon keeps running."""
        return await self._read(JournalStore.backup, destination)
