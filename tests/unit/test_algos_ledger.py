"""The child ledger: counting fills once, conservative exposure, sticky final states."""

from decimal import Decimal as D

import pytest

from actors.algos import ChildLedger, ChildStyle, ExecutionParams, PlaceChild, TwapParams, UnknownChild
from daemon.messages import Fill, OrderUpdate
from daemon.model import Instrument, OrderStatus, OrderType, Side

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"))
PARAMS = ExecutionParams(instrument=BTC, side=Side.BUY, quantity=D("1"), duration=60.0, algo=TwapParams())


def place(qty="0.1", price="100"):
    return PlaceChild(quantity=D(qty), price=D(price), order_type=OrderType.LIMIT_MAKER, time_in_force=None,
                      style=ChildStyle.PASSIVE, reason="slice 1/1")


def update(cid, status, filled="0", qty="0.1", quote_filled=None, avg=None):
    return OrderUpdate(venue="sim", symbol="BTCUSDT", client_order_id=cid, status=status, side=Side.BUY,
                       quantity=D(qty), filled_qty=D(filled), avg_price=None if avg is None else D(avg),
                       quote_filled=None if quote_filled is None else D(quote_filled))


def fill(cid, trade_id, qty, price="100", maker=True, fee="0"):
    return Fill(venue="sim", symbol="BTCUSDT", client_order_id=cid, trade_id=trade_id, side=Side.BUY,
                price=D(price), qty=D(qty), fee=D(fee), fee_asset="USDT", is_maker=maker)


@pytest.fixture
def ledger():
    return ChildLedger("e1", PARAMS)


def test_open_builds_a_deterministic_intent_and_counts_it_in_flight(ledger):
    intent = ledger.open(place(), 5.0)
    assert intent.client_order_id == "td-e1-1" and intent.seq == 1 and intent.exec_id == "e1"
    assert (intent.venue, intent.symbol, intent.side) == ("sim", "BTCUSDT", Side.BUY)
    assert intent.quantity == D("0.1") and intent.price == D("100") and intent.ts == 5.0
    (live,) = ledger.view().live
    assert live.status is OrderStatus.PENDING_NEW and live.remaining == D("0.1") and live.placed_at == 5.0
    assert ledger.open(place(), 6.0).client_order_id == "td-e1-2"
    assert ledger.view().sent == 2


def test_a_fill_counts_once(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    assert ledger.apply_fill(fill(cid, "t1", "0.04"), 1.0)
    assert not ledger.apply_fill(fill(cid, "t1", "0.04"), 1.0)
    assert ledger.filled == D("0.04") and len(ledger.fills) == 1


def test_fill_and_update_are_not_added_up(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    ledger.apply_update(update(cid, OrderStatus.PARTIALLY_FILLED, filled="0.04", quote_filled="4.0"), 1.0)
    assert ledger.filled == D("0.04") and ledger.filled_quote == D("4.0")
    ledger.apply_fill(fill(cid, "t1", "0.04"), 1.0)
    assert ledger.filled == D("0.04") and ledger.filled_quote == D("4.0")
    (live,) = ledger.view().live
    assert live.filled == D("0.04") and live.remaining == D("0.06")


def test_notional_for_fills_reported_but_not_received_uses_the_average(ledger):
    cid = ledger.open(place(price="100"), 0.0).client_order_id
    ledger.apply_update(update(cid, OrderStatus.PARTIALLY_FILLED, filled="0.05", avg="99"), 1.0)
    assert ledger.filled_quote == D("4.95")


def test_final_states_are_sticky(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    ledger.apply_update(update(cid, OrderStatus.FILLED, filled="0.1"), 1.0)
    ledger.apply_update(update(cid, OrderStatus.NEW), 2.0)  # late, out of order
    assert ledger.view().live == () and ledger.children[cid].status is OrderStatus.FILLED
    assert ledger.filled == D("0.1")


def test_a_late_pending_new_does_not_undo_an_acknowledgement(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    ledger.apply_update(update(cid, OrderStatus.NEW), 1.0)
    ledger.apply_update(update(cid, OrderStatus.PENDING_NEW), 2.0)
    assert ledger.view().live[0].status is OrderStatus.NEW


def test_a_fill_after_cancel_still_counts(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    ledger.apply_update(update(cid, OrderStatus.CANCELED, filled="0.03"), 1.0)
    ledger.apply_fill(fill(cid, "t9", "0.03"), 2.0)
    assert ledger.filled == D("0.03") and ledger.view().live == ()


def test_cancel_keeps_the_child_counted_until_confirmed(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    ledger.apply_update(update(cid, OrderStatus.NEW), 0.5)
    ledger.cancel_sent(cid, 1.0)
    (live,) = ledger.view().live
    assert live.status is OrderStatus.PENDING_CANCEL and live.cancel_requested and live.remaining == D("0.1")
    ledger.apply_update(update(cid, OrderStatus.PARTIALLY_FILLED, filled="0.02"), 1.1)  # filled meanwhile
    (live,) = ledger.view().live
    assert live.status is OrderStatus.PENDING_CANCEL and live.remaining == D("0.08")
    ledger.apply_update(update(cid, OrderStatus.CANCELED, filled="0.02"), 1.2)
    view = ledger.view()
    assert view.live == () and view.filled == D("0.02") and view.last_closed_at == 1.2


def test_unknown_children_count_in_full_and_a_fill_proves_them(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    ledger.outcome_unknown(cid, 1.0)
    ledger.cancel_sent(cid, 1.5)
    (live,) = ledger.view().live
    assert live.status is OrderStatus.UNKNOWN and live.cancel_requested and live.remaining == D("0.1")
    ledger.apply_fill(fill(cid, "t1", "0.01"), 2.0)
    assert ledger.view().live[0].status is OrderStatus.PARTIALLY_FILLED


def test_full_fill_closes_the_child_even_before_the_update(ledger):
    cid = ledger.open(place(), 0.0).client_order_id
    ledger.apply_fill(fill(cid, "t1", "0.06"), 1.0)
    ledger.apply_fill(fill(cid, "t2", "0.04"), 2.0)
    assert ledger.view().live == () and ledger.children[cid].status is OrderStatus.FILLED


def test_rejects_and_denials_count_in_a_row_until_a_child_is_accepted(ledger):
    a = ledger.open(place(), 0.0).client_order_id
    b = ledger.open(place(), 0.0).client_order_id
    c = ledger.open(place(), 0.0).client_order_id
    ledger.apply_update(update(a, OrderStatus.REJECTED), 1.0)
    ledger.denied(b, "MAX_ORDER_NOTIONAL", 2.0)
    view = ledger.view()
    assert view.rejects_in_row == 2 and view.last_reject_at == 2.0
    ledger.apply_update(update(c, OrderStatus.NEW), 3.0)
    assert ledger.view().rejects_in_row == 0
    stats = ledger.stats()
    assert (stats.sent, stats.rejected, stats.denied, stats.live) == (2, 1, 1, 1)


def test_updates_for_strangers_are_refused(ledger):
    with pytest.raises(UnknownChild):
        ledger.apply_update(update("td-other-1", OrderStatus.NEW), 0.0)
    with pytest.raises(UnknownChild):
        ledger.apply_fill(fill("td-other-1", "t1", "0.1"), 0.0)
    assert ledger.filled == 0


def test_recovery_rebuilds_the_same_view():
    before = ChildLedger("e1", PARAMS)
    intents = [before.open(place(), 0.0), before.open(place("0.2"), 1.0)]
    fills = [fill(intents[0].client_order_id, "t1", "0.1"), fill(intents[1].client_order_id, "t2", "0.05")]
    for f in fills:
        before.apply_fill(f, 2.0)
    after = ChildLedger("e1", PARAMS)
    for intent in intents:
        after.adopt(intent, 3.0)
    after.restore_fills(fills + fills, 3.0)  # replay twice: duplicates are ignored
    assert after.filled == before.filled == D("0.15")
    assert [c.remaining for c in after.view().live] == [D("0.15")]
    assert after.open(place(), 4.0).seq == 3  # numbering continues, never reuses an id


def test_stats_describe_the_children(ledger):
    a = ledger.open(place("0.1"), 0.0).client_order_id
    b = ledger.open(place("0.3"), 0.0).client_order_id
    ledger.apply_fill(fill(a, "t1", "0.1", maker=True), 1.0)
    ledger.apply_fill(fill(b, "t2", "0.1", maker=False), 1.0)
    ledger.apply_update(update(b, OrderStatus.CANCELED, filled="0.1", qty="0.3"), 2.0)
    stats = ledger.stats()
    assert (stats.filled, stats.partially_filled, stats.cancelled) == (1, 1, 1)
    assert stats.avg_size == pytest.approx(0.2) and stats.min_size == 0.1 and stats.max_size == 0.3
    assert stats.maker_share == pytest.approx(0.5)
