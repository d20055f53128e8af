"""LocalBook and BookSync: levels, ordering, and the snapshot + diff procedure."""

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from venues.base import BookDiff, BookSnapshot
from venues.orderbook import BookSync, LocalBook, OffTickPrice, SyncAction

TICK = D("0.01")


def book() -> LocalBook:
    return LocalBook("BTCUSDT", TICK)


def snap(last_id, bids=(), asks=(), symbol="BTCUSDT"):
    return BookSnapshot(symbol=symbol, last_update_id=last_id, bids=list(bids), asks=list(asks))


def diff(first, last, bids=(), asks=(), symbol="BTCUSDT"):
    return BookDiff(symbol=symbol, first_id=first, last_id=last, bids=list(bids), asks=list(asks))


def lv(price, qty):
    return (D(price), D(qty))


# --- LocalBook ------------------------------------------------------------------------


def test_empty_book_has_no_best_levels():
    b = book()
    assert b.best_bid() is None
    assert b.best_ask() is None
    assert b.bids(5) == () and b.asks(5) == ()
    assert not b.is_crossed


def test_snapshot_orders_levels_best_first():
    b = book()
    b.apply_snapshot(
        [lv("99.98", "1"), lv("100.00", "2"), lv("99.99", "3")],
        [lv("100.03", "4"), lv("100.01", "5"), lv("100.02", "6")],
        update_id=7,
    )
    assert b.update_id == 7
    assert b.best_bid() == lv("100.00", "2")
    assert b.best_ask() == lv("100.01", "5")
    assert b.bids(2) == (lv("100.00", "2"), lv("99.99", "3"))
    assert b.asks() == (lv("100.01", "5"), lv("100.02", "6"), lv("100.03", "4"))
    assert b.bids(0) == () and b.asks(0) == ()
    assert b.bids(10) == (lv("100.00", "2"), lv("99.99", "3"), lv("99.98", "1"))


def test_snapshot_replaces_everything():
    b = book()
    b.apply_snapshot([lv("1.00", "1")], [lv("2.00", "1")], 1)
    b.apply_snapshot([lv("1.50", "1")], [], 2)
    assert b.bids() == (lv("1.50", "1"),)
    assert b.asks() == ()


def test_levels_set_replace_and_remove():
    b = book()
    b.apply_snapshot([lv("10.00", "1"), lv("9.99", "1")], [lv("10.01", "1")], 1)
    b.apply_levels([lv("10.00", "0"), lv("9.98", "7")], [lv("10.01", "2.5")])
    assert b.bids() == (lv("9.99", "1"), lv("9.98", "7"))
    assert b.asks() == (lv("10.01", "2.5"),)


def test_zero_with_trailing_decimals_removes_a_level():
    b = book()
    b.apply_snapshot([lv("10.00", "1")], [], 1)
    b.apply_levels([lv("10.00000000", "0.00000000")], [])
    assert b.bids() == ()


def test_removing_an_unknown_level_is_harmless():
    b = book()
    b.apply_levels([lv("5.00", "0")], [lv("6.00", "0")])
    assert b.depth() == (0, 0)


def test_price_written_with_different_precision_is_the_same_level():
    b = book()
    b.apply_levels([lv("10.1", "1")], [])
    b.apply_levels([lv("10.10000000", "3")], [])
    assert b.depth() == (1, 0)
    assert b.best_bid()[1] == D("3")


def test_off_tick_price_is_refused_with_a_hint():
    b = book()
    with pytest.raises(OffTickPrice, match="not a positive multiple of tick.*resync"):
        b.apply_levels([lv("10.005", "1")], [])
    with pytest.raises(OffTickPrice):
        b.apply_levels([lv("-1.00", "1")], [])
    with pytest.raises(OffTickPrice):
        b.apply_levels([], [lv("0", "1")])


def test_negative_quantity_is_refused():
    b = book()
    with pytest.raises(ValueError, match="negative quantity"):
        b.apply_levels([], [lv("10.00", "-1")])


def test_crossed_book_is_detected():
    b = book()
    b.apply_snapshot([lv("10.00", "1")], [lv("10.00", "1")], 1)
    assert b.is_crossed


def test_to_snapshot_round_trips():
    b = book()
    b.apply_snapshot([lv("10.00", "1"), lv("9.00", "2")], [lv("11.00", "3")], 42)
    s = b.to_snapshot()
    other = book()
    other.apply_snapshot(s.bids, s.asks, s.last_update_id)
    assert other.to_snapshot() == s
    assert s.last_update_id == 42


def test_non_positive_tick_is_refused():
    with pytest.raises(ValueError):
        LocalBook("X", D(0))


# --- BookSync: hand-made sequences ----------------------------------------------------


def test_diffs_are_buffered_until_the_snapshot():
    s = BookSync(book())
    assert s.needs_snapshot
    assert s.on_diff(diff(101, 103, bids=[lv("10.00", "1")])) is SyncAction.BUFFERED
    assert s.on_diff(diff(104, 105, asks=[lv("10.05", "2")])) is SyncAction.BUFFERED
    assert s.buffered == 2
    assert not s.is_live


def test_snapshot_discards_covered_diffs_and_replays_the_rest():
    s = BookSync(book())
    s.on_diff(diff(101, 103, bids=[lv("10.00", "9")]))  # covered by the snapshot
    s.on_diff(diff(104, 106, bids=[lv("10.01", "1")]))  # spans 105
    s.on_diff(diff(107, 107, asks=[lv("10.05", "2")]))
    result = s.on_snapshot(snap(104, bids=[lv("10.00", "5")], asks=[lv("10.06", "1")]))
    assert result is SyncAction.SYNCED
    assert s.is_live and s.buffered == 0
    assert s.book.update_id == 107
    # the covered diff's 9 @ 10.00 must not have been applied over the snapshot
    assert s.book.bids() == (lv("10.01", "1"), lv("10.00", "5"))
    assert s.book.asks() == (lv("10.05", "2"), lv("10.06", "1"))


def test_snapshot_joining_exactly_before_the_first_diff_is_accepted():
    s = BookSync(book())
    s.on_diff(diff(101, 102, bids=[lv("1.00", "1")]))
    assert s.on_snapshot(snap(100)) is SyncAction.SYNCED
    assert s.book.update_id == 102
    assert s.book.bids() == (lv("1.00", "1"),)


def test_stale_snapshot_is_refused_and_the_buffer_kept():
    s = BookSync(book())
    s.on_diff(diff(101, 102, bids=[lv("1.00", "1")]))
    assert s.on_snapshot(snap(99, bids=[lv("5.00", "1")])) is SyncAction.STALE_SNAPSHOT
    assert s.stale_snapshots == 1
    assert not s.is_live
    assert s.book.depth() == (0, 0)
    assert s.buffered == 1
    # a fresh snapshot then syncs
    assert s.on_snapshot(snap(101)) is SyncAction.SYNCED
    assert s.book.update_id == 102


def test_snapshot_newer_than_every_buffered_diff_waits_for_a_spanning_one():
    s = BookSync(book())
    s.on_diff(diff(101, 102, bids=[lv("1.00", "1")]))
    assert s.on_snapshot(snap(110, bids=[lv("2.00", "1")])) is SyncAction.SYNCED
    assert s.book.update_id == 110
    assert s.on_diff(diff(103, 108)) is SyncAction.IGNORED
    assert s.on_diff(diff(109, 112, bids=[lv("3.00", "1")])) is SyncAction.APPLIED
    assert s.book.update_id == 112
    assert s.book.bids() == (lv("3.00", "1"), lv("2.00", "1"))


def test_gap_after_sync_discards_the_book_and_asks_for_resync():
    s = BookSync(book())
    s.on_snapshot(snap(100, bids=[lv("1.00", "1")]))
    assert s.on_diff(diff(101, 101, bids=[lv("1.01", "1")])) is SyncAction.APPLIED
    assert s.on_diff(diff(103, 104, bids=[lv("1.02", "1")])) is SyncAction.RESYNC
    assert s.gaps == 1
    assert not s.is_live and s.needs_snapshot
    assert s.book.depth() == (0, 0)
    # the diff after the gap starts the new buffer: a snapshot at 102 joins it
    assert s.buffered == 1
    assert s.on_snapshot(snap(102, bids=[lv("0.99", "1")])) is SyncAction.SYNCED
    assert s.book.bids() == (lv("1.02", "1"), lv("0.99", "1"))
    assert s.book.update_id == 104


def test_snapshot_before_the_stream_started_is_caught_by_the_first_diff():
    s = BookSync(book())
    assert s.on_snapshot(snap(50)) is SyncAction.SYNCED
    assert s.on_diff(diff(70, 71)) is SyncAction.RESYNC


def test_duplicates_and_replays_are_ignored():
    s = BookSync(book())
    s.on_snapshot(snap(100))
    d = diff(101, 102, asks=[lv("5.00", "1")])
    assert s.on_diff(d) is SyncAction.APPLIED
    assert s.on_diff(d) is SyncAction.IGNORED
    assert s.on_diff(diff(90, 95, asks=[lv("5.00", "7")])) is SyncAction.IGNORED
    assert s.book.asks() == (lv("5.00", "1"),)


def test_reordered_diffs_cause_a_resync_not_a_wrong_book():
    s = BookSync(book())
    s.on_snapshot(snap(100))
    s.on_diff(diff(101, 101))
    assert s.on_diff(diff(103, 103)) is SyncAction.RESYNC
    # the late 102 is older than the diff that now starts the buffer: dropped
    assert s.on_diff(diff(102, 102)) is SyncAction.IGNORED
    assert s.needs_snapshot


def test_duplicate_and_gap_while_buffering():
    s = BookSync(book())
    s.on_diff(diff(10, 12))
    assert s.on_diff(diff(11, 12)) is SyncAction.IGNORED
    assert s.buffered == 1
    # a gap in the buffer drops the part that can never be joined
    assert s.on_diff(diff(20, 21, bids=[lv("1.00", "1")])) is SyncAction.BUFFERED
    assert s.buffered == 1
    assert s.on_snapshot(snap(12)) is SyncAction.STALE_SNAPSHOT
    assert s.on_snapshot(snap(19)) is SyncAction.SYNCED
    assert s.book.update_id == 21


def test_buffer_overflow_drops_the_oldest_and_the_snapshot_becomes_stale():
    s = BookSync(book(), max_buffer=3)
    for i in range(1, 6):
        s.on_diff(diff(i, i))
    assert s.buffered == 3  # 3, 4, 5
    assert s.on_snapshot(snap(1)) is SyncAction.STALE_SNAPSHOT
    assert s.on_snapshot(snap(2)) is SyncAction.SYNCED
    assert s.book.update_id == 5


def test_unreadable_levels_discard_the_book_instead_of_leaving_it_half_applied():
    s = BookSync(book())
    s.on_snapshot(snap(1, bids=[lv("1.00", "1")]))
    with pytest.raises(OffTickPrice):
        s.on_diff(diff(2, 2, bids=[lv("1.01", "5"), lv("1.015", "1")]))
    assert s.needs_snapshot and s.book.depth() == (0, 0)
    with pytest.raises(OffTickPrice):
        s.on_snapshot(snap(3, asks=[lv("2.001", "1")]))
    assert not s.is_live
    assert s.on_snapshot(snap(3, asks=[lv("2.00", "1")])) is SyncAction.SYNCED


def test_data_for_another_symbol_is_a_routing_error():
    s = BookSync(book())
    with pytest.raises(ValueError, match="route by symbol"):
        s.on_diff(diff(1, 1, symbol="ETHUSDT"))
    with pytest.raises(ValueError):
        s.on_snapshot(snap(1, symbol="ETHUSDT"))


def test_reset_forgets_book_and_buffer():
    s = BookSync(book())
    s.on_snapshot(snap(1, bids=[lv("1.00", "1")]))
    s.on_diff(diff(2, 2))
    s.reset()
    assert s.needs_snapshot and s.buffered == 0 and s.book.depth() == (0, 0)


# --- BookSync: property test against a reference book ----------------------------------

prices = st.integers(min_value=1, max_value=60).map(lambda t: TICK * t)
qtys = st.sampled_from([D(0), D(0), D("0.5"), D("1"), D("2.25"), D("10")])
levels = st.lists(st.tuples(prices, qtys), max_size=4)
# each venue diff aggregates two venue updates, so a snapshot can fall inside a diff
steps_strategy = st.lists(st.tuples(levels, levels, levels, levels), min_size=1, max_size=25)


def _apply(ref: dict, levels_) -> None:
    for price, qty in levels_:
        if qty == 0:
            ref.pop(price, None)
        else:
            ref[price] = qty


def _merged(*parts) -> list:
    """The levels a venue sends for several updates at once: the last value per price."""
    out: dict = {}
    for part in parts:
        for price, qty in part:
            out[price] = qty
    return list(out.items())


def _as_binance_text(levels_) -> list:
    """Levels as Binance writes them on the stream: 8 decimals, as text."""
    return [(f"{price:.8f}", f"{qty:.8f}") for price, qty in levels_]


@given(
    initial=st.tuples(levels, levels),
    steps=steps_strategy,
    snapshot_step=st.integers(min_value=0, max_value=25),
    snapshot_mid_diff=st.booleans(),
    buffered_before=st.integers(min_value=0, max_value=25),
    buffered_after=st.integers(min_value=0, max_value=25),
    duplicate_every=st.integers(min_value=0, max_value=5),
    start_id=st.integers(min_value=0, max_value=10**12),
    text_diffs=st.booleans(),
)
def test_contiguous_diffs_rebuild_the_reference_book(
    initial, steps, snapshot_step, snapshot_mid_diff, buffered_before, buffered_after, duplicate_every, start_id,
    text_diffs,
):  # fmt: skip
    """Wherever the snapshot falls in the stream, the synced book equals the venue's book
    (diffs carrying Decimal levels or, as the Binance fast path decodes them, text)."""
    snapshot_step = min(snapshot_step, len(steps))
    ref_bids: dict = {}
    ref_asks: dict = {}
    _apply(ref_bids, initial[0])
    _apply(ref_asks, initial[1])

    def take(update_id):
        return snap(update_id, sorted(ref_bids.items()), sorted(ref_asks.items()))

    diffs = []
    snapshot = None
    update_id = start_id
    for i, (b1, a1, b2, a2) in enumerate(steps):
        if i == snapshot_step and not snapshot_mid_diff:
            snapshot = take(update_id)
        _apply(ref_bids, b1)
        _apply(ref_asks, a1)
        if i == snapshot_step and snapshot_mid_diff:
            snapshot = take(update_id + 1)
        _apply(ref_bids, b2)
        _apply(ref_asks, a2)
        bids_, asks_ = _merged(b1, b2), _merged(a1, a2)
        if text_diffs:
            bids_, asks_ = _as_binance_text(bids_), _as_binance_text(asks_)
        diffs.append(diff(update_id + 1, update_id + 2, bids=bids_, asks=asks_))
        update_id += 2
    if snapshot is None:
        snapshot = take(update_id)

    # The feed buffered from somewhere at or before the snapshot's diff (else the
    # snapshot would be stale) to somewhere after it; the rest arrives live.
    first_buffered = max(0, snapshot_step - buffered_before)
    live_from = min(len(diffs), snapshot_step + buffered_after)
    s = BookSync(book())
    for d in diffs[first_buffered:live_from]:
        assert s.on_diff(d) is SyncAction.BUFFERED
    assert s.on_snapshot(snapshot) is SyncAction.SYNCED
    for n, d in enumerate(diffs[live_from:]):
        assert s.on_diff(d) in (SyncAction.APPLIED, SyncAction.IGNORED)
        if duplicate_every and n % duplicate_every == 0:
            assert s.on_diff(d) is SyncAction.IGNORED

    assert s.book.bids() == tuple(sorted(ref_bids.items(), reverse=True))
    assert s.book.asks() == tuple(sorted(ref_asks.items()))
    assert all(type(v) is D for level in s.book.bids() + s.book.asks() for v in level)
    assert s.book.update_id == update_id
    assert s.gaps == 0


@given(steps=st.integers(min_value=3, max_value=30), missing=st.data())
def test_any_missing_diff_is_detected(steps, missing):
    """Dropping one diff from a live stream always leads to RESYNC, never to a silently wrong book."""
    drop = missing.draw(st.integers(min_value=1, max_value=steps - 2))
    s = BookSync(book())
    s.on_snapshot(snap(0))
    actions = [s.on_diff(diff(i, i)) for i in range(1, steps + 1) if i != drop + 1]
    assert SyncAction.RESYNC in actions
    assert actions.index(SyncAction.RESYNC) == drop
