"""The order state machine: which states are news, which are stale, which are impossible."""

from __future__ import annotations

import itertools
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.order_state import (
    LOCAL_STATES,
    TRANSITIONS,
    OrderTable,
    Source,
    Verdict,
    fill_from_trade,
    judge,
    update_from_state,
)
from daemon.messages import OrderIntent, OrderUpdate
from daemon.model import OrderStatus, OrderType, Side
from venues.base import AccountTrade, OrderState

S = OrderStatus
FINALS = [S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED]


def upd(status: OrderStatus, filled: str = "0", cid: str = "c1", qty: str = "1", venue_id: str | None = "v1") -> OrderUpdate:
    return OrderUpdate(
        venue="sim",
        symbol="BTCUSDT",
        client_order_id=cid,
        status=status,
        side=Side.BUY,
        quantity=D(qty),
        filled_qty=D(filled),
        price=D("100"),
        venue_order_id=venue_id,
    )


# --- judge: the transition table ------------------------------------------------------------


@pytest.mark.parametrize(("current", "new"), [(c, n) for c, targets in TRANSITIONS.items() for n in targets if n is not c])
def test_every_listed_transition_is_news(current, new):
    # filled grows where the new status implies a trade, so only the table decides
    new_filled = D("0.5") if new in (S.PARTIALLY_FILLED,) else D(0)
    if new is S.FILLED:
        new_filled = D(1)
    assert judge(current, D(0), new, new_filled, source=Source.EVENT) in (Verdict.APPLY, Verdict.STALE)
    # with more filled it can never be stale
    assert judge(current, D(0), new, new_filled + D("0.1"), source=Source.QUERY) is Verdict.APPLY


@pytest.mark.parametrize("final", FINALS)
@pytest.mark.parametrize("new", [S.NEW, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.UNKNOWN, S.PENDING_NEW, *FINALS])
def test_a_final_state_never_moves_on(final, new):
    verdict = judge(final, D("0.5"), new, D("0.5"), source=Source.EVENT)
    if new is final:
        assert verdict is Verdict.DUPLICATE
    elif new.is_final:
        assert verdict is Verdict.INVALID  # CANCELED then EXPIRED with the same fill: the venue contradicts itself
    else:
        assert verdict is Verdict.STALE  # a late event from before the end
    # trading on after the end is impossible
    assert judge(final, D("0.5"), new, D("0.7"), source=Source.EVENT) is Verdict.INVALID


def test_first_word_on_an_order_is_always_news():
    for status in OrderStatus:
        assert judge(None, D(0), status, D(0)) is Verdict.APPLY


def test_filled_quantity_never_shrinks():
    assert judge(S.PARTIALLY_FILLED, D("0.5"), S.PARTIALLY_FILLED, D("0.3")) is Verdict.STALE
    assert judge(S.FILLED, D(1), S.PARTIALLY_FILLED, D("0.3"), source=Source.QUERY) is Verdict.STALE
    assert judge(S.PARTIALLY_FILLED, D("0.3"), S.PARTIALLY_FILLED, D("0.5")) is Verdict.APPLY


def test_late_creation_event_after_the_rest_answer_is_stale():
    assert judge(S.FILLED, D(1), S.NEW, D(0)) is Verdict.STALE
    assert judge(S.CANCELED, D(0), S.NEW, D(0)) is Verdict.STALE
    assert judge(S.PENDING_CANCEL, D(0), S.NEW, D(0), source=Source.EVENT) is Verdict.STALE


def test_a_query_replaces_a_local_state():
    # a refused cancel: the venue says the order is still working
    assert judge(S.PENDING_CANCEL, D(0), S.NEW, D(0), source=Source.QUERY) is Verdict.APPLY
    assert judge(S.UNKNOWN, D(0), S.NEW, D(0), source=Source.QUERY) is Verdict.APPLY
    # but never one the venue itself reported
    assert judge(S.CANCELED, D(0), S.NEW, D(0), source=Source.QUERY) is Verdict.STALE


def test_unknown_and_pending_new_settle_to_any_venue_answer():
    for local in (S.PENDING_NEW, S.UNKNOWN):
        for answer in (S.NEW, S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED):
            filled = D(1) if answer is S.FILLED else D(0)
            assert judge(local, D(0), answer, filled, source=Source.QUERY) is Verdict.APPLY
    assert judge(S.UNKNOWN, D(0), S.PENDING_NEW, D(0), source=Source.LOCAL) is Verdict.STALE


def test_an_inferred_final_state_gives_way_to_the_venue():
    assert judge(S.REJECTED, D(0), S.NEW, D(0), source=Source.EVENT, current_inferred=True) is Verdict.APPLY
    assert judge(S.REJECTED, D(0), S.FILLED, D(1), source=Source.QUERY, current_inferred=True) is Verdict.APPLY
    assert judge(S.REJECTED, D(0), S.NEW, D(0), source=Source.EVENT, current_inferred=False) is Verdict.STALE
    # our own later bookkeeping does not get that privilege
    assert judge(S.REJECTED, D(0), S.PENDING_CANCEL, D(0), source=Source.LOCAL, current_inferred=True) is Verdict.STALE


def test_local_states_are_the_three_of_our_own():
    assert {S.PENDING_NEW, S.UNKNOWN, S.PENDING_CANCEL} == LOCAL_STATES


# --- any delivery order of a true history ends in the true state ------------------------------


@st.composite
def histories(draw):
    """A true order life at the venue: NEW, some trades, then maybe an end."""
    qty = 10
    cuts = draw(st.lists(st.integers(1, 9), max_size=4, unique=True))
    filled_steps = sorted(cuts)
    states = [(S.NEW, 0)]
    states += [(S.PARTIALLY_FILLED, f) for f in filled_steps]
    end = draw(st.sampled_from(["open", "filled", "canceled", "expired"]))
    last = filled_steps[-1] if filled_steps else 0
    if end == "filled":
        states.append((S.FILLED, qty))
    elif end == "canceled":
        states.append((S.CANCELED, last))
    elif end == "expired":
        states.append((S.EXPIRED, last))
    return states


@given(histories(), st.randoms(use_true_random=False), st.integers(0, 5))
def test_events_in_any_order_with_duplicates_end_in_the_true_state(history, rnd, duplicates):
    deliveries = list(history) + [rnd.choice(history) for _ in range(duplicates)]
    rnd.shuffle(deliveries)
    table = OrderTable("sim")
    verdicts = []
    for status, filled in deliveries:
        verdict, _ = table.apply(upd(status, str(D(filled) / 10)), Source.EVENT)
        verdicts.append(verdict)
    order = table.get("c1")
    true_status, true_filled = history[-1]
    assert (order.status, order.filled_qty) == (true_status, D(true_filled) / 10)
    assert Verdict.INVALID not in verdicts
    assert verdicts.count(Verdict.APPLY) <= len(history)


@given(histories())
def test_local_bookkeeping_then_rest_answer_then_stream_is_consistent(history):
    """PENDING_NEW, then the POST's answer (the state at some point), then every stream event."""
    table = OrderTable("sim")
    table.apply(upd(S.PENDING_NEW, venue_id=None), Source.LOCAL)
    answer_status, answer_filled = history[len(history) // 2]
    assert table.apply(upd(answer_status, str(D(answer_filled) / 10)), Source.QUERY)[0] is Verdict.APPLY
    for status, filled in history:
        verdict, _ = table.apply(upd(status, str(D(filled) / 10)), Source.EVENT)
        assert verdict is not Verdict.INVALID
    order = table.get("c1")
    assert (order.status, order.filled_qty) == (history[-1][0], D(history[-1][1]) / 10)


# --- the table --------------------------------------------------------------------------------


def test_table_indexes_by_venue_order_id_and_merges_missing_fields():
    table = OrderTable("sim")
    intent = OrderIntent(
        client_order_id="td-e-0", exec_id="e", seq=0, venue="sim", symbol="BTCUSDT", side=Side.SELL,
        order_type=OrderType.LIMIT, quantity=D(2), price=D("101"),
    )  # fmt: skip
    order = table.track_intent(intent)
    assert order.status is None and order.ours and "td-e-0" in table
    table.apply(upd(S.PENDING_NEW, cid="td-e-0", venue_id=None), Source.LOCAL)
    assert table.by_venue_order_id("BTCUSDT", "77") is None
    table.apply(upd(S.NEW, cid="td-e-0", venue_id="77"), Source.QUERY)
    assert table.by_venue_order_id("BTCUSDT", "77") is order
    # a later update without the venue id keeps the one we know
    table.apply(upd(S.PARTIALLY_FILLED, "0.5", cid="td-e-0", venue_id=None), Source.EVENT)
    assert order.venue_order_id == "77" and order.filled_qty == D("0.5")
    assert [o.client_order_id for o in table.working()] == ["td-e-0"]
    assert table.counts() == {"PARTIALLY_FILLED": 1}


def test_a_stale_answer_still_teaches_the_venue_id():
    table = OrderTable("sim")
    table.apply(upd(S.FILLED, "1", venue_id=None), Source.EVENT)
    verdict, order = table.apply(upd(S.NEW, venue_id="9"), Source.EVENT)
    assert verdict is Verdict.STALE and order.venue_order_id == "9" and table.by_venue_order_id("BTCUSDT", "9") is order


def test_an_order_never_seen_is_adopted_as_not_ours():
    table = OrderTable("sim")
    verdict, order = table.apply(upd(S.NEW, cid="web_1"), Source.QUERY)
    assert verdict is Verdict.APPLY and not order.ours
    verdict, order = table.apply(upd(S.REJECTED, cid="mine"), Source.LOCAL)
    assert order.ours


def test_invalid_transitions_are_counted_not_applied():
    table = OrderTable("sim")
    table.apply(upd(S.CANCELED, "0.3"), Source.QUERY)
    verdict, order = table.apply(upd(S.PARTIALLY_FILLED, "0.5"), Source.EVENT)
    assert verdict is Verdict.INVALID and table.invalid == 1
    assert order.status is S.CANCELED and order.filled_qty == D("0.3")


def test_inferred_flag_follows_the_latest_applied_state():
    table = OrderTable("sim")
    table.apply(upd(S.UNKNOWN, venue_id=None), Source.LOCAL)
    _, order = table.apply(upd(S.REJECTED, venue_id=None), Source.LOCAL, inferred=True)
    assert order.inferred
    verdict, order = table.apply(upd(S.NEW), Source.EVENT)
    assert verdict is Verdict.APPLY and order.status is S.NEW and not order.inferred


def test_final_orders_are_forgotten_oldest_first_working_ones_never():
    table = OrderTable("sim", keep_final=3)
    table.apply(upd(S.NEW, cid="working", venue_id="w"), Source.EVENT)
    for i in range(6):
        table.apply(upd(S.FILLED, "1", cid=f"f{i}", venue_id=f"v{i}"), Source.EVENT)
    assert "working" in table
    assert [c for c in ("f0", "f1", "f2", "f3", "f4", "f5") if c in table] == ["f3", "f4", "f5"]
    assert table.by_venue_order_id("BTCUSDT", "v0") is None and table.by_venue_order_id("BTCUSDT", "v5") is not None


def test_snapshot_describes_the_order_with_changes():
    table = OrderTable("sim")
    table.apply(upd(S.PARTIALLY_FILLED, "0.4", venue_id="5"), Source.EVENT)
    snap = table.snapshot(table.get("c1"), "sim", status=S.PENDING_CANCEL, reason="user")
    assert snap.status is S.PENDING_CANCEL and snap.filled_qty == D("0.4") and snap.venue_order_id == "5"
    assert snap.reason == "user" and snap.price == D("100")


def test_conversions_from_venue_answers():
    state = OrderState(
        symbol="BTCUSDT", client_order_id="c", venue_order_id="42", status=S.PARTIALLY_FILLED, side=Side.BUY,
        order_type=OrderType.LIMIT, quantity=D(2), filled_qty=D("0.5"), price=D(100), quote_filled=D("49.5"), venue_ms=5,
    )  # fmt: skip
    u = update_from_state("sim", state, ts=1.5)
    assert (u.status, u.filled_qty, u.avg_price, u.venue_order_id, u.quote_filled, u.ts) == (
        S.PARTIALLY_FILLED, D("0.5"), D(99), "42", D("49.5"), 1.5,
    )  # fmt: skip
    empty = update_from_state("sim", msgspec_replace(state, filled_qty=D(0), quote_filled=D(0)))
    assert empty.avg_price is None and empty.quote_filled is None
    trade = AccountTrade(
        symbol="BTCUSDT", trade_id="9", venue_order_id="42", client_order_id=None, side=Side.BUY, price=D(100),
        qty=D("0.5"), fee=D("0.1"), fee_asset="USDT", is_maker=True, venue_ms=7,
    )  # fmt: skip
    f = fill_from_trade("sim", trade, "c")
    assert (f.client_order_id, f.trade_id, f.venue_order_id, f.qty, f.is_maker) == ("c", "9", "42", D("0.5"), True)


def msgspec_replace(obj, **changes):
    import msgspec

    return msgspec.structs.replace(obj, **changes)


def test_transition_table_covers_every_status():
    assert set(TRANSITIONS) == set(OrderStatus)
    for status, targets in TRANSITIONS.items():
        if status.is_final:
            assert not targets
    # every pair is classified without raising
    for a, b in itertools.product(OrderStatus, repeat=2):
        judge(a, D(0), b, D(0))


def test_venue_order_ids_are_per_symbol():
    # Binance numbers orders per symbol: BTCUSDT order 5 and ETHUSDT order 5 are two orders
    table = OrderTable("sim")
    table.apply(upd(S.NEW, cid="btc", venue_id="5"), Source.QUERY)
    eth = OrderUpdate(
        venue="sim", symbol="ETHUSDT", client_order_id="eth", status=S.NEW, side=Side.SELL, quantity=D(1),
        venue_order_id="5",
    )  # fmt: skip
    table.apply(eth, Source.QUERY)
    assert table.by_venue_order_id("BTCUSDT", "5").client_order_id == "btc"
    assert table.by_venue_order_id("ETHUSDT", "5").client_order_id == "eth"
