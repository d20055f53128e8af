"""feed[venue]: one venue's market data, kept as local books and published as quotes, depth and trades.

One market-data connection carries every configured symbol of the venue. Each
symbol has a `BookSync` (the documented snapshot + diff procedure, a pure
state machine in `venues.orderbook`); the feed only carries out what it says:
fetch a snapshot when a book is waiting for one, fetch again when the snapshot
was stale or a gap was found (logged ``book.resync``), publish after each
applied diff.

Published (DESIGN §2):
- `Quote` on ``topics.QUOTE`` when the top of a live book changes, and `Depth`
  (the best `depth_levels` per side) on ``topics.DEPTH`` after every applied
  diff; both are read conflated, so the feed never waits for a reader.
- Every `MarketTrade` on ``topics.TRADE`` (lossless: volume counts).
- `FeedStatus` on ``topics.FEED_STATUS`` on every change and every
  `status_interval`: ``connecting`` (no connection yet, or a short outage),
  ``syncing`` (connected, some book not live yet), ``live``, ``stale``
  (connected, but no frame or no live book for `stale_after` seconds) and
  ``down`` (no connection for `stale_after` seconds). Risk puts the venue in
  REDUCING on stale/down, so a planned reconnect, which resyncs within a
  second or two, never shows as either.

Reconnecting the connection is the feed's normal work, not a crash: it
reconnects with exponential back-off and jitter, and the back-off resets only
after a connection stayed up for `reconnect.reset_after` seconds, so a venue
that accepts and drops at once is not hammered. A connection with no frame for
`silence_timeout` seconds is dead. A connection is replaced, on purpose, before
the venue's 24 h limit (`max_connection_age`) and when the venue announces a
shutdown. A new connection subscribes every symbol again and every book starts
over from a snapshot. Bugs still crash the actor, for its supervisor.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from daemon import topics
from daemon.config import register_section
from daemon.health import Level
from daemon.logs import Logger, describe_error, get_logger
from daemon.messages import Depth, FeedStatus, MarketTrade, Quote
from daemon.model import Instrument
from daemon.supervisor import Backoff
from venues.base import BookDiff, PublicTrade, RateLimited, StreamNotice, UnknownOutcome, VenueAdapter, VenueError, VenueUnavailable
from venues.orderbook import BookSync, LocalBook, SyncAction

if TYPE_CHECKING:
    from daemon.bus import Bus
    from daemon.health import Health


class FeedConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[feed]`` section: market data of every venue.

    ``symbols`` lists what to stream per venue (``[feed.symbols] binance =
    ["BTCUSDT"]``); an empty list means no market data from that venue. A
    simulated venue streams all its instruments by default.
    """

    symbols: dict[str, list[str]] = {}
    snapshot_depth: int = 1000  # levels per side in a REST snapshot (Binance: weight 50 at 1000)
    depth_levels: int = 20  # levels per side in a published Depth
    silence_timeout: float = 60.0  # no frame for this long: the connection is dead
    stale_after: float = 30.0  # not live, or no frame, for this long: publish stale (or down)
    max_connection_age: float = 23.5 * 3600  # replace a connection before the venue's 24 h limit
    reconnect: Backoff = Backoff(initial=1.0, multiplier=2.0, maximum=30.0, jitter=0.2, reset_after=60.0)
    snapshot_retry: float = 0.5  # first delay before fetching a snapshot again; doubles up to 10 s
    snapshot_concurrency: int = 4  # snapshots fetched at once after a (re)connect
    status_interval: float = 1.0
    start_timeout: float = 10.0

    def __post_init__(self) -> None:
        for key in ("silence_timeout", "stale_after", "max_connection_age", "snapshot_retry", "status_interval", "start_timeout"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")
        for key in ("snapshot_depth", "depth_levels", "snapshot_concurrency"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1, got {getattr(self, key)}")


register_section("feed", FeedConfig)

MAX_SNAPSHOT_DELAY = 10.0


class FeedState(enum.StrEnum):
    CONNECTING = "connecting"
    SYNCING = "syncing"
    LIVE = "live"
    STALE = "stale"
    DOWN = "down"


@dataclass(frozen=True)
class _Disconnect:
    """Why a connection ended; `planned` reconnects at once, without back-off."""

    reason: str
    planned: bool = False


class Feed:
    """feed[venue]: the actor (`run`) and its handle (`daemon.services["feeds"][venue]`).

    `instruments` maps (venue, symbol) to instruments, filled by the gateway
    that starts before the feed; tick sizes key the books.
    """

    def __init__(
        self,
        venue: str,
        adapter: VenueAdapter,
        symbols: Sequence[str],
        *,
        bus: Bus,
        instruments: Mapping[tuple[str, str], Instrument],
        config: FeedConfig | None = None,
        health: Health | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self.adapter = adapter
        self.configured = tuple(dict.fromkeys(symbols))
        self.bus = bus
        self.instruments = instruments
        self.config = config or FeedConfig()
        self.health = health
        self.rng = rng or random.Random()
        self.log: Logger = get_logger(f"feed.{venue}")
        self.books: dict[str, BookSync] = {}
        self.symbols: tuple[str, ...] = ()
        self._quotes: dict[str, Quote] = {}
        self._tops: dict[str, tuple[Any, Any]] = {}
        # status, kept across runs so `venues` shows the history
        self.state = FeedState.CONNECTING
        self.reconnects = 0
        self.connections = 0
        self.frames = 0
        self.resyncs = 0
        self.snapshots = 0
        self.overruns = 0
        self.last_error = ""
        self.detail = ""
        self._connected_at: float | None = None
        self._down_since = 0.0
        self._not_live_since = 0.0
        self._last_frame: float | None = None
        self._disconnect_reason = ""
        self._nursery: trio.Nursery | None = None
        self._snapshot_pending: set[str] = set()
        self._snapshot_limiter = trio.CapacityLimiter(self.config.snapshot_concurrency)
        self._published_state: FeedState | None = None

    # --- the handle -------------------------------------------------------------------------
    def last_quote(self, symbol: str) -> Quote | None:
        """The latest quote of a live book (None while the book is not live)."""
        sync = self.books.get(symbol)
        if sync is None or not sync.is_live:
            return None
        return self._quotes.get(symbol)

    def book(self, symbol: str) -> LocalBook | None:
        sync = self.books.get(symbol)
        return sync.book if sync is not None and sync.is_live else None

    def frame_age(self) -> float | None:
        if self._last_frame is None or self._connected_at is None:
            return None
        return trio.current_time() - self._last_frame

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        age = self.frame_age()
        return {
            "state": self.state.value,
            "symbols": list(self.symbols or self.configured),
            "live_books": sum(1 for s in self.books.values() if s.is_live),
            "books": len(self.books),
            "connected_for": round(now - self._connected_at, 3) if self._connected_at is not None else None,
            "last_frame_age": round(age, 3) if age is not None else None,
            "reconnects": self.reconnects,
            "frames": self.frames,
            "resyncs": self.resyncs,
            "gaps": sum(s.gaps for s in self.books.values()),
            "snapshots": self.snapshots,
            "overruns": self.overruns,
            "detail": self.detail,
            "last_error": self.last_error,
        }

    # --- the actor --------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[Feed] = trio.TASK_STATUS_IGNORED) -> None:
        self._setup_books()
        self._down_since = trio.current_time()
        self._connected_at = None
        self._last_frame = None
        self._disconnect_reason = "starting"
        self._set_state(FeedState.CONNECTING, "starting")
        task_status.started(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._status_loop)
                await self._connection_loop()
        finally:
            self._connected_at = None
            if self.health is not None:
                self.health.report(f"feed.{self.venue}", Level.DEGRADED, "not running")

    def _setup_books(self, *, quiet: bool = False) -> None:
        books: dict[str, BookSync] = {}
        missing = []
        for symbol in self.configured:
            inst = self.instruments.get((self.venue, symbol))
            if inst is None:
                missing.append(symbol)
                continue
            books[symbol] = BookSync(LocalBook(symbol, inst.tick_size))
        if missing and not quiet:
            self.log.error(
                "feed.unknown_symbols",
                venue=self.venue,
                symbols=missing,
                hint="the venue does not list these symbols: check [feed.symbols] in the config",
            )
        self.books = books
        self.symbols = tuple(books)
        self._quotes.clear()
        self._tops.clear()

    async def _connection_loop(self) -> None:
        backoff = self.config.reconnect
        attempt = 0
        first = True
        while True:
            while not self.symbols:
                # the gateway loads the instruments; until it has, there is nothing to key a book on
                self._set_state(FeedState.DOWN, "no known symbol to stream yet: check [feed.symbols] and the gateway")
                await trio.sleep(self.config.status_interval)
                self._setup_books(quiet=True)
            if not first:
                self.reconnects += 1
            first = False
            connected_at: float | None = None
            retry_after = 0.0
            try:
                async with self.adapter.market_stream(self.symbols) as stream:
                    connected_at = trio.current_time()
                    self._on_connected(connected_at, attempt)
                    ended = await self._run_connection(stream, connected_at)
            except RateLimited as exc:
                retry_after = exc.retry_after
                ended = _Disconnect(f"refused: {describe_error(exc)}")
            except (VenueUnavailable, VenueError, UnknownOutcome, OSError) as exc:
                ended = _Disconnect(f"connection failed: {describe_error(exc)}")
            now = trio.current_time()
            self._on_disconnected(now, ended)
            if connected_at is not None and now - connected_at >= backoff.reset_after:
                attempt = 0
            if ended.planned:
                delay = 0.0
            else:
                delay = max(backoff.delay(attempt, self.rng), retry_after)
                attempt += 1
            self.log.info(
                "venue.reconnect",
                venue=self.venue,
                reason=ended.reason,
                attempt=attempt,
                delay=round(delay, 3),
                planned=ended.planned or None,
            )
            if delay > 0:
                await trio.sleep(delay)

    def _on_connected(self, now: float, attempt: int) -> None:
        self.connections += 1
        self._connected_at = now
        self._last_frame = now
        self._not_live_since = now
        for sync in self.books.values():
            sync.reset()  # a new stream: every book starts over from a snapshot
        self._tops.clear()
        self.log.info(
            "venue.connected",
            venue=self.venue,
            stream="market",
            symbols=len(self.symbols),
            reconnects=self.reconnects,
            attempt=attempt or None,
        )
        self._set_state(FeedState.SYNCING, "fetching snapshots")

    def _on_disconnected(self, now: float, ended: _Disconnect) -> None:
        if self._connected_at is not None:
            self._down_since = now
        self._connected_at = None
        self._disconnect_reason = ended.reason
        if not ended.planned:
            self.last_error = ended.reason
        for sync in self.books.values():
            sync.reset()
        self._refresh_state()

    async def _run_connection(self, stream: Any, connected_at: float) -> _Disconnect:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for symbol in self.symbols:
                    self._request_snapshot(symbol)
                ended = await self._read(stream, connected_at)
            finally:
                self._nursery = None
                self._snapshot_pending.clear()
            nursery.cancel_scope.cancel()
        return ended

    async def _read(self, stream: Any, connected_at: float) -> _Disconnect:
        cfg = self.config
        events = stream.__aiter__()
        retire_at = connected_at + cfg.max_connection_age
        while True:
            last = self._last_frame if self._last_frame is not None else connected_at
            event: Any = None
            with trio.move_on_at(min(last + cfg.silence_timeout, retire_at)):
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    return _Disconnect("the venue closed the connection")
                except VenueUnavailable as exc:
                    return _Disconnect(f"connection lost: {describe_error(exc)}")
            now = trio.current_time()
            if event is None:
                if now >= retire_at:
                    return _Disconnect(f"connection is {cfg.max_connection_age:g}s old", planned=True)
                self.log.warning("feed.silent", venue=self.venue, seconds=round(now - last, 3))
                return _Disconnect(f"no frame for {cfg.silence_timeout:g}s")
            self._last_frame = now
            self.frames += 1
            kind = type(event)
            if kind is BookDiff:
                self._on_diff(event)
            elif kind is PublicTrade:
                await self._publish_trade(event, now)
            elif kind is StreamNotice:
                if event.kind == "server_shutdown":
                    return _Disconnect("the venue announced a shutdown", planned=True)
            if self.state is not FeedState.LIVE and self.state is not FeedState.SYNCING:
                self._refresh_state()

    # --- books ------------------------------------------------------------------------------
    def _on_diff(self, diff: BookDiff) -> None:
        sync = self.books.get(diff.symbol)
        if sync is None:
            return  # a symbol we did not ask for
        was_live = sync.is_live
        book_id = sync.book.update_id
        try:
            action = sync.on_diff(diff)
        except ValueError as exc:
            self._refresh_tick(diff.symbol)
            self._resync(diff.symbol, f"unusable level: {exc}")
            return
        if action is SyncAction.APPLIED:
            if sync.book.is_crossed:
                sync.reset()
                self._resync(diff.symbol, "the book crossed")
                return
            self._publish_book(diff.symbol)
        elif action is SyncAction.BUFFERED:
            self._request_snapshot(diff.symbol)
        elif action is SyncAction.RESYNC:
            self._resync(diff.symbol, f"gap: diff {diff.first_id}..{diff.last_id} does not follow update {book_id}")
        if was_live and not sync.is_live:
            self._book_lost()

    def _resync(self, symbol: str, reason: str) -> None:
        sync = self.books[symbol]
        self.resyncs += 1
        self.log.warning("book.resync", venue=self.venue, symbol=symbol, reason=reason, gaps=sync.gaps)
        if sync.is_live:
            sync.reset()
        self._tops.pop(symbol, None)
        self._book_lost()
        self._request_snapshot(symbol)

    def _refresh_tick(self, symbol: str) -> None:
        """A price off the book's tick: if the venue changed the tick size, key the book on the new one."""
        inst = self.instruments.get((self.venue, symbol))
        sync = self.books[symbol]
        if inst is not None and inst.tick_size != sync.book.tick_size:
            self.log.warning("book.tick_changed", venue=self.venue, symbol=symbol, old=sync.book.tick_size, new=inst.tick_size)
            self.books[symbol] = BookSync(LocalBook(symbol, inst.tick_size))

    def _book_lost(self) -> None:
        if self.state is FeedState.LIVE:
            self._not_live_since = trio.current_time()
        self._refresh_state()

    def _request_snapshot(self, symbol: str) -> None:
        if symbol in self._snapshot_pending or self._nursery is None:
            return
        self._snapshot_pending.add(symbol)
        self._nursery.start_soon(self._fetch_snapshot, symbol)

    async def _fetch_snapshot(self, symbol: str) -> None:
        cfg = self.config
        failures = 0
        try:
            while True:
                delay = 0.0
                async with self._snapshot_limiter:
                    sync = self.books[symbol]
                    if sync.is_live:
                        return
                    try:
                        snapshot = await self.adapter.book_snapshot(symbol, cfg.snapshot_depth)
                    except RateLimited as exc:
                        delay = exc.retry_after
                        self.log.warning("book.snapshot_failed", venue=self.venue, symbol=symbol, error=describe_error(exc))
                    except (VenueUnavailable, VenueError, UnknownOutcome) as exc:
                        self.log.warning("book.snapshot_failed", venue=self.venue, symbol=symbol, error=describe_error(exc))
                    else:
                        self.snapshots += 1
                        if sync.is_live:
                            return
                        try:
                            action = sync.on_snapshot(snapshot)
                        except ValueError as exc:
                            self.log.error("book.snapshot_unusable", venue=self.venue, symbol=symbol, error=str(exc))
                            self._refresh_tick(symbol)
                        else:
                            if action is SyncAction.SYNCED:
                                self.log.info(
                                    "book.synced",
                                    venue=self.venue,
                                    symbol=symbol,
                                    update_id=sync.book.update_id,
                                    levels=sum(sync.book.depth()),
                                )
                                self._publish_book(symbol)
                                self._refresh_state()
                                return
                            self.resyncs += 1
                            self.log.warning(
                                "book.resync",
                                venue=self.venue,
                                symbol=symbol,
                                reason=action.value,
                                snapshot_id=snapshot.last_update_id,
                            )
                            if action is SyncAction.STALE_SNAPSHOT and failures == 0:
                                failures += 1
                                continue  # the documented step: fetch the snapshot again at once
                    failures += 1
                    delay = max(delay, min(MAX_SNAPSHOT_DELAY, cfg.snapshot_retry * 2 ** (failures - 1)))
                await trio.sleep(delay)
        finally:
            self._snapshot_pending.discard(symbol)

    def _publish_book(self, symbol: str) -> None:
        book = self.books[symbol].book
        now = trio.current_time()
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None and self._tops.get(symbol) != (bid, ask):
            self._tops[symbol] = (bid, ask)
            quote = Quote(
                venue=self.venue,
                symbol=symbol,
                bid=bid[0],
                bid_qty=bid[1],
                ask=ask[0],
                ask_qty=ask[1],
                ts=now,
            )
            self._quotes[symbol] = quote
            if not self.bus.publish_nowait(topics.QUOTE, quote):
                self.overruns += 1
        n = self.config.depth_levels
        depth = Depth(
            venue=self.venue,
            symbol=symbol,
            bids=book.bids(n),
            asks=book.asks(n),
            ts=now,
            update_id=book.update_id,
        )
        if not self.bus.publish_nowait(topics.DEPTH, depth):
            self.overruns += 1

    async def _publish_trade(self, trade: PublicTrade, now: float) -> None:
        if trade.symbol not in self.books:
            return
        await self.bus.publish(
            topics.TRADE,
            MarketTrade(
                venue=self.venue,
                symbol=trade.symbol,
                trade_id=trade.trade_id,
                price=trade.price,
                qty=trade.qty,
                taker_side=trade.taker_side,
                ts=now,
                venue_ms=trade.venue_ms,
            ),
        )

    # --- status -----------------------------------------------------------------------------
    def _compute_state(self, now: float) -> tuple[FeedState, str]:
        stale_after = self.config.stale_after
        if self._connected_at is None:
            outage = now - self._down_since
            reason = self._disconnect_reason
            if outage >= stale_after:
                return FeedState.DOWN, f"no connection for {outage:.0f}s" + (f": {reason}" if reason else "")
            return FeedState.CONNECTING, reason
        age = now - (self._last_frame if self._last_frame is not None else self._connected_at)
        if age >= stale_after:
            return FeedState.STALE, f"no frame for {age:.0f}s"
        waiting = [s for s, sync in self.books.items() if not sync.is_live]
        if not waiting:
            return FeedState.LIVE, ""
        detail = f"{len(waiting)} of {len(self.books)} books not live: {', '.join(waiting[:5])}"
        if now - self._not_live_since >= stale_after:
            return FeedState.STALE, detail
        return FeedState.SYNCING, detail

    def _refresh_state(self) -> None:
        self._set_state(*self._compute_state(trio.current_time()))

    def _set_state(self, state: FeedState, detail: str = "") -> None:
        previous = self.state
        self.state = state
        self.detail = detail
        if state is previous and self._published_state is state:
            return
        if state is not previous:
            level = self.log.warning if state in (FeedState.STALE, FeedState.DOWN) else self.log.info
            level(
                "feed.stale" if state in (FeedState.STALE, FeedState.DOWN) else "feed.state",
                venue=self.venue,
                state=state.value,
                previous=previous.value,
                detail=detail or None,
            )
        if self.health is not None:
            if state is FeedState.LIVE:
                self.health.report(f"feed.{self.venue}", Level.HEALTHY, "")
            else:
                self.health.report(f"feed.{self.venue}", Level.DEGRADED, f"{state.value}" + (f": {detail}" if detail else ""))
        self._publish_status()

    def _status(self) -> FeedStatus:
        age = self.frame_age()
        return FeedStatus(
            venue=self.venue,
            state=self.state.value,
            symbols=self.symbols,
            reconnects=self.reconnects,
            last_frame_age=round(age, 3) if age is not None else None,
            detail=self.detail,
        )

    def _publish_status(self) -> None:
        """Publish at once if every reader has room; otherwise the status loop publishes it, waiting."""
        self._published_state = self.state
        try:
            if not self.bus.publish_nowait(topics.FEED_STATUS, self._status()):
                self.overruns += 1
        except trio.ClosedResourceError:
            pass  # the bus is closed: the daemon is stopping

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(self.config.status_interval)
            self._refresh_state()
            self._published_state = self.state
            await self.bus.publish(topics.FEED_STATUS, self._status())


__all__ = ["Feed", "FeedConfig", "FeedState"]
