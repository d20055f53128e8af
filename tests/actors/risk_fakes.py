"""Fakes for the risk actor and emergency-stop tests: a journal, venues, gateways, executions.

The journal fake answers like `daemon.journal.Journal` (new / already journaled /
conflict, risk events, open orders) without SQLite, so tests can run on
MockClock; every record and every hand-off to a gateway lands in one shared
`trace`, which is how the tests check ordering.
"""

from __future__ import annotations

import itertools
from decimal import Decimal as D
from types import SimpleNamespace
from typing import Any

import msgspec
import trio

import actors.risk
from actors.risk_limits import RiskLimits, set_limit
from daemon import topics
from daemon.app import Daemon
from daemon.config import parse
from daemon.journal import JournalConflict
from daemon.journal_store import JournaledEvent
from daemon.logs import sink
from daemon.messages import Fill, Message, OrderIntent, OrderUpdate, Quote, VenueCancelReport
from daemon.model import Instrument, OrderStatus, OrderType, Side
from venues.base import OrderState, RateLimited, UnknownOutcome

BTC = Instrument(
    venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.001"),
    min_qty=D("0.001"), max_qty=D("100"), min_notional=D("0.5"),
)  # fmt: skip
ETH = Instrument(venue="other", symbol="ETHUSDT", base="ETH", quote="USDT", tick_size=D("0.01"), step_size=D("0.01"))

_ids = itertools.count(1)

# Limits that stay out of the way unless a test sets one (TOML cannot say "none").
OPEN_LIMITS = RiskLimits(
    price_collar_bps=None,
    max_orders_per_second=None,
    max_orders_per_minute=None,
    max_open_orders_per_instrument=None,
    max_open_orders=None,
)


def limits(base: RiskLimits = OPEN_LIMITS, **changes: Any) -> RiskLimits:
    """`limits(max_order_qty=1, rejects__max_rejects=2)`: OPEN_LIMITS with dotted keys set."""
    for key, value in changes.items():
        base = set_limit(base, key.replace("__", "."), str(value))
    return base


def intent(side=Side.BUY, qty="1", price="100", *, symbol="BTCUSDT", venue="sim", order_type=OrderType.LIMIT, **kw):
    n = next(_ids)
    return OrderIntent(
        client_order_id=f"td-t{n}-0", exec_id=f"t{n}", seq=0, venue=venue, symbol=symbol, side=side,
        order_type=order_type, quantity=D(qty), price=None if price is None else D(price), **kw,
    )  # fmt: skip


def quote(symbol="BTCUSDT", venue="sim", bid="100", ask="100.2", ts=None) -> Quote:
    return Quote(
        venue=venue, symbol=symbol, bid=D(bid), bid_qty=D(5), ask=D(ask), ask_qty=D(5),
        ts=trio.current_time() if ts is None else ts,
    )  # fmt: skip


def update(order: OrderIntent, status: OrderStatus, filled="0", reason="") -> OrderUpdate:
    return OrderUpdate(
        venue=order.venue, symbol=order.symbol, client_order_id=order.client_order_id, status=status,
        side=order.side, quantity=order.quantity, filled_qty=D(filled), price=order.price, reason=reason,
    )  # fmt: skip


def fill(order: OrderIntent, qty, price="100") -> Fill:
    return Fill(
        venue=order.venue, symbol=order.symbol, client_order_id=order.client_order_id, trade_id=f"x{next(_ids)}",
        side=order.side, price=D(price), qty=D(qty), fee=D(0), fee_asset="USDT", is_maker=False,
    )  # fmt: skip


def logged(event: str, needle: str = "") -> list[str]:
    """Log lines (from the sink's ring) with this event name and containing `needle`."""
    return [r.line for r in sink.ring if r.event == event and needle in r.line]


async def settle() -> None:
    """Let every other task run until it blocks (MockClock jumps past the sleep at once)."""
    await trio.sleep(0.001)


class FakeJournal:
    """What the risk actor and the kill ask of the journal, in memory."""

    def __init__(self, trace: list[tuple[str, Any]]) -> None:
        self.trace = trace
        self.running = True
        self.intents: dict[str, OrderIntent] = {}
        self.records: list[Any] = []
        self.open: list[OrderUpdate] = []
        self.unacknowledged: list[OrderIntent] = []
        self.orders: dict[str, OrderUpdate] = {}
        self.fail: Exception | None = None
        self.during_intent: Any = None  # called while an intent batch is being "written"

    def stats(self) -> Any:
        return SimpleNamespace(running=self.running)

    async def record_batch(self, records: list[OrderIntent]) -> list[Any]:
        await trio.lowlevel.checkpoint()
        if self.during_intent is not None:
            self.during_intent()
        if self.fail is not None:
            raise self.fail
        results: list[Any] = []
        for r in records:
            known = self.intents.get(r.client_order_id)
            if known is None:
                self.intents[r.client_order_id] = r
                self.trace.append(("journal", r.client_order_id))
                results.append(True)
            elif known == r:
                results.append(False)
            else:
                results.append(JournalConflict(f"client order id {r.client_order_id} is taken"))
        if any(isinstance(r, Exception) for r in results):
            from daemon.journal import JournalBatchError

            raise JournalBatchError(results)
        return results

    async def record_risk_event(self, event: Any) -> int:
        await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        self.records.append(event)
        self.trace.append(("journal", type(event).__name__))
        return len(self.records)

    async def record_update(self, update: OrderUpdate) -> bool:
        await trio.lowlevel.checkpoint()
        self.records.append(update)
        self.orders[update.client_order_id] = update
        return True

    async def open_orders(self, venue=None, symbol=None) -> list[OrderUpdate]:
        return list(self.open)

    async def intents_without_ack(self, venue=None) -> list[OrderIntent]:
        return list(self.unacknowledged)

    async def order(self, client_order_id: str) -> OrderUpdate | None:
        return self.orders.get(client_order_id)

    async def risk_events(self, *, since_ms=None, limit=None) -> list[JournaledEvent]:
        events = [r for r in self.records if isinstance(r, Message) and not isinstance(r, OrderUpdate)]
        if limit is not None:
            events = events[-limit:]
        return [JournaledEvent(seq=i, recorded_ms=0, event=e) for i, e in enumerate(events)]

    def of(self, kind: type) -> list[Any]:
        return [r for r in self.records if isinstance(r, kind)]


class GatewayInbox:
    """Stands in for gateway[venue]'s inbox: records what arrives and, optionally, fills market orders."""

    def __init__(self, daemon: Daemon, venue: str, trace: list[tuple[str, Any]], *, fill_market: bool = False):
        self.daemon = daemon
        self.venue = venue
        self.trace = trace
        self.fill_market = fill_market
        self.received: list[Any] = []
        self.sub = daemon.bus.subscribe(topics.orders(venue), name=f"gateway.{venue}")

    async def run(self) -> None:
        with self.sub:
            async for msg in self.sub:
                self.received.append(msg)
                if isinstance(msg, OrderIntent):
                    self.trace.append(("gateway", msg.client_order_id))
                    if self.fill_market and msg.order_type is OrderType.MARKET:
                        q = self.daemon.services["risk"].sentinel.book.quotes.get((msg.venue, msg.symbol))
                        price = q.bid if msg.side is Side.SELL else q.ask
                        await self.daemon.bus.publish(topics.FILL, fill(msg, msg.quantity, price))
                        await self.daemon.bus.publish(
                            topics.ORDER_UPDATE,
                            msgspec.structs.replace(update(msg, OrderStatus.FILLED, msg.quantity), avg_price=price),
                        )


class Rig:
    """A Daemon that is not run: the risk actor (and emergency stop) wired to fakes."""

    def __init__(self, daemon: Daemon, journal: FakeJournal, trace: list[tuple[str, Any]]) -> None:
        self.daemon = daemon
        self.journal = journal
        self.trace = trace
        self.risk: actors.risk.RiskActor = daemon.services["risk"]
        self.emergency = daemon.services["emergency"]
        self.gateways: dict[str, GatewayInbox] = {}

    async def submit(self, order: OrderIntent, timeout: float = 10.0) -> Any:
        return await self.daemon.bus.request(topics.RISK_SUBMIT, order, timeout=timeout)

    async def publish(self, topic: str, msg: Any) -> None:
        await self.daemon.bus.publish(topic, msg)
        await settle()


async def start_rig(
    nursery: trio.Nursery,
    risk_limits: RiskLimits = OPEN_LIMITS,
    *,
    toml: str = "",
    venues: tuple[str, ...] = ("sim", "other"),
    instruments: tuple[Instrument, ...] = (BTC, ETH),
    fill_market: bool = False,
    journal: FakeJournal | None = None,
    trace: list | None = None,
    start: bool = True,
) -> Rig:
    trace = trace if trace is not None else []
    daemon = Daemon(parse(toml, "test.toml"), socket_path="/nonexistent/control.sock")
    journal = journal or FakeJournal(trace)
    daemon.services["journal"] = journal
    daemon.services["instruments"] = {(i.venue, i.symbol): i for i in instruments}
    actors.risk.install(daemon).sentinel.replace_limits(risk_limits)
    rig = Rig(daemon, journal, trace)
    for venue in venues:
        inbox = GatewayInbox(daemon, venue, trace, fill_market=fill_market)
        rig.gateways[venue] = inbox
        nursery.start_soon(inbox.run)
    if start:
        await nursery.start(rig.risk.run)
        for inst in instruments:
            await rig.publish(topics.QUOTE, quote(inst.symbol, inst.venue))
    return rig


# ---------------------------------------------------------------------------------------
# Venues and gateways for the kill
# ---------------------------------------------------------------------------------------


class FakeVenue:
    """A venue's order book of our open orders, with the faults the kill must survive.

    latency: seconds each call takes; cancel_failures: how many cancel-alls answer
    "503" first; rate_limited: how many open-orders queries answer 429 first;
    stuck: client order ids the venue never lets go of.
    """

    def __init__(
        self,
        name: str,
        orders: int,
        *,
        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
        latency: float = 0.0,
        cancel_failures: int = 0,
        rate_limited: int = 0,
        retry_after: float = 0.5,
        stuck: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.latency = latency
        self.cancel_failures = cancel_failures
        self.rate_limited = rate_limited
        self.retry_after = retry_after
        self.open: dict[str, OrderState] = {}
        for i in range(orders):
            self.add(f"{name}-{i}", symbols[i % len(symbols)])
        for cid in stuck:
            self.add(cid, symbols[0])
        self.stuck = set(stuck)
        self.calls: list[tuple[str, float]] = []

    def add(self, cid: str, symbol: str) -> None:
        self.open[cid] = OrderState(
            symbol=symbol, client_order_id=cid, venue_order_id=cid, status=OrderStatus.NEW, side=Side.BUY,
            order_type=OrderType.LIMIT, quantity=D(1), filled_qty=D(0), price=D(100),
        )  # fmt: skip

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        self.calls.append(("open_orders", trio.current_time()))
        await trio.sleep(self.latency)
        if self.rate_limited:
            self.rate_limited -= 1
            raise RateLimited(self.retry_after, "429")
        return [o for o in self.open.values() if symbol is None or o.symbol == symbol]

    async def emergency_cancel_all(self, symbol: str) -> list[OrderState]:
        self.calls.append(("cancel_all", trio.current_time()))
        await trio.sleep(self.latency)
        if self.cancel_failures:
            self.cancel_failures -= 1
            raise UnknownOutcome("HTTP 503 from the venue")
        gone = [o for cid, o in self.open.items() if o.symbol == symbol and cid not in self.stuck]
        for o in gone:
            del self.open[o.client_order_id]
        return [msgspec.structs.replace(o, status=OrderStatus.CANCELED) for o in gone]


class FakeGateway:
    """A gateway handle doing what a real one does at a kill, against a FakeVenue.

    Each round asks which orders are open, cancels every symbol that has some
    (in parallel), and the next query verifies; failures are retried after a
    back-off (or the venue's retry_after) until none is open or the deadline.
    """

    def __init__(self, venue: FakeVenue, pause: float = 0.1) -> None:
        self.venue = venue
        self.pause = pause
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.during: Any = None  # an async callable run at the start (e.g. to try an order mid-kill)

    async def cancel_all_and_verify(self, deadline: float) -> VenueCancelReport:
        self.started_at = trio.current_time()
        if self.during is not None:
            await self.during()
        cancelled: set[str] = set()
        still_open: tuple[str, ...] = ()
        verified, error, attempts, wait = False, "", 0, self.pause
        with trio.move_on_at(deadline):
            while True:
                try:
                    open_now = await self.venue.open_orders()
                except RateLimited as exc:
                    error, wait = str(exc), max(wait, exc.retry_after)
                else:
                    still_open = tuple(sorted(o.client_order_id for o in open_now))
                    if not still_open:
                        verified, error = True, ""
                        break
                    attempts += 1
                    async with trio.open_nursery() as nursery:
                        for symbol in sorted({o.symbol for o in open_now}):
                            nursery.start_soon(self._cancel, symbol, cancelled)
                    if self._failed:
                        error, self._failed = self._failed, ""
                    elif attempts == 1:
                        continue  # verify the first clean cancel at once; orders that stay get a back-off
                await trio.sleep(wait)
                wait = min(wait * 2, 1.0)
        if not verified and still_open:
            error = error or f"{len(still_open)} order(s) still open when the deadline passed"
        self.finished_at = trio.current_time()
        return VenueCancelReport(
            venue=self.venue.name, cancelled=len(cancelled), still_open=() if verified else still_open,
            attempts=attempts, elapsed=self.finished_at - self.started_at, verified=verified, error=error,
        )  # fmt: skip

    _failed = ""

    async def _cancel(self, symbol: str, cancelled: set[str]) -> None:
        try:
            states = await self.venue.emergency_cancel_all(symbol)
        except UnknownOutcome as exc:
            self._failed = str(exc)
            return
        cancelled.update(s.client_order_id for s in states)


class HangingGateway:
    async def cancel_all_and_verify(self, deadline: float) -> VenueCancelReport:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class BrokenGateway:
    async def cancel_all_and_verify(self, deadline: float) -> VenueCancelReport:
        await trio.lowlevel.checkpoint()
        raise ConnectionError("gateway crashed mid-kill")


class FakeExecutions:
    def __init__(self, *, count: int = 2, hang: bool = False) -> None:
        self.count = count
        self.hang = hang
        self.calls: list[tuple[str, Any]] = []
        self.state_when_called: Any = None
        self.risk: Any = None

    async def stop_all(self, reason: str) -> int:
        self.calls.append(("stop_all", reason))
        if self.risk is not None:
            self.state_when_called = self.risk.state
        if self.hang:
            await trio.sleep_forever()
        await trio.sleep(0.1)
        return self.count

