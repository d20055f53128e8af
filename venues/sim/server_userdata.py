"""User data: the engine's account events as Binance `executionReport` and `outboundAccountPosition`.

The engine tells an account's observers, in order: `OrderUpdate` NEW, then
per trade a `Fill` immediately followed by the order's `OrderUpdate`, then
EXPIRED / CANCELED where it applies, and one `BalanceUpdate` per changed
asset at the end of the operation. Binance folds a trade and the order's new
state into one executionReport (``x = TRADE``), and sends one
outboundAccountPosition per operation listing the changed assets; this
module does the same.

Events reach clients through sinks: a WebSocket API subscription (wrapped in
``{"subscriptionId": N, "event": ...}``) or a legacy listenKey stream
(unwrapped). Duplicate and reorder faults are applied per sink, so each
client sees its own disorder while the engine's truth stays intact.

Engine observers cannot wait, so events are queued and a task encodes and
sends them; the task runs only after an engine operation has finished, which
is what lets it group an operation's balance changes into one event.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

import trio

from daemon.logs import Logger
from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import OrderStatus
from venues.base import VenueError
from venues.sim.engine import SimEngine
from venues.sim.server_config import Faults
from venues.sim.server_wire import Shapes, encode

_EXECUTION_TYPE = {
    OrderStatus.NEW: "NEW",
    OrderStatus.CANCELED: "CANCELED",
    OrderStatus.EXPIRED: "EXPIRED",
    OrderStatus.REJECTED: "REJECTED",
}
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class Sink(Protocol):
    def deliver(self, payload: bytes) -> None: ...


class UserDataHub:
    """Per-account user-data events for every sink of that account."""

    def __init__(self, engine: SimEngine, shapes: Shapes, faults: Faults, rng: random.Random, log: Logger) -> None:
        self.engine = engine
        self.shapes = shapes
        self.faults = faults
        self.rng = rng
        self.log = log
        self._sinks: dict[str, list[Sink]] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._fills: dict[tuple[str, str], Fill] = {}  # (account, order id) -> fill awaiting its OrderUpdate
        self._queue: list[tuple[str, object]] = []
        self._wake = trio.Event()
        self.cancel_ids: dict[tuple[str, str], str] = {}  # (account, order id) -> id of the cancel request
        self._execution_ids = 0
        self.listen_keys: dict[str, tuple[str, float]] = {}  # listenKey -> (account, expires at, trio time)

    # --- ids ------------------------------------------------------------------------------------

    def random_id(self, length: int = 22) -> str:
        """A Binance-looking generated id (cancel ids, listen keys): deterministic under the seed."""
        return "".join(self.rng.choice(_ALPHABET) for _ in range(length))

    # --- sinks ----------------------------------------------------------------------------------

    def attach(self, account: str, sink: Sink) -> Callable[[], None]:
        """Send `account`'s events to `sink` from now on; returns the detach function."""
        sinks = self._sinks.setdefault(account, [])
        sinks.append(sink)
        if account not in self._unsubscribe:
            self._unsubscribe[account] = self.engine.subscribe_account(
                account, lambda event, account=account: self._on_event(account, event)
            )

        def detach() -> None:
            if sink in sinks:
                sinks.remove(sink)
            if not sinks:
                self._sinks.pop(account, None)
                unsubscribe = self._unsubscribe.pop(account, None)
                if unsubscribe is not None:
                    unsubscribe()

        return detach

    def sinks(self) -> list[Sink]:
        return [sink for sinks in self._sinks.values() for sink in sinks]

    # --- listen keys (the legacy user data stream) -----------------------------------------------

    def new_listen_key(self, account: str, minutes: float) -> str:
        for key, (owner, _) in self.listen_keys.items():
            if owner == account:  # Binance hands out the same key while it is valid
                self.listen_keys[key] = (owner, trio.current_time() + minutes * 60)
                return key
        key = self.random_id(60)
        self.listen_keys[key] = (account, trio.current_time() + minutes * 60)
        return key

    def listen_key_account(self, key: str) -> str | None:
        entry = self.listen_keys.get(key)
        if entry is None:
            return None
        if trio.current_time() > entry[1]:
            del self.listen_keys[key]
            return None
        return entry[0]

    def keep_alive(self, key: str, account: str, minutes: float) -> bool:
        if self.listen_key_account(key) != account:
            return False
        self.listen_keys[key] = (account, trio.current_time() + minutes * 60)
        return True

    def close_listen_key(self, key: str, account: str) -> bool:
        if self.listen_key_account(key) != account:
            return False
        del self.listen_keys[key]
        return True

    # --- engine side ------------------------------------------------------------------------------

    def _on_event(self, account: str, event: OrderUpdate | Fill | BalanceUpdate) -> None:
        """Engine observer: pair fills with their order update, queue, never wait."""
        kind = type(event)
        if kind is Fill:
            self._fills[(account, event.venue_order_id or "")] = event  # type: ignore[union-attr]
            return
        if kind is OrderUpdate:
            fill = self._fills.pop((account, event.venue_order_id or ""), None)  # type: ignore[union-attr]
            self._queue.append((account, self._execution_report(account, event, fill)))  # type: ignore[arg-type]
        else:
            self._queue.append((account, event))
        self._wake.set()

    def _execution_report(self, account: str, update: OrderUpdate, fill: Fill | None) -> dict:
        try:
            state = self.engine.query_order(account, update.symbol, venue_order_id=update.venue_order_id)
        except VenueError:
            state = None
        cancel_id = None
        if update.status is OrderStatus.CANCELED:
            cancel_id = self.cancel_ids.get((account, update.venue_order_id or "")) or self.random_id()
        self._execution_ids += 1
        return self.shapes.execution_report(
            update,
            state,
            fill,
            execution_type="TRADE" if fill is not None else _EXECUTION_TYPE.get(update.status, "NEW"),
            cancel_client_id=cancel_id,
            execution_id=self._execution_ids,
            event_ms=self.engine.now_ms(),
        )

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Encode queued events and deliver them, one engine operation's balances grouped."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            queue, self._queue = self._queue, []
            by_account: dict[str, list[bytes]] = {}
            balances: dict[str, list[BalanceUpdate]] = {}

            def close_balances(account: str) -> None:
                pending = balances.pop(account, None)
                if pending:
                    latest = {b.asset: b for b in pending}  # the last state of each asset
                    payload = self.shapes.account_position(list(latest.values()), self.engine.now_ms())
                    by_account.setdefault(account, []).append(encode(payload))

            for account, item in queue:
                if type(item) is BalanceUpdate:
                    balances.setdefault(account, []).append(item)
                    continue
                close_balances(account)
                by_account.setdefault(account, []).append(encode(item))
            for account in list(balances):
                close_balances(account)
            for account, payloads in by_account.items():
                for sink in tuple(self._sinks.get(account, ())):
                    self._deliver(sink, payloads)

    def _deliver(self, sink: Sink, payloads: list[bytes]) -> None:
        faults = self.faults
        out = list(payloads)
        if faults.user_reorder_rate:
            i = 0
            while i + 1 < len(out):
                if self.rng.random() < faults.user_reorder_rate:
                    out[i], out[i + 1] = out[i + 1], out[i]
                    self.log.info("venue_server.fault_user_reorder")
                    i += 2
                else:
                    i += 1
        for payload in out:
            sink.deliver(payload)
            if faults.user_duplicate_rate and self.rng.random() < faults.user_duplicate_rate:
                self.log.info("venue_server.fault_user_duplicate")
                sink.deliver(payload)
