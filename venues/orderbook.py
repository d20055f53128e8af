"""A local order book for one instrument, and the snapshot + diff sync that builds it.

`LocalBook` keeps each side in a `SortedDict` keyed on integer ticks, so the
best level and the top N are a slice away and no float ever touches a price.

`BookSync` is the venue-neutral form of the documented Binance procedure for
keeping a book from a REST snapshot plus a stream of diffs, written against
`venues.base.BookSnapshot` / `BookDiff` so that every venue with sequenced
diffs reuses it. It never does I/O and never raises on bad sequencing: each
call returns a `SyncAction` that tells the feed what to do next (fetch a
snapshot, fetch it again, carry on).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from decimal import Decimal

from sortedcontainers import SortedDict

from venues.base import BookDiff, BookSnapshot, Level


class OffTickPrice(ValueError):
    """A price that is not a positive whole number of ticks: the tick size is wrong or has changed."""


class LocalBook:
    """Price levels of one instrument; prices keyed on integer ticks.

    Quantities are absolute, as venues send them: setting a level replaces its
    quantity and a quantity of zero removes it. Removing a level the book does
    not hold is normal (snapshots are depth-capped) and silently ignored.
    """

    __slots__ = ("symbol", "tick_size", "update_id", "_bids", "_asks")

    def __init__(self, symbol: str, tick_size: Decimal) -> None:
        if tick_size <= 0:
            raise ValueError(f"tick size of {symbol} must be positive, got {tick_size}")
        self.symbol = symbol
        self.tick_size = tick_size
        self.update_id = 0
        # ticks -> (price as the venue wrote it, quantity); keeping the Decimal
        # price avoids rebuilding it from ticks on every read.
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()

    # --- writing ------------------------------------------------------------------------
    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self.update_id = 0

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], update_id: int) -> None:
        """Replace the whole book."""
        self.clear()
        self._apply_side(self._bids, bids)
        self._apply_side(self._asks, asks)
        self.update_id = update_id

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Set the given levels (quantity 0 removes one)."""
        self._apply_side(self._bids, bids)
        self._apply_side(self._asks, asks)

    def _apply_side(self, side: SortedDict, levels: Iterable[Level]) -> None:
        tick = self.tick_size
        for price, qty in levels:
            ticks = price / tick
            if ticks % 1 or ticks <= 0:
                raise OffTickPrice(
                    f"{self.symbol}: price {price} is not a positive multiple of tick {tick}; "
                    "reload the instrument's filters and resync the book"
                )
            key = int(ticks)
            if qty > 0:
                side[key] = (price, qty)
            elif qty == 0:
                side.pop(key, None)
            else:
                raise ValueError(f"{self.symbol}: negative quantity {qty} at price {price}")

    # --- reading ------------------------------------------------------------------------
    def best_bid(self) -> Level | None:
        return self._bids.peekitem(-1)[1] if self._bids else None

    def best_ask(self) -> Level | None:
        return self._asks.peekitem(0)[1] if self._asks else None

    def bids(self, n: int | None = None) -> tuple[Level, ...]:
        """The best `n` bids (all if None), best first."""
        values = self._bids.values()
        if n is None:
            return tuple(reversed(values[:]))
        if n <= 0:
            return ()
        return tuple(reversed(values[-n:]))

    def asks(self, n: int | None = None) -> tuple[Level, ...]:
        """The best `n` asks (all if None), best first."""
        values = self._asks.values()
        if n is None:
            return tuple(values[:])
        return tuple(values[: max(n, 0)])

    @property
    def is_crossed(self) -> bool:
        """Best bid at or above best ask: the book cannot be right."""
        return bool(self._bids and self._asks and self._bids.peekitem(-1)[0] >= self._asks.peekitem(0)[0])

    def depth(self) -> tuple[int, int]:
        """Number of (bid, ask) levels held."""
        return len(self._bids), len(self._asks)

    def to_snapshot(self) -> BookSnapshot:
        """The whole book as a snapshot, best first (for comparisons and debugging)."""
        return BookSnapshot(symbol=self.symbol, last_update_id=self.update_id, bids=self.bids(), asks=self.asks())

    def __repr__(self) -> str:
        return (
            f"LocalBook({self.symbol!r}, update_id={self.update_id}, bid={self.best_bid()}, "
            f"ask={self.best_ask()}, depth={self.depth()})"
        )


class SyncAction(enum.Enum):
    """What a `BookSync` call did, and so what the feed should do next."""

    BUFFERED = "buffered"
    """Diff kept until a snapshot arrives: fetch a snapshot if none is on its way."""

    IGNORED = "ignored"
    """Diff older than the book (or a duplicate): nothing changed."""

    APPLIED = "applied"
    """Diff applied; the book moved."""

    SYNCED = "synced"
    """Snapshot accepted and the buffered diffs replayed; the book is live."""

    STALE_SNAPSHOT = "stale_snapshot"
    """Snapshot older than the buffered diffs (a gap between them): fetch another one."""

    RESYNC = "resync"
    """Diffs were missed: the book was discarded; fetch a new snapshot."""


class BookSync:
    """Keeps a `LocalBook` in step with a venue from a snapshot and sequenced diffs.

    The procedure (Binance's documented one, which suits any venue whose diffs
    carry first/last update ids):

    1. Until a snapshot is applied, diffs are buffered (a gap inside the buffer
       drops everything before it, since the older part can never be joined).
    2. A snapshot whose id is older than the first buffered diff minus one is
       stale: it cannot be joined to the diffs, so another must be fetched.
       A snapshot at exactly `first_id - 1` joins without a gap and is accepted.
    3. Buffered diffs wholly covered by the snapshot (`last_id <= snapshot id`)
       are dropped; the first one applied spans `snapshot id + 1`.
    4. Afterwards a diff with `last_id <= book id` is ignored, one with
       `first_id > book id + 1` means diffs were lost: the book is discarded,
       that diff starts a new buffer, and the caller fetches a new snapshot.

    A snapshot may also arrive before any diff (a quiet market): it is applied,
    and the rule in 4 catches a snapshot that turns out to predate the stream.

    The buffer is bounded; when it overflows the oldest diffs are dropped, which
    at worst makes the next snapshot stale and costs one more fetch.
    """

    def __init__(self, book: LocalBook, *, max_buffer: int = 10_000) -> None:
        self.book = book
        self._buffer: deque[BookDiff] = deque(maxlen=max_buffer)
        self._live = False
        self.gaps = 0
        self.stale_snapshots = 0

    @property
    def is_live(self) -> bool:
        """The book reflects the venue and may be read."""
        return self._live

    @property
    def needs_snapshot(self) -> bool:
        return not self._live

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        """Forget the book and the buffer (e.g. after reconnecting the stream)."""
        self.book.clear()
        self._buffer.clear()
        self._live = False

    def on_diff(self, diff: BookDiff) -> SyncAction:
        """Raises OffTickPrice / ValueError on levels the book cannot hold (the book is
        then discarded: reload the instrument's filters and fetch a snapshot)."""
        self._check_symbol(diff.symbol)
        if self._live:
            return self._apply_live(diff)
        buffer = self._buffer
        if buffer:
            last = buffer[-1].last_id
            if diff.last_id <= last:
                return SyncAction.IGNORED
            if diff.first_id > last + 1:
                buffer.clear()
        buffer.append(diff)
        return SyncAction.BUFFERED

    def on_snapshot(self, snapshot: BookSnapshot) -> SyncAction:
        self._check_symbol(snapshot.symbol)
        buffer = self._buffer
        if buffer and snapshot.last_update_id + 1 < buffer[0].first_id:
            self.stale_snapshots += 1
            return SyncAction.STALE_SNAPSHOT
        try:
            self.book.apply_snapshot(snapshot.bids, snapshot.asks, snapshot.last_update_id)
        except ValueError:
            self._discard_book()
            raise
        self._live = True
        pending = list(buffer)
        buffer.clear()
        for i, diff in enumerate(pending):
            if self._apply_live(diff) is SyncAction.RESYNC:
                # Cannot happen with a contiguous buffer; kept so that a logic
                # slip degrades to one more snapshot instead of a wrong book.
                buffer.extend(pending[i + 1 :])
                return SyncAction.RESYNC
        return SyncAction.SYNCED

    def _apply_live(self, diff: BookDiff) -> SyncAction:
        book = self.book
        if diff.last_id <= book.update_id:
            return SyncAction.IGNORED
        if diff.first_id > book.update_id + 1:
            self.gaps += 1
            book.clear()
            self._live = False
            self._buffer.clear()
            self._buffer.append(diff)
            return SyncAction.RESYNC
        try:
            book.apply_levels(diff.bids, diff.asks)
        except ValueError:
            self._discard_book()
            raise
        book.update_id = diff.last_id
        return SyncAction.APPLIED

    def _discard_book(self) -> None:
        # A half-applied update must never be read as a book.
        self.book.clear()
        self._live = False

    def _check_symbol(self, symbol: str) -> None:
        if symbol != self.book.symbol:
            raise ValueError(f"book of {self.book.symbol} was given data for {symbol}; route by symbol first")
