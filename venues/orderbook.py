"""A local order book for one instrument, and the snapshot + diff sync that builds it.

`LocalBook` keys every price on its exact number of ticks (an `int`), so the
best level and the top N are an index away and no float ever touches a price.

It takes levels in two forms, and the same book comes out of both:

- `Decimal` prices and quantities (snapshots, the simulated venue);
- the text the venue wrote, e.g. ``("60000.01000000", "0.00541000")``
  (`venues.base.TextLevel`, what the Binance codec's fast path produces).

The text form is the feed's hot path: a depth update carries about twenty
levels and most of them are never read, so building two `Decimal` per level
only to key and store it costs more than everything else together. Instead
the price text is parsed to integer ticks exactly (and the result remembered,
since the prices near the touch come back frame after frame), a zero quantity
is recognised on the text, and the level is stored as received. `Decimal`
values are built only when a level is read (`best_bid`, `bids(n)`, ...), from
the same text, so they are exactly what a `Decimal` decoder would have made.
Text in an unusual but valid form (an exponent, a sign) goes through
`Decimal`; text that is not a number is refused when it is applied, never
when it is read.

Each side is a dict from rank (ticks, negated on the ask side so that the
best level ranks highest on both) to level, plus a plain sorted list of the
ranks kept with `bisect` (in C): a book holds a few thousand levels at most,
and updates land mostly near the touch, which sits at the end of the list.

`BookSync` is the venue-neutral form of the documented Binance procedure for
keeping a book from a REST snapshot plus a stream of diffs, written against
`venues.base.BookSnapshot` / `BookDiff` so that every venue with sequenced
diffs reuses it. It never does I/O and never raises on bad sequencing: each
call returns a `SyncAction` that tells the feed what to do next (fetch a
snapshot, fetch it again, carry on).
"""

from __future__ import annotations

import enum
import re
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from venues.base import BookDiff, BookSnapshot, Level

# A decimal number as text: what `Decimal()` accepts, minus what no venue
# writes and a typo could produce (spaces, underscores, NaN, Infinity).
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)

# How many price texts a book remembers the ticks of. The prices near the
# touch recur on almost every frame; when the market has wandered far enough
# to fill the table it is simply emptied and refilled.
PRICE_MEMO_SIZE = 4096

# Longer price texts (absurd for a price) are left to `Decimal`, which has no length limit.
_MAX_PLAIN_DIGITS = 60


class OffTickPrice(ValueError):
    """A price that is not a positive whole number of ticks: the tick size is wrong or has changed."""


class MalformedLevel(ValueError):
    """A level whose price or quantity is not a number (or not a (price, quantity) pair)."""


class LocalBook:
    """Price levels of one instrument; prices keyed on integer ticks.

    Quantities are absolute, as venues send them: setting a level replaces its
    quantity and a quantity of zero removes it. Removing a level the book does
    not hold is normal (snapshots are depth-capped) and silently ignored.

    Levels may be given as `Decimal` pairs or as the venue's text (see the
    module docstring); every read returns `Decimal` pairs, the price written
    as the venue last wrote it.
    """

    __slots__ = (
        "symbol",
        "update_id",
        "_tick_size",
        "_tick_units",
        "_tick_exponent",
        "_bids",
        "_asks",
        "_bid_ranks",
        "_ask_ranks",
        "_bid_memo",
        "_ask_memo",
    )

    def __init__(self, symbol: str, tick_size: Decimal) -> None:
        self.symbol = symbol
        self.update_id = 0
        # Each side is keyed on a rank that grows towards the touch: +ticks for
        # bids, -ticks for asks. Both sides then share one code path, and
        # their best level, where most updates land, is at the end of the
        # sorted list, where inserting and deleting move the fewest entries.
        self._bids: dict[int, tuple] = {}  # rank -> level as given (text until first read)
        self._asks: dict[int, tuple] = {}
        self._bid_ranks: list[int] = []  # the same ranks, ascending: the best level is the last
        self._ask_ranks: list[int] = []
        self.tick_size = tick_size

    @property
    def tick_size(self) -> Decimal:
        return self._tick_size

    @tick_size.setter
    def tick_size(self, tick_size: Decimal) -> None:
        """A new grid; levels already held stay keyed on the old one, so reload the book after."""
        tick = tick_size if isinstance(tick_size, Decimal) else _decimal_tick(tick_size)
        if not tick.is_finite() or tick <= 0:
            raise ValueError(f"tick size of {self.symbol} must be positive, got {tick_size}")
        _, digits, exponent = tick.as_tuple()
        self._tick_size = tick
        # tick = units * 10**exponent, both integers: the grid in exact integer arithmetic
        self._tick_units = int("".join(map(str, digits)))
        self._tick_exponent = exponent
        # price text -> rank, per side, for prices seen before
        self._bid_memo: dict[str, int] = {}
        self._ask_memo: dict[str, int] = {}

    # --- writing ------------------------------------------------------------------------
    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_ranks.clear()
        self._ask_ranks.clear()
        self.update_id = 0

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], update_id: int) -> None:
        """Replace the whole book."""
        self.clear()
        self._load_side(self._bids, self._bid_ranks, self._bid_memo, 1, bids)
        self._load_side(self._asks, self._ask_ranks, self._ask_memo, -1, asks)
        self.update_id = update_id

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Set the given levels (quantity 0 removes one).

        Raises `OffTickPrice` for a price off the grid and `MalformedLevel` for
        a price or quantity that is not a number or a negative quantity (both
        are ValueError); the levels before the bad one are then applied
        already, so discard the book.
        """
        self._apply_side(self._bids, self._bid_ranks, self._bid_memo, 1, bids)
        self._apply_side(self._asks, self._ask_ranks, self._ask_memo, -1, asks)

    def _apply_side(
        self, side: dict[int, tuple], ranks: list[int], memo: dict[str, int], sign: int, levels: Iterable[Level]
    ) -> None:
        # The common case inline: a text price seen before (memo holds text
        # only, so a Decimal misses) and a quantity that is zero as Binance
        # writes it or plain ASCII digits with at most one dot and some digit
        # other than 0. Everything else (a new price, Decimals, zero written
        # another way, exponents, garbage) goes through _set_level, which is
        # exact and strict.
        remembered = memo.get
        level = None
        try:
            for level in levels:
                price, qty = level
                if qty.__class__ is not str or (rank := remembered(price)) is None:
                    self._set_level(side, ranks, memo, sign, level)
                elif qty == "0.00000000":
                    if side.pop(rank, None) is not None:
                        del ranks[bisect_left(ranks, rank)]
                else:
                    significant = qty.replace(".", "", 1).lstrip("0")
                    if significant.isdigit() and significant.isascii():
                        if rank not in side:
                            insort(ranks, rank)
                        side[rank] = level if level.__class__ is tuple else (price, qty)
                    else:
                        self._set_level(side, ranks, memo, sign, level)
        except (OffTickPrice, MalformedLevel):
            raise
        except (ValueError, TypeError):  # not a pair, or a price that cannot be a dict key
            self._explain(memo, sign, level)
            raise

    def _set_level(self, side: dict[int, tuple], ranks: list[int], memo: dict[str, int], sign: int, level) -> None:
        price, qty = level
        rank, removes = self._rank(memo, sign, price, qty)
        if removes:
            if side.pop(rank, None) is not None:
                del ranks[bisect_left(ranks, rank)]
            return
        if rank not in side:
            insort(ranks, rank)
        side[rank] = level if level.__class__ is tuple else (price, qty)

    def _load_side(
        self, side: dict[int, tuple], ranks: list[int], memo: dict[str, int], sign: int, levels: Iterable[Level]
    ) -> None:
        """Fill an empty side in one go: ranks sorted once at the end, not inserted one by one."""
        rank_of = self._rank
        level = None
        try:
            for level in levels:
                price, qty = level
                rank, removes = rank_of(memo, sign, price, qty)
                if removes:
                    side.pop(rank, None)
                else:
                    side[rank] = level if level.__class__ is tuple else (price, qty)
        except (OffTickPrice, MalformedLevel):
            raise
        except (ValueError, TypeError):
            self._explain(memo, sign, level)
            raise
        finally:
            ranks[:] = sorted(side)

    def _rank(self, memo: dict[str, int], sign: int, price, qty) -> tuple[int, bool]:
        """(rank of the price on its side, whether the quantity removes the level), for any accepted form."""
        if price.__class__ is str:
            rank = memo.get(price)
            if rank is None:
                rank = sign * self._text_ticks(price)
                if len(memo) >= PRICE_MEMO_SIZE:
                    memo.clear()
                memo[price] = rank
        else:
            rank = sign * self._decimal_ticks(price, price)
        if qty.__class__ is str:
            qty = self._parse(qty, "quantity")
        elif not isinstance(qty, Decimal | int):
            raise MalformedLevel(
                f"{self.symbol}: quantity {qty!r} is a {type(qty).__name__}, not a Decimal or its text"
            )
        elif isinstance(qty, Decimal) and not qty.is_finite():
            raise MalformedLevel(f"{self.symbol}: quantity {qty} is not a number; resync the book")
        if qty > 0:
            return rank, False
        if qty == 0:
            return rank, True
        raise MalformedLevel(f"{self.symbol}: negative quantity {qty} at price {price}; resync the book")

    def _text_ticks(self, text: str) -> int:
        """Exact ticks of a price written as text."""
        dot = text.find(".")
        digits = text.replace(".", "", 1) if dot >= 0 else text
        if not (digits.isdigit() and digits.isascii() and len(digits) <= _MAX_PLAIN_DIGITS):
            return self._decimal_ticks(self._parse(text, "price"), text)  # an exponent or a sign
        # text = digits * 10**-places; ticks = text / (tick_units * 10**tick_exponent)
        places = len(text) - dot - 1 if dot >= 0 else 0
        shift = -places - self._tick_exponent
        units = int(digits)
        if shift >= 0:
            ticks, off = divmod(units * 10**shift, self._tick_units)
        else:
            ticks, off = divmod(units, self._tick_units * 10**-shift)
        if off or ticks <= 0:
            raise self._off_tick(text)
        return ticks

    def _decimal_ticks(self, price, shown) -> int:
        if not isinstance(price, Decimal | int):
            raise MalformedLevel(
                f"{self.symbol}: price {price!r} is a {type(price).__name__}, not a Decimal or its text"
            )
        if isinstance(price, Decimal) and not price.is_finite():
            raise MalformedLevel(f"{self.symbol}: price {price} is not a number; resync the book")
        try:
            ticks, off = divmod(price, self._tick_size)
        except InvalidOperation:  # more ticks than the decimal context holds digits: count them exactly
            exact = Fraction(price) / Fraction(self._tick_size)
            ticks, off = exact.numerator, exact.denominator != 1
        if off or ticks <= 0:
            raise self._off_tick(shown)
        return int(ticks)

    def _parse(self, text: str, what: str) -> Decimal:
        if _NUMBER_TEXT.fullmatch(text) is None:
            raise MalformedLevel(
                f"{self.symbol}: {what} {text!r} is not a decimal number; "
                "the venue sent a malformed level: resync the book, and report it if it repeats"
            )
        return Decimal(text)

    def _off_tick(self, price) -> OffTickPrice:
        return OffTickPrice(
            f"{self.symbol}: price {price} is not a positive multiple of tick {self._tick_size}; "
            "reload the instrument's filters and resync the book"
        )

    def _explain(self, memo: dict[str, int], sign: int, level) -> None:
        """Raise MalformedLevel saying what is wrong with `level`, if anything is."""
        try:
            price, qty = level
        except (ValueError, TypeError):
            raise MalformedLevel(
                f"{self.symbol}: a level must be a (price, quantity) pair, got {level!r}; resync the book"
            ) from None
        self._rank(memo, sign, price, qty)

    # --- reading ------------------------------------------------------------------------
    def best_bid(self) -> Level | None:
        # _read inline: this runs after every diff
        ranks = self._bid_ranks
        if not ranks:
            return None
        level = self._bids[ranks[-1]]
        if level[0].__class__ is str or level[1].__class__ is str:
            return _read(self._bids, ranks[-1])
        return level

    def best_ask(self) -> Level | None:
        ranks = self._ask_ranks
        if not ranks:
            return None
        level = self._asks[ranks[-1]]
        if level[0].__class__ is str or level[1].__class__ is str:
            return _read(self._asks, ranks[-1])
        return level

    def bids(self, n: int | None = None) -> tuple[Level, ...]:
        """The best `n` bids (all if None), best first."""
        return _best(self._bids, self._bid_ranks, n)

    def asks(self, n: int | None = None) -> tuple[Level, ...]:
        """The best `n` asks (all if None), best first."""
        return _best(self._asks, self._ask_ranks, n)

    @property
    def is_crossed(self) -> bool:
        """Best bid at or above best ask: the book cannot be right."""
        return bool(self._bid_ranks and self._ask_ranks and self._bid_ranks[-1] >= -self._ask_ranks[-1])

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


def _best(side: dict[int, tuple], ranks: list[int], n: int | None) -> tuple[Level, ...]:
    if n is None:
        chosen = ranks[::-1]
    elif n > 0:
        chosen = ranks[: -n - 1 : -1]
    else:
        return ()
    levels = list(map(side.__getitem__, chosen))
    for i, (price, qty) in enumerate(levels):
        if price.__class__ is str or qty.__class__ is str:
            levels[i] = _read(side, chosen[i])
    return tuple(levels)


def _read(side: dict[int, tuple], rank: int) -> Level:
    """The level at `rank` as Decimals; a text level is converted once and kept converted."""
    level = side[rank]
    price, qty = level
    if price.__class__ is str or qty.__class__ is str:
        level = (Decimal(price) if price.__class__ is str else price, Decimal(qty) if qty.__class__ is str else qty)
        side[rank] = level
    return level


def _decimal_tick(tick_size) -> Decimal:
    if isinstance(tick_size, int):
        return Decimal(tick_size)
    raise TypeError(f"tick size must be a Decimal, got {type(tick_size).__name__} {tick_size!r}")


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
        """Raises OffTickPrice / MalformedLevel / ValueError on levels the book cannot
        hold (the book is then discarded: reload the instrument's filters and fetch a
        snapshot). The levels may be Decimal pairs or the venue's text."""
        if diff.symbol != self.book.symbol:
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
