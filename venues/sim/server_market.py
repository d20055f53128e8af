"""Market streams: the engine's book changes and trades as Binance stream events.

The engine publishes one `BookDiff` per operation, with update ids that
follow `snapshot().last_update_id` one by one. Binance sends depth updates
every 100 ms (``<symbol>@depth@100ms``) or every second (``<symbol>@depth``),
each covering a range of ids ``U..u``. The hub merges the engine's diffs into
those batches (the latest quantity per level wins), so that every id is in
exactly one batch and ``U`` of a batch is ``u + 1`` of the one before: a
client that follows the documented snapshot+diff procedure with `/depth`
never sees a gap unless a fault puts one there.

Trades (``@trade``) and the best bid/ask (``@bookTicker``) are sent as they
happen; ``@depth5/10/20`` are top-of-book snapshots on the same 100 ms / 1 s
ticks. Connections (``/ws/<name>``, ``/stream?streams=a/b``) accept
``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY`` and
``GET_PROPERTY`` (``combined``) requests.

The hub also keeps recent full snapshots, so a fault can answer `/depth`
with a stale one.
"""

from __future__ import annotations

import random
import re
from collections import deque
from decimal import Decimal

import msgspec
import trio
from websockets.exceptions import ConnectionClosed

from daemon.logs import Logger
from venues.base import BookDiff, BookSnapshot, PublicTrade
from venues.sim.engine import SimEngine
from venues.sim.server_config import Faults
from venues.sim.server_wire import Shapes, encode
from venues.sim.server_ws import WsSession

TICK = 0.1  # seconds between @100ms batches
SLOW_EVERY = 10  # @depth (1000 ms) batches every 10 ticks
SNAPSHOT_EVERY = 5  # ticks between snapshots kept for stale-snapshot faults
MAX_STREAMS = 1024

_NAME = re.compile(r"^(?P<symbol>[a-z0-9]+)@(?P<kind>trade|bookTicker|depth(?:5|10|20)?)(?:@(?P<speed>100ms))?$")


class StreamName(msgspec.Struct, frozen=True):
    name: str
    symbol: str
    kind: str  # trade | bookTicker | depth | depth5 | depth10 | depth20
    fast: bool  # 100 ms rather than 1000 ms (depth kinds only)


class _Batch:
    """Diffs merged since the last send of one symbol at one speed."""

    __slots__ = ("first", "last", "bids", "asks")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.first: int | None = None
        self.last = 0
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def add(self, diff: BookDiff) -> None:
        if self.first is None:
            self.first = diff.first_id
        self.last = diff.last_id
        self.bids.update(diff.bids)
        self.asks.update(diff.asks)

    def take(self) -> tuple[int, int, dict, dict] | None:
        if self.first is None:
            return None
        out = (self.first, self.last, self.bids, self.asks)
        self._reset()
        return out


class MarketSession(WsSession):
    """A market-stream connection: raw (``/ws``) or combined (``/stream``)."""

    kind = "market"

    def __init__(self, *args, combined: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.combined = combined
        self.streams: dict[str, StreamName] = {}

    def push_event(self, stream: str, payload: bytes) -> None:
        if self.combined:
            self.push(b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}")
        else:
            self.push(payload)


class MarketHub:
    """Turns engine market events into stream frames for every subscribed session."""

    def __init__(
        self,
        engine: SimEngine,
        shapes: Shapes,
        faults: Faults,
        rng: random.Random,
        log: Logger,
    ) -> None:
        self.engine = engine
        self.shapes = shapes
        self.faults = faults
        self.rng = rng
        self.log = log
        self._by_lower = {s.lower(): s for s in engine.symbols}
        self._subscribers: dict[str, set[MarketSession]] = {}
        self._fast = {s: _Batch() for s in engine.symbols}
        self._slow = {s: _Batch() for s in engine.symbols}
        self._changed_fast: set[str] = set()
        self._changed_slow: set[str] = set()
        self._tops: dict[str, tuple] = {}
        self._history: dict[str, deque[tuple[float, BookSnapshot]]] = {s: deque() for s in engine.symbols}
        self.sessions: set[MarketSession] = set()
        self.gaps_injected = 0
        self.batches_sent = 0

    # --- names -----------------------------------------------------------------------------

    def parse(self, name: str) -> StreamName | None:
        """A stream name we serve, or None."""
        m = _NAME.match(name)
        if m is None:
            return None
        symbol = self._by_lower.get(m.group("symbol"))
        if symbol is None:
            return None
        kind, speed = m.group("kind"), m.group("speed")
        if kind in ("trade", "bookTicker") and speed is not None:
            return None
        # Depth streams without a speed are the 1000 ms ones.
        return StreamName(name, symbol, kind, fast=speed is not None or not kind.startswith("depth"))

    # --- engine side -------------------------------------------------------------------------

    def on_event(self, event: BookDiff | PublicTrade) -> None:
        """Engine observer: queue, never wait."""
        if type(event) is BookDiff:
            symbol = event.symbol
            self._fast[symbol].add(event)
            self._slow[symbol].add(event)
            self._changed_fast.add(symbol)
            self._changed_slow.add(symbol)
            name = f"{symbol.lower()}@bookTicker"
            if self._subscribers.get(name):
                bid, ask = self.engine.best_bid(symbol), self.engine.best_ask(symbol)
                if self._tops.get(symbol) != (bid, ask):
                    self._tops[symbol] = (bid, ask)
                    self._broadcast(name, encode(self.shapes.book_ticker(symbol, event.last_id, bid, ask)))
        elif type(event) is PublicTrade:
            name = f"{event.symbol.lower()}@trade"
            if self._subscribers.get(name):
                self._broadcast(name, encode(self.shapes.trade(event, self.engine.now_ms())))

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the batched depth streams on their ticks; keep snapshots for stale-snapshot faults."""
        unsubscribe = self.engine.subscribe_market(self.on_event)
        try:
            for symbol in self.engine.symbols:
                self._remember(symbol, trio.current_time())
            task_status.started()
            ticks = 0
            next_tick = trio.current_time()
            while True:
                next_tick += TICK
                await trio.sleep_until(next_tick)
                ticks += 1
                self._flush(fast=True)
                if ticks % SLOW_EVERY == 0:
                    self._flush(fast=False)
                if ticks % SNAPSHOT_EVERY == 0:
                    now = trio.current_time()
                    for symbol in self.engine.symbols:
                        self._remember(symbol, now)
        finally:
            unsubscribe()

    def _flush(self, *, fast: bool) -> None:
        batches = self._fast if fast else self._slow
        changed = self._changed_fast if fast else self._changed_slow
        if not changed:
            return
        now_ms = self.engine.now_ms()
        suffix = "@100ms" if fast else ""
        for symbol in sorted(changed):
            taken = batches[symbol].take()
            if taken is None:
                continue
            lower = symbol.lower()
            followed = self._subscribers.get(f"{lower}@depth@100ms") or self._subscribers.get(f"{lower}@depth")
            if fast and followed and self._gap_due():
                self.gaps_injected += 1
                self._slow[symbol].take()  # the slow stream loses the same ids
                self.log.info("venue_server.fault_depth_gap", symbol=symbol, first=taken[0], last=taken[1])
                continue
            name = f"{lower}@depth{suffix}"
            if self._subscribers.get(name):
                first, last, bids, asks = taken
                self._broadcast(name, encode(self.shapes.depth_update(symbol, first, last, bids, asks, now_ms)))
                self.batches_sent += 1
            for levels in (5, 10, 20):
                name = f"{lower}@depth{levels}{suffix}"
                if self._subscribers.get(name):
                    snapshot = self.engine.snapshot(symbol, levels)
                    self._broadcast(name, encode(self.shapes.partial_depth(snapshot)))
        changed.clear()

    def _gap_due(self) -> bool:
        faults = self.faults
        if faults.depth_gaps > 0:
            faults.depth_gaps -= 1
            return True
        return bool(faults.depth_gap_rate) and self.rng.random() < faults.depth_gap_rate

    def _remember(self, symbol: str, now: float) -> None:
        history = self._history[symbol]
        history.append((now, self.engine.snapshot(symbol, None)))
        keep = max(10.0, 2 * self.faults.stale_snapshot_age)
        while len(history) > 1 and now - history[0][0] > keep:
            history.popleft()

    def stale_snapshot(self, symbol: str, age: float) -> BookSnapshot:
        """A snapshot taken at least `age` seconds ago (the oldest kept, if none is that old)."""
        now = trio.current_time()
        history = self._history[symbol]
        chosen = history[0][1] if history else self.engine.snapshot(symbol, None)
        for taken_at, snapshot in history:
            if now - taken_at >= age:
                chosen = snapshot
        return chosen

    # --- sessions ------------------------------------------------------------------------------

    def _broadcast(self, name: str, payload: bytes) -> None:
        for session in tuple(self._subscribers.get(name, ())):
            session.push_event(name, payload)

    def subscribe(self, session: MarketSession, names: list[StreamName]) -> None:
        for s in names:
            session.streams[s.name] = s
            self._subscribers.setdefault(s.name, set()).add(session)

    def unsubscribe(self, session: MarketSession, names: list[str]) -> None:
        for name in names:
            session.streams.pop(name, None)
            subscribers = self._subscribers.get(name)
            if subscribers is not None:
                subscribers.discard(session)
                if not subscribers:
                    del self._subscribers[name]

    async def serve(self, session: MarketSession, names: list[StreamName]) -> None:
        """Serve one market-stream connection until it ends."""
        self.sessions.add(session)
        self.subscribe(session, names)
        try:
            await session.run(self._read_requests)
        finally:
            self.unsubscribe(session, list(session.streams))
            self.sessions.discard(session)

    def announce_shutdown(self, event_ms: int) -> None:
        payload = encode({"e": "serverShutdown", "E": event_ms})
        for session in tuple(self.sessions):
            session.push_event("!serverShutdown", payload)

    async def _read_requests(self, session: MarketSession) -> None:
        """SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY.

        Binance cuts a market-stream client that sends more than 5 messages a
        second; so does this server (`stream_messages_per_second`).
        """
        limit = session.settings.stream_messages_per_second
        second, count = -1, 0
        try:
            while True:
                message = await session.ws.recv()
                now = int(trio.current_time())
                if now != second:
                    second, count = now, 0
                count += 1
                if count > limit:
                    session.drop(f"sent more than {limit} messages in a second")
                    return
                session.push(encode(self._answer(session, message)))
        except ConnectionClosed:
            pass

    def _answer(self, session: MarketSession, message: str | bytes) -> dict:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError as exc:
            return {"code": 3, "msg": f"Invalid JSON: {exc}"}
        if not isinstance(request, dict):
            return {"code": 3, "msg": "Invalid JSON: expected an object"}
        request_id = request.get("id")
        if request_id is not None and not isinstance(request_id, int | str):
            return {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer, a string, or null"}
        method = request.get("method")
        params = request.get("params", [])

        def error(code: int, msg: str) -> dict:
            return {"code": code, "msg": msg, "id": request_id}

        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return error(2, "Invalid request: params must be a list of stream names")
            if method == "UNSUBSCRIBE":
                self.unsubscribe(session, params)
                return {"result": None, "id": request_id}
            parsed = [self.parse(p) for p in params]
            unknown = [p for p, s in zip(params, parsed, strict=True) if s is None]
            if unknown:
                return error(2, f"Invalid request: unknown stream {unknown[0]!r}")
            if len(set(session.streams) | set(params)) > MAX_STREAMS:
                return error(2, f"Invalid request: at most {MAX_STREAMS} streams per connection")
            self.subscribe(session, [s for s in parsed if s is not None])
            return {"result": None, "id": request_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(session.streams), "id": request_id}
        if method == "SET_PROPERTY":
            if not (isinstance(params, list) and len(params) == 2 and params[0] == "combined"):
                return error(0, "Unknown property")
            if not isinstance(params[1], bool):
                return error(1, "Invalid value type: expected Boolean")
            session.combined = params[1]
            return {"result": None, "id": request_id}
        if method == "GET_PROPERTY":
            if params != ["combined"]:
                return error(0, "Unknown property")
            return {"result": session.combined, "id": request_id}
        return error(2, f"Invalid request: unknown method {method!r}")
