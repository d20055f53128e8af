"""Binance depth frames per second, decoded and applied to the local book.

The input is a deterministic stream of combined-stream frames, exactly as the
socket hands them over (bytes of `{"stream": ..., "data": {"e": "depthUpdate",
...}}`), for BTCUSDT around 60 000 with a tick of 0.01 and Binance's 8-decimal
strings. Every frame carries 20 levels, split unevenly between the sides, and
mixes the three things a diff does: new levels (mostly near the touch),
changed quantities (mostly near the touch, some deep) and removals. The book
starts from a snapshot of `DEPTH` levels per side and stays about that deep.

Ours is the feed's hot path: `codec.decode_market_frame(frame,
text_levels=True)` (typed msgspec decode, levels left as the venue's text),
`BookSync.on_diff` (sequence check) and `LocalBook` (exact integer-tick keys
parsed from the text, Decimals built only for the levels read), then the best
bid and ask as `Decimal`.

The table's baseline is what a first implementation does: `json.loads`, a
dict of float prices, the same sequence check, and the best bid and ask by
`max`/`min` over the dict after every frame. A second, fairer baseline keeps
the floats in a `SortedDict`, so the top of book is O(1) as in ours; it shows
what the typed decoder and exact arithmetic cost or save on their own.

Before anything is timed, all three books are replayed once and compared
with the generator's own book, so every contender is known to do the work.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from decimal import Decimal

from sortedcontainers import SortedDict, SortedList

from bench.common import Row, compared, lockstep, per_second
from venues.base import BookDiff, BookSnapshot
from venues.binance import codec
from venues.orderbook import BookSync, LocalBook, SyncAction

SYMBOL = "BTCUSDT"
STREAM = "btcusdt@depth@100ms"
TICK = Decimal("0.01")
MID_TICKS = 6_000_000  # 60 000.00
DEPTH = 1000  # levels per side in the snapshot (Binance allows up to 5000)
LEVELS_PER_FRAME = 20
TARGET_RATIO = 1.5
TARGET_RATE = 50_000.0

FULL = {"frames": 6_000, "repeats": 7}
QUICK = {"frames": 300, "repeats": 1}
CHUNK = 200  # frames per turn: contenders alternate every few milliseconds (see common.lockstep)


# ---------------------------------------------------------------------------------------
# The market: a seeded stream of realistic depth updates
# ---------------------------------------------------------------------------------------


def _price(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}000000"


def _qty(rng: random.Random) -> str:
    # lot step 0.00001; mostly small, now and then a large resting order
    steps = max(1, int(rng.lognormvariate(7.0, 1.6)))
    return f"{steps // 100_000}.{steps % 100_000:05d}000"


class Market:
    """A two-sided book in integer ticks that emits the diffs that move it."""

    def __init__(self, seed: int = 7, depth: int = DEPTH) -> None:
        self.rng = random.Random(seed)
        self.depth = depth
        self.bids: dict[int, str] = {}
        self.asks: dict[int, str] = {}
        self.bid_ticks = SortedList()  # ascending; best bid is the last
        self.ask_ticks = SortedList()  # ascending; best ask is the first
        rng = self.rng
        for ticks in rng.sample(range(MID_TICKS - 3 * depth, MID_TICKS), depth):
            self._set(self.bids, self.bid_ticks, ticks, _qty(rng))
        for ticks in rng.sample(range(MID_TICKS + 1, MID_TICKS + 1 + 3 * depth), depth):
            self._set(self.asks, self.ask_ticks, ticks, _qty(rng))
        self.update_id = 1_000_000
        self.event_ms = 1_700_000_000_000

    @staticmethod
    def _set(levels: dict[int, str], order: SortedList, ticks: int, qty: str) -> None:
        if ticks not in levels:
            order.add(ticks)
        levels[ticks] = qty

    def snapshot(self) -> BookSnapshot:
        def side(levels: dict[int, str], order, reverse: bool) -> list[tuple[Decimal, Decimal]]:
            keys = reversed(order) if reverse else iter(order)
            return [(Decimal(_price(t)), Decimal(levels[t])) for t in keys]

        return BookSnapshot(
            symbol=SYMBOL,
            last_update_id=self.update_id,
            bids=side(self.bids, self.bid_ticks, True),
            asks=side(self.asks, self.ask_ticks, False),
        )

    def frame(self) -> bytes:
        rng = self.rng
        n_bids = rng.randint(6, LEVELS_PER_FRAME - 6)
        bids = self._side_updates(self.bids, self.bid_ticks, n_bids, is_bid=True)
        asks = self._side_updates(self.asks, self.ask_ticks, LEVELS_PER_FRAME - n_bids, is_bid=False)
        first = self.update_id + 1
        self.update_id = first + rng.randint(LEVELS_PER_FRAME, 3 * LEVELS_PER_FRAME)
        self.event_ms += 100
        data = {
            "e": "depthUpdate",
            "E": self.event_ms,
            "s": SYMBOL,
            "U": first,
            "u": self.update_id,
            "b": bids,
            "a": asks,
        }
        return json.dumps({"stream": STREAM, "data": data}, separators=(",", ":")).encode()

    def _side_updates(self, levels: dict[int, str], order: SortedList, count: int, is_bid: bool) -> list[list[str]]:
        rng = self.rng
        touched: dict[int, str] = {}
        while len(touched) < count:
            size = len(order)
            roll = rng.random()
            # keep the side near its target depth: remove more when deep, add more when thin
            remove_share = 0.30 + 0.4 * (size - self.depth) / self.depth
            if roll < 0.40:
                ticks = self._existing(order, is_bid)
                qty = _qty(rng)
            elif roll < 0.40 + remove_share:
                ticks = self._existing(order, is_bid)
                qty = "0.00000000"
            else:
                ticks = self._fresh(levels, is_bid)
                qty = _qty(rng)
            if ticks in touched:
                continue
            touched[ticks] = qty
            if qty == "0.00000000":
                del levels[ticks]
                order.remove(ticks)
            else:
                self._set(levels, order, ticks, qty)
        return [[_price(t), q] for t, q in touched.items()]

    def _existing(self, order: SortedList, is_bid: bool) -> int:
        rank = min(int(self.rng.expovariate(1 / 40)), len(order) - 1)
        return order[-1 - rank] if is_bid else order[rank]

    def _fresh(self, levels: dict[int, str], is_bid: bool) -> int:
        # a new level at or near the touch (inside the spread now and then),
        # never crossing the other side
        rng = self.rng
        if is_bid:
            edge, direction = self.ask_ticks[0] - 1, -1
        else:
            edge, direction = self.bid_ticks[-1] + 1, 1
        while True:
            ticks = edge + direction * int(rng.expovariate(1 / 120))
            if ticks not in levels:
                return ticks

    def best(self) -> tuple[int, int]:
        return self.bid_ticks[-1], self.ask_ticks[0]


def workload(frames: int, seed: int = 7) -> tuple[BookSnapshot, list[bytes], tuple[int, int]]:
    """(snapshot, frames, best bid and ask in ticks after the last frame)."""
    market = Market(seed)
    snapshot = market.snapshot()
    stream = [market.frame() for _ in range(frames)]
    return snapshot, stream, market.best()


# ---------------------------------------------------------------------------------------
# Ours: typed decode + BookSync + LocalBook
# ---------------------------------------------------------------------------------------


def ours_book(snapshot: BookSnapshot) -> BookSync:
    sync = BookSync(LocalBook(SYMBOL, TICK))
    if sync.on_snapshot(snapshot) is not SyncAction.SYNCED:
        raise AssertionError("the snapshot was not accepted")
    return sync


def ours_ingest(sync: BookSync, frames: Sequence[bytes]) -> tuple:
    decode = codec.decode_market_frame
    on_diff = sync.on_diff
    book = sync.book
    top = None
    for frame in frames:
        diff = decode(frame, text_levels=True)
        if type(diff) is not BookDiff or on_diff(diff) is not SyncAction.APPLIED:
            raise AssertionError(f"frame not applied: {diff!r}")
        top = (book.best_bid(), book.best_ask())
    return top


# ---------------------------------------------------------------------------------------
# Baselines: json.loads + floats
# ---------------------------------------------------------------------------------------


class NaiveBook:
    """json.loads, a dict of float prices, best bid and ask by max/min."""

    def __init__(self, snapshot: BookSnapshot) -> None:
        self.bids = {float(p): float(q) for p, q in snapshot.bids}
        self.asks = {float(p): float(q) for p, q in snapshot.asks}
        self.update_id = snapshot.last_update_id

    def ingest(self, frames: Sequence[bytes]) -> tuple:
        loads = json.loads
        bids, asks = self.bids, self.asks
        top = None
        for frame in frames:
            data = loads(frame)["data"]
            if data["u"] <= self.update_id or data["U"] > self.update_id + 1:
                raise AssertionError("out of sequence")
            for side, updates in ((bids, data["b"]), (asks, data["a"])):
                for price, qty in updates:
                    q = float(qty)
                    if q:
                        side[float(price)] = q
                    else:
                        side.pop(float(price), None)
            self.update_id = data["u"]
            best_bid = max(bids)
            best_ask = min(asks)
            top = ((best_bid, bids[best_bid]), (best_ask, asks[best_ask]))
        return top


class SortedFloatBook:
    """json.loads and floats, but each side in a SortedDict (O(1) top of book)."""

    def __init__(self, snapshot: BookSnapshot) -> None:
        self.bids = SortedDict({float(p): float(q) for p, q in snapshot.bids})
        self.asks = SortedDict({float(p): float(q) for p, q in snapshot.asks})
        self.update_id = snapshot.last_update_id

    def ingest(self, frames: Sequence[bytes]) -> tuple:
        loads = json.loads
        bids, asks = self.bids, self.asks
        top = None
        for frame in frames:
            data = loads(frame)["data"]
            if data["u"] <= self.update_id or data["U"] > self.update_id + 1:
                raise AssertionError("out of sequence")
            for side, updates in ((bids, data["b"]), (asks, data["a"])):
                for price, qty in updates:
                    q = float(qty)
                    if q:
                        side[float(price)] = q
                    else:
                        side.pop(float(price), None)
            self.update_id = data["u"]
            top = (bids.peekitem(-1), asks.peekitem(0))
        return top


# ---------------------------------------------------------------------------------------


def _check(snapshot: BookSnapshot, frames: list[bytes], expected: tuple[int, int]) -> None:
    """Every contender ends on the same book, and on the generator's top of book."""
    want = (float(_price(expected[0])), float(_price(expected[1])))
    sync = ours_book(snapshot)
    (bid, _), (ask, _) = ours_ingest(sync, frames)
    naive, sorted_floats = NaiveBook(snapshot), SortedFloatBook(snapshot)
    tops = {
        "ours": (float(bid), float(ask)),
        "naive": tuple(level[0] for level in naive.ingest(frames)),
        "sorted": tuple(level[0] for level in sorted_floats.ingest(frames)),
    }
    for name, top in tops.items():
        if top != want:
            raise AssertionError(f"feed bench: {name} ended on {top}, the market on {want}")
    ours_levels = (
        {float(p): float(q) for p, q in sync.book.bids()},
        {float(p): float(q) for p, q in sync.book.asks()},
    )
    for name, book in (("naive", naive), ("sorted", sorted_floats)):
        if ours_levels != (dict(book.bids), dict(book.asks)):
            raise AssertionError(f"feed bench: {name} and ours hold different books after the same frames")


def run(quick: bool = False) -> list[Row]:
    sizes = QUICK if quick else FULL
    count = sizes["frames"]
    snapshot, frames, expected = workload(count)
    _check(snapshot, frames, expected)

    def ours() -> Callable[[Sequence[bytes]], object]:
        sync = ours_book(snapshot)
        return lambda chunk: ours_ingest(sync, chunk)

    totals = lockstep(
        {
            "ours": ours,
            "naive": lambda: NaiveBook(snapshot).ingest,
            "sorted": lambda: SortedFloatBook(snapshot).ingest,
        },
        frames,
        chunk=CHUNK,
        repeats=sizes["repeats"],
    )
    samples = {name: [per_second(count, ns) for ns in spent] for name, spent in totals.items()}
    return [
        compared(
            "feed: depth frames decoded + applied to the book",
            "frames/s",
            samples["ours"],
            samples["naive"],
            target_ratio=TARGET_RATIO,
            target_value=TARGET_RATE,
            note=(
                f"{LEVELS_PER_FRAME} levels a frame, book {DEPTH} levels a side; "
                "baseline: json.loads + dict of float prices, max/min for the top of book"
            ),
        ),
        compared(
            "feed: same, vs json.loads + SortedDict of floats",
            "frames/s",
            samples["ours"],
            samples["sorted"],
            note="a fairer baseline (sorted floats, O(1) top of book); informative, no target",
        ),
    ]
