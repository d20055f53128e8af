"""A trading world for scheduler tests on MockClock: the sim venue behind the real gateway and feed.

- `SyncJournal`: the real journal (SQLite through `JournalStore`) called in
  the trio thread, so MockClock's autojump never races a worker thread.
- `Approver`: stands in for the risk sentinel on ``topics.RISK_SUBMIT``:
  journals the intent, hands it to the gateway, answers `Approval`; a test
  may deny some intents or leave them unanswered.
- `World`: a SimWorld market, its gateway and feed, the approver and an
  execution manager on a small `Daemon` that is never run as a whole.
- `Tape`: records every bus message the tests assert on, with its time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import trio

from actors.executions import Executions, SubmitArgs
from actors.feed import Feed, FeedConfig
from actors.gateway import Gateway
from actors.scheduler import ExecState, Scheduler
from daemon import topics
from daemon.app import Daemon
from daemon.config import parse
from daemon.journal import Journal
from daemon.journal_store import JournalStore
from daemon.messages import (
    Approval,
    Denial,
    ExecutionProgress,
    ExecutionStateChanged,
    Fill,
    MarketTrade,
    OrderIntent,
    OrderUpdate,
)
from venues.sim.config import SimConfig
from venues.sim.world import SimWorld

WALL0 = 1_700_000_000.0  # the wall clock at trio time 0 in these tests


def wall() -> float:
    return WALL0 + trio.current_time()


class SyncJournal(Journal):
    """The journal without its worker thread: same store, same answers, no thread hops."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, durable=False)
        self._store = JournalStore.open(path, durable=False)
        self._running = True
        self.drop_checkpoints = False  # simulate a crash between an intent and its checkpoint

    async def _submit(self, records: Any) -> list[Any]:
        await trio.lowlevel.checkpoint()
        if self.drop_checkpoints:
            records = [r for r in records if type(r).__name__ != "ExecutionCheckpoint"]
            if not records:
                return [0]
        return self._store.apply(list(records))

    async def _read(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return functools.partial(method, self._store, *args, **kwargs)()

    def close(self) -> None:
        self._store.close()


class Approver:
    """The risk sentinel's order path, minus the checks: journal, forward, approve."""

    def __init__(self, bus: Any, journal: SyncJournal) -> None:
        self.bus = bus
        self.journal = journal
        self.intents: list[tuple[float, OrderIntent]] = []
        self.duplicates: list[str] = []
        self.deny: Callable[[OrderIntent], str | None] = lambda intent: None
        self.silent: Callable[[OrderIntent], bool] = lambda intent: False
        self.forward_silent = True  # an unanswered intent still reaches the venue (a lost reply)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.bus.serve(topics.RISK_SUBMIT, maxsize=256) as inbox:
            task_status.started()
            async for request in inbox:
                intent = request.body
                self.intents.append((trio.current_time(), intent))
                code = self.deny(intent)
                if code is not None:
                    request.reply(Denial(intent=intent, code=code, reason=f"denied by the test ({code})"))
                    continue
                silent = self.silent(intent)
                if silent and not self.forward_silent:
                    continue
                new = await self.journal.record_intent(intent)
                if not new:
                    self.duplicates.append(intent.client_order_id)
                    request.reply(Denial(intent=intent, code="DUPLICATE_ORDER_ID", reason="already journaled"))
                    continue
                await self.bus.publish(topics.orders(intent.venue), intent)
                if not silent:
                    request.reply(Approval(intent=intent))


@dataclass
class Tape:
    """Every message of some topics with its trio time."""

    items: list[tuple[float, Any]] = field(default_factory=list)

    def of(self, kind: type, exec_id: str | None = None) -> list[tuple[float, Any]]:
        out = []
        for t, msg in self.items:
            if not isinstance(msg, kind):
                continue
            if exec_id is not None:
                mine = getattr(msg, "exec_id", None) == exec_id or getattr(msg, "client_order_id", "").startswith(f"td-{exec_id}-")
                if not mine:
                    continue
            out.append((t, msg))
        return out

    def states(self, exec_id: str) -> list[tuple[float, ExecutionStateChanged]]:
        return self.of(ExecutionStateChanged, exec_id)


EXEC_TOML = """
[executions]
progress_interval = 5.0
checkpoint_interval = 30.0
cancel_wait = 10.0
"""


class World:
    """Market, gateway, feed, approver and execution manager, started in `nursery`."""

    def __init__(self, tmp_path: Path, *, sim: SimConfig | None = None, toml: str = EXEC_TOML, journal: SyncJournal | None = None) -> None:
        self.tmp_path = tmp_path
        self.daemon = Daemon(parse(toml, "test.toml"), socket_path=tmp_path / "control.sock")
        self.bus = self.daemon.bus
        self.journal = journal or SyncJournal(tmp_path / "journal.sqlite")
        self.sim = sim or SimConfig(seed=11, start_ms=int(WALL0 * 1000))
        self.world = SimWorld(self.sim, venue="sim")
        self.adapter = self.world.venue(name="sim")
        self.instruments: dict[tuple[str, str], Any] = {}
        self.daemon.services["journal"] = self.journal
        self.daemon.services["instruments"] = self.instruments
        symbols = [i.symbol for i in self.sim.instruments]
        self.feed = Feed("sim", self.adapter, symbols, bus=self.bus, instruments=self.instruments, config=FeedConfig())
        self.gateway = Gateway(
            "sim", self.adapter, bus=self.bus, journal=self.journal, instruments=self.instruments, symbols=symbols, feed=self.feed
        )
        self.approver = Approver(self.bus, self.journal)
        self.manager: Executions | None = None
        self.tape = Tape()
        self._manager_scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery, *, manager: bool = True, approver: bool = True) -> None:
        self._nursery = nursery
        await nursery.start(self._record)
        await nursery.start(self.world.run)
        await nursery.start(self._run_gateway)
        await nursery.start(self.feed.run)
        if approver:
            await nursery.start(self.approver.run)
        if manager:
            await self.start_manager()

    async def _run_gateway(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            self._gateway_scope = scope
            await self.gateway.run(task_status=task_status)

    def stop_gateway(self) -> None:
        """The gateway stops: orders and cancels wait in its inbox, unanswered."""
        self._gateway_scope.cancel()

    async def start_manager(self) -> Executions:
        self.manager = Executions(self.daemon, wall=wall)
        self.daemon.services["executions"] = self.manager
        await self._nursery.start(self._run_manager, self.manager)
        return self.manager

    async def _run_manager(self, manager: Executions, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            self._manager_scope = scope
            await manager.run(task_status=task_status)

    def stop_manager(self) -> None:
        """The daemon going away under the schedulers (their shutdown path)."""
        assert self._manager_scope is not None
        self._manager_scope.cancel()

    async def _record(self, *, task_status: trio.TaskStatus[None]) -> None:
        kinds = (ExecutionStateChanged, ExecutionProgress, OrderUpdate, Fill, MarketTrade)
        with (
            self.bus.subscribe(topics.EXEC_STATE, maxsize=100_000) as states,
            self.bus.subscribe(topics.EXEC_PROGRESS, maxsize=100_000) as progress,
            self.bus.subscribe(topics.ORDER_UPDATE, maxsize=100_000) as updates,
            self.bus.subscribe(topics.FILL, maxsize=100_000) as fills,
            self.bus.subscribe(topics.TRADE, maxsize=100_000) as trades,
        ):
            task_status.started()
            async with trio.open_nursery() as n:
                for sub in (states, progress, updates, fills, trades):
                    n.start_soon(self._drain, sub, kinds)

    async def _drain(self, sub: Any, kinds: tuple[type, ...]) -> None:
        async for msg in sub:
            if isinstance(msg, kinds):
                self.tape.items.append((trio.current_time(), msg))

    # --- helpers ---------------------------------------------------------------------------
    async def submit(self, **kwargs: Any) -> str:
        assert self.manager is not None
        kwargs.setdefault("symbol", "BTCUSDT")
        kwargs.setdefault("side", "buy")
        for key in ("quantity", "quote_amount", "limit", "display", "min_child", "max_child", "expected_volume"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = D(str(kwargs[key]))
        await self.quote(kwargs["symbol"])
        result = await self.manager.submit(SubmitArgs(**kwargs), "test")
        return result["id"]

    def scheduler(self, exec_id: str) -> Scheduler:
        assert self.manager is not None
        return self.manager.schedulers[exec_id]

    async def wait_final(self, exec_id: str, timeout: float) -> ExecState:
        scheduler = self.scheduler(exec_id)
        with trio.fail_after(timeout):
            await scheduler.done.wait()
        return scheduler.state

    def intents(self, exec_id: str) -> list[tuple[float, OrderIntent]]:
        return [(t, i) for t, i in self.approver.intents if i.exec_id == exec_id]

    async def quote(self, symbol: str = "BTCUSDT") -> Any:
        """The manager's latest quote of `symbol` (waits for the first one)."""
        assert self.manager is not None
        with trio.fail_after(30):
            while True:
                stats = self.manager.stats.get(("sim", symbol))
                if stats is not None and stats.quote is not None:
                    return stats.quote
                await trio.sleep(0.5)

    async def open_at_venue(self, exec_id: str) -> list[Any]:
        return [o for o in await self.adapter.open_orders() if o.client_order_id.startswith(f"td-{exec_id}-")]
