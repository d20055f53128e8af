"""No overfill, whatever the venue does.

Hypothesis plays an adversarial venue against every algorithm: children are
acknowledged or not, filled in pieces, rejected, denied by risk, lost in
UNKNOWN, cancelled late; fills arrive before, after or long after their
updates, and twice. After every event the truth at the venue is checked:
what has filled plus what could still fill never exceeds the parent.
"""

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from actors.algos import (
    ChildLedger,
    ChildStyle,
    ExecutionParams,
    IcebergParams,
    MarketState,
    PovParams,
    TwapParams,
    Urgency,
    VwapParams,
    make_algorithm,
)
from daemon.messages import Fill, OrderUpdate
from daemon.model import Instrument, OrderStatus, OrderType, Side, TimeInForce

INST = Instrument(venue="sim", symbol="ABCUSDT", base="ABC", quote="USDT", tick_size=D("0.01"),
                  step_size=D("0.001"), min_qty=D("0.001"), min_notional=D("1"))
STEP = INST.step_size


@st.composite
def executions(draw):
    kind = draw(st.sampled_from(["twap", "vwap", "iceberg", "pov"]))
    quantity = draw(st.integers(1, 5000) | st.integers(10, 500)) * STEP
    side = draw(st.sampled_from([Side.BUY, Side.SELL]))
    fields = dict(
        instrument=INST, side=side, quantity=quantity,
        child_style=draw(st.sampled_from(list(ChildStyle))),
        urgency=draw(st.sampled_from(list(Urgency))),
        size_jitter=draw(st.sampled_from([0.0, 0.3])),
        time_jitter=draw(st.sampled_from([0.0, 0.3])),
        seed=draw(st.integers(0, 3)),
        max_live_children=draw(st.integers(1, 4)),
        replace_after=draw(st.sampled_from([5.0, 30.0])),
        end_overrun=30.0,
        max_rejects=draw(st.sampled_from([3, 50])),
        reject_backoff=0.5,
    )
    if draw(st.booleans()):
        fields["min_child"] = draw(st.integers(1, 300)) * STEP
    if draw(st.booleans()):
        fields["max_child"] = max(draw(st.integers(1, 1000)) * STEP, fields.get("min_child", STEP))
    if draw(st.booleans()):
        fields["limit_price"] = D(draw(st.sampled_from(["99.00", "100.00", "101.00"])))
    if kind == "twap":
        fields.update(duration=600.0, algo=TwapParams(slices=draw(st.integers(1, 12)),
                                                      catch_up=draw(st.sampled_from([1.0, 3.0]))))
    elif kind == "vwap":
        fields.update(duration=600.0, algo=VwapParams(
            profile=tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=6).filter(any))),
            expected_volume=draw(st.sampled_from([None, D("50")])),
            max_participation=draw(st.sampled_from([None, 0.3])), interval=60.0))
    elif kind == "iceberg":
        fields.setdefault("limit_price", D("100.00"))
        display = draw(st.integers(11, 500)) * STEP  # at least the 1 USDT minimum notional at 99
        fields.update(quantity=max(quantity, display), algo=IcebergParams(
            display=display, refill_delay=draw(st.sampled_from([0.0, 3.0]))))
        if draw(st.booleans()):
            fields["duration"] = 600.0
    else:
        fields.update(algo=PovParams(rate=draw(st.sampled_from([0.05, 0.3])), band=0.2))
        if draw(st.booleans()):
            fields["duration"] = 600.0
    return ExecutionParams(**fields)


# repeated names make those events more frequent
OPS = ["tick", "tick", "ack", "fill", "fill", "fill_all", "reject", "deny", "unknown", "unknown", "resolve",
       "cancelled", "cancelled", "expire", "deliver", "duplicate"]


class Adversary:
    """The venue's truth, and the messages it lets through (late, early, twice)."""

    def __init__(self, params):
        self.params = params
        self.algo = make_algorithm(params)
        self.ledger = ChildLedger("p1", params)
        self.now = 0.0
        self.mid = D("100.00")
        self.volume = D(0)
        self.exists = {}  # cid -> does the venue have this order
        self.qty = {}
        self.filled = {}
        self.final = {}
        self.deferred = []  # fills not yet delivered
        self.delivered = []
        self.trades = 0

    # --- what the venue says -----------------------------------------------------------
    def _update(self, cid, status):
        self.ledger.apply_update(OrderUpdate(venue="sim", symbol="ABCUSDT", client_order_id=cid, status=status,
                                             side=self.params.side, quantity=self.qty[cid],
                                             filled_qty=self.filled[cid]), self.now)

    def _fill(self, cid, qty, order):
        self.filled[cid] += qty
        self.volume += qty
        self.trades += 1
        fill = Fill(venue="sim", symbol="ABCUSDT", client_order_id=cid, trade_id=f"t{self.trades}",
                    side=self.params.side, price=self.ledger.children[cid].price, qty=qty, fee=D(0),
                    fee_asset="USDT", is_maker=False)
        done = self.filled[cid] >= self.qty[cid]
        if done:
            self.final[cid] = True
        status = OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED
        # the fill message and the order update race each other
        if order == 0:
            self._deliver(fill)
            self._update(cid, status)
        elif order == 1:
            self._update(cid, status)
            self._deliver(fill)
        else:
            self._update(cid, status)
            self.deferred.append(fill)

    def _deliver(self, fill):
        self.ledger.apply_fill(fill, self.now)
        self.delivered.append(fill)

    def _close(self, cid, status):
        self.final[cid] = True
        self._update(cid, status)

    # --- one adversarial event ------------------------------------------------------------
    def event(self, op, pick, amount):
        open_at_venue = [c for c in self.qty if self.exists[c] and not self.final[c]]
        in_doubt = [c for c in self.qty if not self.final[c] and self.ledger.children[c].status in
                    (OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN)]
        target = open_at_venue[pick % len(open_at_venue)] if open_at_venue else None
        if op == "tick":
            self.now += amount * 120.0
            self.mid = INST.round_price(self.mid * (1 + D(repr(round(amount - 0.5, 3))) / 100))
            self.volume += D(repr(round(amount * 5, 3)))
        elif op == "ack" and target:
            if self.ledger.children[target].status in (OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN):
                self._update(target, OrderStatus.NEW)
        elif op in ("fill", "fill_all") and target:
            left = self.qty[target] - self.filled[target]
            qty = left if op == "fill_all" else max(INST.round_qty(left * D(repr(round(amount, 3)))), STEP)
            self._fill(target, min(qty, left), pick % 3)
        elif op == "reject" and in_doubt:
            cid = in_doubt[pick % len(in_doubt)]
            if self.filled[cid] == 0:
                self.exists[cid] = False
                self._close(cid, OrderStatus.REJECTED)
        elif op == "deny" and in_doubt:
            cid = in_doubt[pick % len(in_doubt)]
            if self.filled[cid] == 0 and self.ledger.children[cid].status is OrderStatus.PENDING_NEW:
                self.exists[cid] = False
                self.final[cid] = True
                self.ledger.denied(cid, "MAX_OPEN_ORDERS", self.now)
        elif op == "unknown" and in_doubt:
            cid = in_doubt[pick % len(in_doubt)]
            self.exists[cid] = amount > 0.3  # maybe it reached the engine, maybe not
            self.ledger.outcome_unknown(cid, self.now)
        elif op == "resolve" and in_doubt:
            cid = in_doubt[pick % len(in_doubt)]
            if not self.exists[cid]:
                self._close(cid, OrderStatus.EXPIRED)  # the query says: no such order
            else:
                self._update(cid, OrderStatus.NEW)
        elif op == "cancelled":
            for cid in list(self.qty):
                if not self.final[cid] and self.ledger.children[cid].cancel_requested and self.exists[cid]:
                    self._close(cid, OrderStatus.CANCELED)
                    break
        elif op == "expire" and target:
            if self.ledger.children[target].time_in_force is TimeInForce.IOC:
                self._close(target, OrderStatus.EXPIRED)
        elif op == "deliver" and self.deferred:
            self._deliver(self.deferred.pop(pick % len(self.deferred)))
        elif op == "duplicate" and self.delivered:
            self.ledger.apply_fill(self.delivered[pick % len(self.delivered)], self.now)

    def decide_and_act(self):
        market = MarketState(bid=self.mid, ask=self.mid + INST.tick_size, volume=self.volume)
        decision = self.algo.decide(self.now, market, self.ledger.view())
        for place in decision.place:
            assert place.quantity > 0 and place.quantity % STEP == 0
            assert place.price % INST.tick_size == 0
            INST.check(place.quantity, place.price)
            if self.params.limit_price is not None:
                assert (place.price <= self.params.limit_price if self.params.side is Side.BUY
                        else place.price >= self.params.limit_price)
            intent = self.ledger.open(place, self.now)
            cid = intent.client_order_id
            self.qty[cid], self.filled[cid], self.final[cid], self.exists[cid] = place.quantity, D(0), False, True
            if place.order_type is OrderType.LIMIT_MAKER:
                assert place.time_in_force is None
        for cancel in decision.cancel:
            self.ledger.cancel_sent(cancel.client_order_id, self.now)
        return decision

    def could_fill(self):
        """At the venue: filled so far plus everything that could still fill."""
        done = sum(self.filled.values(), D(0))
        open_rest = sum((self.qty[c] - self.filled[c] for c in self.qty if self.exists[c] and not self.final[c]),
                        D(0))
        return done + open_rest


@given(
    params=executions(),
    events=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.floats(0.0, 1.0)), min_size=20,
                    max_size=80),
)
def test_no_overfill_whatever_the_venue_does(params, events):
    venue = Adversary(params)
    total = params.quantity
    venue.decide_and_act()
    for op, pick, amount in events:
        venue.event(op, pick, amount)
        decision = venue.decide_and_act()
        assert venue.could_fill() <= total
        assert venue.ledger.filled <= sum(venue.filled.values(), D(0))  # never counts a phantom fill
        if decision.finished:
            assert not venue.ledger.view().live
    while venue.deferred:
        venue.event("deliver", 0, 0.0)
    assert sum(venue.filled.values(), D(0)) <= total
    assert venue.ledger.filled == sum(venue.filled.values(), D(0))
