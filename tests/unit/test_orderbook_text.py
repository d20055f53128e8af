"""LocalBook fed with the venue's text: the same book as from Decimals, and bad text refused."""

from decimal import Decimal as D
from decimal import localcontext

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from venues import orderbook
from venues.base import BookDiff, BookSnapshot
from venues.orderbook import BookSync, LocalBook, MalformedLevel, OffTickPrice, SyncAction

TICK = D("0.01")


def book(tick=TICK) -> LocalBook:
    return LocalBook("BTCUSDT", tick)


def exact(levels) -> list[tuple[str, str]]:
    """Levels as the strings of their Decimals: equal only if value *and* exponent are."""
    return [(str(price), str(qty)) for price, qty in levels]


def same_books(a: LocalBook, b: LocalBook) -> None:
    assert exact(a.bids()) == exact(b.bids())
    assert exact(a.asks()) == exact(b.asks())
    assert a.depth() == b.depth()
    assert a.is_crossed == b.is_crossed


# --- the same book from text and from Decimal -------------------------------------------

TICKS = [D("0.01"), D("0.00000001"), D("0.05"), D("0.5"), D("1"), D("10"), D("1E+1"), D("0.010")]


def _binance(value: D) -> str:
    return f"{value:.8f}"


def _plain(value: D) -> str:
    return f"{value:f}"


def _padded(value: D) -> str:
    text = f"{value:f}"
    return ("00" + text + ("000" if "." in text else ".000")) if value else "0.000"


def _exponent(value: D) -> str:
    return f"{value:E}"


def _signed(value: D) -> str:
    return "+" + f"{value:f}"


RENDERINGS = [_binance, _plain, _padded, _exponent, _signed]

quantities = st.sampled_from(
    [D(0), D(0), D(0), D("0.00000001"), D("0.5"), D(1), D("2.25"), D("10"), D("123456.78901234"), D("1E+3")]
)


@st.composite
def text_levels(draw, tick: D, min_ticks: int = 1, max_ticks: int = 80):
    """(text level, the Decimal level of the same text, ticks, quantity) in assorted spellings."""
    ticks = draw(st.integers(min_value=min_ticks, max_value=max_ticks))
    qty = draw(quantities)
    price_text = draw(st.sampled_from(RENDERINGS))(tick * ticks)
    qty_text = draw(st.sampled_from(RENDERINGS))(qty)
    return (price_text, qty_text), (D(price_text), D(qty_text)), ticks, qty


@given(tick=st.sampled_from(TICKS), data=st.data())
def test_text_levels_build_exactly_the_book_that_decimal_levels_build(tick, data):
    """Snapshot then diffs, each level spelled at random; every read equals the Decimal path's,
    down to the exponent, and both equal a reference keyed on integer ticks."""
    side_levels = st.lists(text_levels(tick, 1, 40), max_size=10)
    text_book, decimal_book = book(tick), book(tick)
    reference: tuple[dict, dict] = ({}, {})
    rounds = data.draw(st.lists(st.tuples(side_levels, side_levels), min_size=1, max_size=6))
    for number, (bids, asks) in enumerate(rounds):
        if number == 0:
            text_book.apply_snapshot([lv[0] for lv in bids], [lv[0] for lv in asks], 1)
            decimal_book.apply_snapshot([lv[1] for lv in bids], [lv[1] for lv in asks], 1)
        else:
            text_book.apply_levels([lv[0] for lv in bids], [lv[0] for lv in asks])
            decimal_book.apply_levels([lv[1] for lv in bids], [lv[1] for lv in asks])
        for ref, side in zip(reference, (bids, asks)):
            for _, _, ticks, qty in side:
                if qty:
                    ref[ticks] = qty
                else:
                    ref.pop(ticks, None)
        same_books(text_book, decimal_book)
        assert [(p / tick, q) for p, q in text_book.bids()] == sorted(reference[0].items(), reverse=True)
        assert [(p / tick, q) for p, q in text_book.asks()] == sorted(reference[1].items())
        assert text_book.best_bid() == decimal_book.best_bid()
        assert text_book.best_ask() == decimal_book.best_ask()


@given(data=st.data())
def test_text_and_decimal_diffs_mix_in_one_book(data):
    """A book kept from text diffs also takes a Decimal diff (e.g. a snapshot, another source)."""
    levels = st.lists(text_levels(TICK, 1, 20), max_size=6)
    mixed, decimal_only = book(), book()
    for bids, asks, as_text in data.draw(st.lists(st.tuples(levels, levels, st.booleans()), max_size=6)):
        pick = 0 if as_text else 1
        mixed.apply_levels([lv[pick] for lv in bids], [lv[pick] for lv in asks])
        decimal_only.apply_levels([lv[1] for lv in bids], [lv[1] for lv in asks])
    same_books(mixed, decimal_only)


def test_reads_give_the_decimal_of_the_text_as_written():
    b = book()
    b.apply_levels([("60000.01000000", "0.00541000"), ("59999.99000000", "1.00000000")], [("60000.02000000", "3.5")])
    bid_price, bid_qty = b.best_bid()
    assert (str(bid_price), str(bid_qty)) == ("60000.01000000", "0.00541000")
    assert b.best_ask() == (D("60000.02"), D("3.5"))
    assert exact(b.bids(5)) == [("60000.01000000", "0.00541000"), ("59999.99000000", "1.00000000")]
    assert b.bids(1) == (b.best_bid(),) and b.asks(1) == (b.best_ask(),)
    assert b.to_snapshot().bids == b.bids()


def test_text_price_written_two_ways_is_one_level_and_keeps_the_latest_spelling():
    b = book()
    b.apply_levels([("10.1", "1")], [])
    b.apply_levels([("10.10000000", "3.00000000")], [])
    assert b.depth() == (1, 0)
    assert exact(b.bids()) == [("10.10000000", "3.00000000")]
    b.apply_levels([(D("10.10"), D("4"))], [])
    assert exact(b.bids()) == [("10.10", "4")]


@pytest.mark.parametrize("zero", ["0.00000000", "0", "0.0", "000.000", ".0", "0.", "0E-8", "+0", "-0.00"])
def test_every_spelling_of_zero_removes_the_level(zero):
    b = book()
    b.apply_levels([("10.00000000", "1.00000000")], [("10.01000000", "1")])
    b.apply_levels([("10.00000000", zero)], [("10.01", zero)])
    assert b.depth() == (0, 0)
    b.apply_levels([("9.00", zero)], [])  # removing a level the book does not hold
    assert b.depth() == (0, 0)


@pytest.mark.parametrize("price_seen_before", [False, True])
def test_a_quantity_with_leading_zeros_is_not_taken_for_zero(price_seen_before):
    b = book()
    if price_seen_before:  # a remembered price takes the inline path
        b.apply_levels([("10.00", "1"), ("11.00", "1"), ("12.00", "1")], [])
    b.apply_levels([("10.00", "00.00000001"), ("11.00", "000"), ("12.00", "0.10")], [])
    assert exact(b.bids()) == [("12.00", "0.10"), ("10.00", str(D("00.00000001")))]


def test_sides_are_ordered_best_first_whatever_order_levels_arrive_in():
    b = book()
    b.apply_levels(
        [("99.98", "1"), ("100.00", "2"), ("99.99", "3")],
        [("100.03", "4"), ("100.01", "5"), ("100.02", "6")],
    )
    assert [p for p, _ in b.bids()] == [D("100.00"), D("99.99"), D("99.98")]
    assert [p for p, _ in b.asks()] == [D("100.01"), D("100.02"), D("100.03")]
    assert [p for p, _ in b.asks(2)] == [D("100.01"), D("100.02")]
    assert not b.is_crossed
    b.apply_levels([], [("100.00", "1")])
    assert b.is_crossed


# --- prices off the grid -----------------------------------------------------------------


@given(
    tick=st.sampled_from(TICKS),
    ticks=st.integers(min_value=0, max_value=10**9),
    fraction=st.sampled_from([D("0.5"), D("0.1"), D("0.001"), D("0.99999999")]),
    render=st.sampled_from(RENDERINGS),
)
def test_off_tick_text_price_is_refused_like_its_decimal(tick, ticks, fraction, render):
    price = tick * ticks + tick * fraction
    text = render(price)
    assume(D(text) == price)  # 8 decimals cannot spell every price
    with pytest.raises(OffTickPrice, match="not a positive multiple of tick.*resync"):
        book(tick).apply_levels([(text, "1")], [])
    with pytest.raises(OffTickPrice):
        book(tick).apply_levels([(D(text), D(1))], [])


@given(tick=st.sampled_from(TICKS), ticks=st.integers(min_value=1, max_value=10**40))
def test_huge_prices_count_ticks_exactly_on_both_paths(tick, ticks):
    """Beyond the 28 digits of the decimal context: still exact, and the same on both paths."""
    with localcontext() as wide:
        wide.prec = 100
        price = tick * ticks
    text = f"{price:f}"
    text_book, decimal_book = book(tick), book(tick)
    text_book.apply_levels([(text, "1")], [])
    decimal_book.apply_levels([(D(text), D(1))], [])
    same_books(text_book, decimal_book)
    assert text_book.best_bid()[0] == price
    off = text + ("1" if "." in text else ".1")  # a last digit below the tick
    with pytest.raises(OffTickPrice):
        text_book.apply_levels([(off, "1")], [])
    with pytest.raises(OffTickPrice):
        decimal_book.apply_levels([(D(off), D(1))], [])


@pytest.mark.parametrize("price", ["0", "0.00000000", "-1.00", "-0.01", "+0"])
def test_zero_and_negative_text_prices_are_off_tick(price):
    with pytest.raises(OffTickPrice):
        book().apply_levels([(price, "1")], [])


# --- malformed text ----------------------------------------------------------------------

NOT_NUMBERS = [
    "", ".", "abc", "1.2.3", " 1.00", "1.00 ", "1_000.00", "NaN", "nan", "Infinity", "-Infinity", "sNaN",
    "\u0661.\u0660\u0660", "\u00b2", "0x10", "1e", "e5", "--1", "1,5", "1.00\n",
]  # fmt: skip


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_price_that_is_not_a_number_is_refused(text):
    b = book()
    b.apply_levels([("10.00", "1")], [("10.01", "1")])
    with pytest.raises(MalformedLevel, match="price .* is not a decimal number"):
        b.apply_levels([(text, "1.00000000")], [])
    with pytest.raises(MalformedLevel, match="price .* is not a decimal number"):
        b.apply_levels([], [(text, "0.00000000")])  # even to remove a level
    with pytest.raises(MalformedLevel, match="price .* is not a decimal number"):
        book().apply_snapshot([(text, "1")], [], 1)


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_quantity_that_is_not_a_number_is_refused_when_applied_not_when_read(text):
    b = book()
    b.apply_levels([("10.00", "1")], [])  # the price is known: the quantity takes the fast path
    with pytest.raises(MalformedLevel, match="quantity .* is not a decimal number"):
        b.apply_levels([("10.00", text)], [])
    with pytest.raises(MalformedLevel):
        b.apply_levels([], [("11.00", text)])
    assert b.best_bid() == (D("10.00"), D(1))  # nothing unreadable got in


@pytest.mark.parametrize("qty", ["-1.00000000", "-0.5", "-1E-8"])
def test_negative_text_quantity_is_refused(qty):
    b = book()
    b.apply_levels([("10.00", "1")], [])
    with pytest.raises(MalformedLevel, match="negative quantity"):
        b.apply_levels([("10.00", qty)], [])


@pytest.mark.parametrize(
    "level, message",
    [
        (("10.00",), "pair"),
        (("10.00", "1", "2"), "pair"),
        (None, "pair"),
        ((["10.00"], "1"), "price .* is a list"),
        ((10.0, "1"), "price .* is a float"),
        (("10.00", 1.5), "quantity .* is a float"),
        ((D("NaN"), D(1)), "not a number"),
        ((D("sNaN"), "1"), "not a number"),
        ((D("10.00"), D("Infinity")), "not a number"),
    ],
)
def test_levels_of_the_wrong_shape_or_type_are_refused_clearly(level, message):
    b = book()
    b.apply_levels([("10.00", "1")], [])
    with pytest.raises(MalformedLevel, match=message):
        b.apply_levels([level], [])
    with pytest.raises(MalformedLevel, match=message):
        book().apply_snapshot([level], [], 1)


def test_book_sync_discards_the_book_on_malformed_text():
    s = BookSync(book())
    s.on_snapshot(BookSnapshot(symbol="BTCUSDT", last_update_id=1, bids=[("1.00", "1")], asks=[]))
    bad = BookDiff(symbol="BTCUSDT", first_id=2, last_id=2, bids=[("1.01", "5"), ("1.02", "lots")], asks=[])
    with pytest.raises(MalformedLevel):
        s.on_diff(bad)
    assert s.needs_snapshot and s.book.depth() == (0, 0)


def test_text_diffs_buffered_before_the_snapshot_are_replayed():
    s = BookSync(book())
    assert s.on_diff(BookDiff(symbol="BTCUSDT", first_id=5, last_id=6, bids=[("1.00", "2.0")], asks=[])) is (
        SyncAction.BUFFERED
    )
    assert s.on_snapshot(BookSnapshot(symbol="BTCUSDT", last_update_id=5, bids=[(D("1.00"), D(1))], asks=[])) is (
        SyncAction.SYNCED
    )
    assert exact(s.book.bids()) == [("1.00", "2.0")]


# --- the grid and the price memo -------------------------------------------------------


@pytest.mark.parametrize("tick", [D(0), D(-1), D("NaN"), D("Infinity")])
def test_unusable_tick_sizes_are_refused(tick):
    with pytest.raises(ValueError, match="tick size"):
        LocalBook("X", tick)


def test_tick_size_must_be_exact():
    with pytest.raises(TypeError, match="Decimal"):
        LocalBook("X", 0.01)
    assert LocalBook("X", 1).tick_size == D(1)


def test_a_new_tick_size_applies_to_the_next_levels():
    b = book(D("0.01"))
    b.apply_levels([("10.01", "1")], [])
    b.tick_size = D("0.1")
    with pytest.raises(OffTickPrice):
        b.apply_levels([("10.01", "1")], [])  # remembered under the old grid, re-checked under the new
    b.clear()
    b.apply_levels([("10.1", "1")], [])
    assert b.best_bid() == (D("10.1"), D(1))


def test_book_stays_exact_when_the_price_memo_overflows(monkeypatch):
    monkeypatch.setattr(orderbook, "PRICE_MEMO_SIZE", 3)
    text_book, decimal_book = book(), book()
    for round_ in range(4):
        for ticks in range(1, 12):
            qty = "0" if (ticks + round_) % 3 == 0 else f"{ticks}.{round_}"
            text_book.apply_levels([(f"{ticks}.00000000", qty)], [(f"{ticks + 20}.00", qty)])
            decimal_book.apply_levels([(D(f"{ticks}.00000000"), D(qty))], [(D(f"{ticks + 20}.00"), D(qty))])
        same_books(text_book, decimal_book)
