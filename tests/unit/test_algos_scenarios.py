"""Whole executions against a toy venue: time is stepped, fills follow a simple model.

The toy venue is deliberately small: a random-walk mid with a one-tick
spread, exogenous market volume along a curve, crossing orders filled at the
far touch, resting orders at the touch filled by a share of each step's
volume. It talks to the algorithm the way a scheduler will: through a
`ChildLedger`, with OrderUpdate and Fill messages.
"""

import math
import random
from decimal import Decimal as D

import pytest

from actors.algos import (
    ChildLedger,
    ChildStyle,
    ExecutionParams,
    Finish,
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

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("5"))


class ToyVenue:
    def __init__(self, params, *, seed=1, mid=60000.0, sigma=2.0, volume=0.02, passive_share=0.3,
                 curve=lambda x: 1.0, step=1.0):
        self.params = params
        self.algo = make_algorithm(params)
        self.ledger = ChildLedger("t1", params)
        self.rng = random.Random(seed)
        self.mid, self.sigma, self.volume, self.passive_share = mid, sigma, volume, D(repr(passive_share))
        self.curve, self.step = curve, step
        self.now = params.start
        self.truth = {}  # client order id -> [quantity, filled, final]
        self.others = D(0)
        self.own = D(0)
        self.trades = 0
        self.placed = []  # (time, PlaceChild)
        self.history = []  # (time, own, others)
        self.decision = None

    @property
    def bid(self):
        return BTC.round_price(D(repr(self.mid)), Side.BUY)

    @property
    def ask(self):
        return self.bid + BTC.tick_size

    def market(self):
        return MarketState(bid=self.bid, ask=self.ask, volume=self.others + self.own)

    def _update(self, cid, status):
        qty, filled, _ = self.truth[cid]
        self.ledger.apply_update(OrderUpdate(venue="sim", symbol="BTCUSDT", client_order_id=cid, status=status,
                                             side=self.params.side, quantity=qty, filled_qty=filled), self.now)

    def _fill(self, cid, qty, price, maker):
        truth = self.truth[cid]
        truth[1] += qty
        self.own += qty
        self.trades += 1
        self.ledger.apply_fill(Fill(venue="sim", symbol="BTCUSDT", client_order_id=cid, trade_id=str(self.trades),
                                    side=self.params.side, price=price, qty=qty, fee=D(0), fee_asset="USDT",
                                    is_maker=maker), self.now)
        truth[2] = truth[1] >= truth[0]
        self._update(cid, OrderStatus.FILLED if truth[2] else OrderStatus.PARTIALLY_FILLED)

    def _close(self, cid, status):
        self.truth[cid][2] = True
        self._update(cid, status)

    def _match(self, flow):
        buy = self.params.side is Side.BUY
        far, near = (self.ask, self.bid) if buy else (self.bid, self.ask)
        for child in self.ledger.live():
            cid = child.client_order_id
            qty, filled, _ = self.truth[cid]
            if child.cancel_requested:
                self._close(cid, OrderStatus.CANCELED)
                continue
            marketable = child.price >= far if buy else child.price <= far
            if child.status is OrderStatus.PENDING_NEW:
                if child.order_type is OrderType.LIMIT_MAKER and marketable:
                    self._close(cid, OrderStatus.REJECTED)
                    continue
                self._update(cid, OrderStatus.NEW)
                if marketable:
                    self._fill(cid, qty - filled, far, maker=False)
                    continue
                if child.time_in_force is TimeInForce.IOC:
                    self._close(cid, OrderStatus.EXPIRED)
                    continue
            at_touch = child.price >= near if buy else child.price <= near
            if at_touch and flow > 0:
                take = BTC.round_qty(min(qty - filled, flow * self.passive_share))
                if take > 0:
                    self._fill(cid, take, child.price, maker=True)

    def run(self, until, check=None):
        horizon = self.params.horizon or 1.0
        while self.now < until:
            self.now += self.step
            self.mid += self.rng.gauss(0.0, self.sigma)
            x = min(max((self.now - self.params.start) / horizon, 0.0), 1.0)
            flow = D(repr(round(self.volume * self.curve(x) * self.rng.uniform(0.5, 1.5), 5)))
            self.others += flow
            self._match(flow)
            for _ in range(5):  # a scheduler asks again after acting
                decision = self.algo.decide(self.now, self.market(), self.ledger.view())
                self.decision = decision
                for place in decision.place:
                    intent = self.ledger.open(place, self.now)
                    self.truth[intent.client_order_id] = [place.quantity, D(0), False]
                    self.placed.append((self.now, place))
                for cancel in decision.cancel:
                    self.ledger.cancel_sent(cancel.client_order_id, self.now)
                if not decision.place and not decision.cancel:
                    break
                self._match(D(0))
            self.history.append((self.now, self.own, self.others))
            if check is not None:
                check(self)
            if decision.finished:
                break
        return self.decision

    def committed(self):
        view = self.ledger.view()
        return view.filled + sum((c.remaining for c in view.live), D(0))


def params(**overrides):
    fields = dict(instrument=BTC, side=Side.BUY, quantity=D("1"), duration=3600.0, algo=TwapParams(slices=60))
    fields.update(overrides)
    return ExecutionParams(**fields)


# --- TWAP ------------------------------------------------------------------------------------


def test_one_btc_twap_over_an_hour_fills_exactly_on_schedule():
    venue = ToyVenue(params(urgency=Urgency.HIGH), volume=0.01, passive_share=0.5, step=2.0)
    twap = venue.algo
    slice_qty = D(1) / 60
    worst_lag = D(0)

    def check(v):
        nonlocal worst_lag
        target = twap.target_at(v.now)
        assert v.committed() <= target + slice_qty / 2  # never ahead beyond the run-ahead tolerance
        linear = D(repr(min(v.now / 3600.0, 1.0)))
        worst_lag = max(worst_lag, linear - v.ledger.filled)

    decision = venue.run(3600.0 + 60.0, check)
    assert decision.finished is Finish.FILLED and venue.now <= 3600.0
    assert venue.ledger.filled == D("1") and sum(f.qty for f in venue.ledger.fills) == D("1")
    assert venue.own == D("1")
    # every slice went out when it was released (the step is 2 s)
    released = {min(t for t, _ in venue.placed if t >= slice_time) for slice_time in twap.slice_times}
    assert len(released) == 60 and all(t - s <= 2.0 for t, s in zip(sorted(released), twap.slice_times))
    assert worst_lag <= 3 * slice_qty  # the fills never lagged the straight line by more than 3 slices
    assert {p.style for _, p in venue.placed} == {ChildStyle.PASSIVE}  # never needed to cross


def test_crossing_twap_sends_one_child_per_slice_and_the_leftover_last():
    venue = ToyVenue(params(child_style=ChildStyle.CROSS), step=5.0)
    decision = venue.run(3700.0)
    assert decision.finished is Finish.FILLED
    sizes = [p.quantity for _, p in venue.placed]
    assert len(sizes) == 60 and sum(sizes) == D("1")
    assert all(abs(q - D(1) / 60) <= BTC.step_size for q in sizes)
    assert sizes[-1] == D(1) - D("0.98333")  # rounding leftovers land in the last slice
    assert [t for t, _ in venue.placed] == [max(5.0, 60.0 * i) for i in range(60)]  # on the first step of each slice


def test_twap_that_cannot_fill_stops_at_the_end_and_reports_the_rest():
    venue = ToyVenue(params(urgency=Urgency.MEDIUM), volume=0.0, sigma=0.0, step=10.0)  # nobody trades
    decision = venue.run(4000.0)
    assert decision.finished is Finish.ENDED and decision.residual == D("1")
    assert venue.ledger.view().live == ()


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_a_quote_amount_is_never_overcommitted(side):
    budget = D("30000")
    venue = ToyVenue(params(side=side, quantity=None, quote_amount=budget, child_style=ChildStyle.CROSS), step=10.0)

    def at_child_prices(v):
        return sum((c.filled * c.price + (c.quantity - c.filled) * c.price * (not c.is_final)
                    for c in v.ledger.children.values()), D(0))

    def check(v):
        view = v.ledger.view()
        if side is Side.BUY:  # a buy never pays more than its child's price: the budget holds for real
            assert view.filled_quote + sum((c.remaining * c.price for c in view.live), D(0)) <= budget
        else:  # a sell may get more than its child's price; counted at those prices, it fits the budget
            assert at_child_prices(v) <= budget

    decision = venue.run(3700.0, check)
    assert decision.finished is Finish.FILLED
    proceeds = venue.ledger.filled_quote
    assert budget - D("5") < proceeds  # at most dust below the venue minimum is left
    # a sell may fill above its price (never beyond the collar): that improvement is the only excess
    assert proceeds <= budget * (1 + D("0.002"))


# --- VWAP ------------------------------------------------------------------------------------


def u_shape(x):
    return 2.0 - 1.6 * math.sin(math.pi * x)


def u_shape_profile(buckets):
    # the integral of u_shape over each bucket
    edges = [math.cos(math.pi * i / buckets) for i in range(buckets + 1)]
    return tuple(2.0 / buckets - 1.6 / math.pi * (edges[i] - edges[i + 1]) for i in range(buckets))


def tracking_error(venue, total):
    market_total = venue.others
    return max(abs(float(own / total) - float(others / market_total)) for _, own, others in venue.history)


def test_vwap_tracks_the_volume_curve():
    venue = ToyVenue(params(algo=VwapParams(profile=u_shape_profile(12)), child_style=ChildStyle.CROSS),
                     curve=u_shape, volume=0.1, step=5.0, seed=3)
    decision = venue.run(3700.0)
    assert decision.finished is Finish.FILLED and venue.ledger.filled == D("1")
    assert tracking_error(venue, D(1)) < 0.05


def test_vwap_adapting_to_observed_volume_tracks_better_than_a_wrong_profile():
    def run(algo):
        venue = ToyVenue(params(algo=algo, child_style=ChildStyle.CROSS), curve=u_shape, volume=0.1, step=5.0, seed=3)
        venue.run(3700.0)
        assert venue.ledger.filled == D("1")
        return tracking_error(venue, D(1))

    flat = run(VwapParams())
    adaptive = run(VwapParams(expected_volume=D("68")))  # about what the toy market trades in the hour
    assert adaptive < flat - 0.02


def test_vwap_participation_cap_is_never_exceeded():
    venue = ToyVenue(params(algo=VwapParams(profile=u_shape_profile(12), max_participation=0.02),
                            child_style=ChildStyle.CROSS), curve=u_shape, volume=0.1, step=5.0, seed=3)

    def check(v):
        assert v.committed() <= (v.others) * D("0.02") / D("0.98") + BTC.step_size

    venue.run(3700.0, check)
    assert venue.ledger.filled > D("0.9")


# --- Iceberg ---------------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.0, 0.4])
def test_iceberg_never_shows_more_than_its_display(jitter):
    ice = params(quantity=D("0.3"), duration=None, limit_price=D("60000.00"), size_jitter=jitter, time_jitter=jitter,
                 seed=5, algo=IcebergParams(display=D("0.02"), refill_delay=3.0))
    venue = ToyVenue(ice, sigma=1.0, volume=0.02, passive_share=0.5, seed=2)
    shown = []

    def check(v):
        live = v.ledger.view().live
        assert len(live) <= 1
        shown.append(sum((c.remaining for c in live), D(0)))

    decision = venue.run(20000.0, check)
    assert decision.finished is Finish.FILLED and venue.ledger.filled == D("0.3")
    assert max(shown) <= D("0.02") and max(shown) > 0
    assert all(p.price == D("60000.00") for _, p in venue.placed)
    gaps = [b - a for (a, _), (b, _) in zip(venue.placed, venue.placed[1:])]
    assert min(gaps) >= 3.0 * (1 - jitter)  # refills wait for the delay


# --- POV -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "urgency"), [(ChildStyle.CROSS, Urgency.MEDIUM), (ChildStyle.PASSIVE, Urgency.HIGH)]
)
def test_pov_stays_within_its_participation_band(style, urgency):
    pov = params(quantity=D("0.5"), duration=None, child_style=style, urgency=urgency,
                 algo=PovParams(rate=0.1, band=0.2))
    venue = ToyVenue(pov, volume=0.02, passive_share=0.2, seed=4)
    decision = venue.run(5000.0)
    assert decision.finished is Finish.FILLED and venue.ledger.filled == D("0.5")
    shares = [float(own / (own + others)) for _, own, others in venue.history if others > D("0.5")]
    assert len(shares) > 100
    assert 0.08 <= min(shares) and max(shares) <= 0.12
