"""VWAP: trade in step with the market's volume over the horizon.

The plan wants total x u(t) filled or working, where u is the share of the
horizon's market volume expected to have traded by t. u comes from a volume
profile (relative volume in equal buckets of the horizon, piecewise linear
inside a bucket). With a forecast of the horizon's volume (`expected_volume`)
u follows what is actually observed:

    u(t) = V(t) / (V(t) + E * (1 - U(t)))

where V(t) is the volume observed since the start, E the forecast and U the
profile's share: a busier market than forecast pulls the schedule forward, a
quiet one holds it back, and u still reaches 1 at the end. Children are
released every `interval` seconds, each at least half an average step (so a
target that moves with every trade does not send crumbs); a participation cap keeps our filled and
working quantity within `max_participation` of the volume seen so far.

Profiles come from an intraday curve (`profile_from_intraday`) or are learned
from trades observed earlier (`learn_intraday_profile`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from decimal import Decimal

from actors.algos.engine import Algorithm, Exposure, Plan, quantize_fraction, slices_behind
from actors.algos.params import ExecutionParams, VwapParams
from actors.algos.state import MarketState, OrderView

DEFAULT_STEPS = 60
DAY = 86_400.0


class Vwap(Algorithm):
    kind = "vwap"

    def __init__(self, params: ExecutionParams) -> None:
        super().__init__(params)
        assert isinstance(params.algo, VwapParams)
        self.vwap = params.algo
        horizon = params.horizon
        assert horizon is not None
        self.horizon = horizon
        weights = self.vwap.profile or (1.0,)
        total = sum(weights)
        cumulative = [0.0]
        for w in weights:
            cumulative.append(cumulative[-1] + w / total)
        cumulative[-1] = 1.0
        self.cumulative = tuple(cumulative)
        self.interval = self.vwap.interval or horizon / DEFAULT_STEPS
        self.steps = max(1, math.ceil(horizon / self.interval - 1e-9))

    def profile_share(self, t: float) -> float:
        """U(t): the profile's share of the horizon's volume traded by `t`."""
        x = (t - self.params.start) / self.horizon
        if x <= 0:
            return 0.0
        if x >= 1:
            return 1.0
        buckets = len(self.cumulative) - 1
        pos = x * buckets
        i = min(int(pos), buckets - 1)
        lo, hi = self.cumulative[i], self.cumulative[i + 1]
        return lo + (hi - lo) * (pos - i)

    def volume_share(self, t: float, volume: Decimal) -> float:
        """u(t): the share of the parent due by `t` given the volume observed so far."""
        share = self.profile_share(t)
        expected = self.vwap.expected_volume
        if expected is None or share >= 1.0:
            return share
        seen = float(volume)
        denominator = seen + float(expected) * (1.0 - share)
        return seen / denominator if denominator > 0 else 0.0

    def schedule_fraction(self, now: float, market: MarketState) -> float | None:
        return self.volume_share(now, market.volume)

    def plan(self, now: float, market: MarketState, orders: OrderView, exposure: Exposure) -> Plan:
        p = self.params
        end = p.end_time
        assert end is not None
        step = min(int((now - p.start) / self.interval) + 1, self.steps)
        release = min(p.start + step * self.interval, end)
        share = self.volume_share(release, market.volume)
        target = p.total if share >= 1.0 else p.total * quantize_fraction(share)
        step_units = p.total / self.steps
        cap = target + step_units * Decimal(repr(self.vwap.run_ahead))
        note = f"step {step}/{self.steps}, {share:.1%} of the volume curve"
        if self.vwap.max_participation is not None:
            rate = self.vwap.max_participation
            others = market.others_volume(orders.filled)
            own_cap = others * Decimal(repr(rate / (1.0 - rate)))
            mid = market.mid
            assert mid is not None
            participation_cap = self.from_base(own_cap, mid)
            if participation_cap < cap:
                cap = participation_cap
                if cap < target:
                    note += f", held to {rate:.1%} participation"
        return Plan(
            target=target,
            cap=cap,
            style=p.child_style,
            wake_at=release if step < self.steps else None,
            note=note,
            behind=slices_behind(target, exposure.filled, step_units),
            max_working=step_units * Decimal(repr(self.vwap.catch_up)),
            min_child_units=step_units / 2,
        )


# ---------------------------------------------------------------------------------------
# Volume profiles
# ---------------------------------------------------------------------------------------


def profile_from_intraday(
    intraday: Sequence[float], start_utc: float, duration: float, buckets: int = 24
) -> tuple[float, ...]:
    """Map an intraday volume curve onto an execution's horizon.

    `intraday` holds relative volume for equal parts of the UTC day (24
    hourly values, 96 quarter-hours, ...). `start_utc` is the execution's
    start in wall-clock seconds since the epoch: the only place wall-clock
    time enters, at the edge. Returns `buckets` weights for equal parts of
    the horizon, each the curve's volume over that part.
    """
    if not intraday or any(not math.isfinite(w) or w < 0 for w in intraday) or sum(intraday) <= 0:
        raise ValueError("the intraday profile needs non-negative weights with a positive sum")
    if duration <= 0 or buckets < 1:
        raise ValueError("duration must be positive and buckets at least 1")
    bin_len = DAY / len(intraday)
    # cumulative volume of the curve from midnight, for any number of days
    edges = [0.0]
    for w in intraday:
        edges.append(edges[-1] + w)
    per_day = edges[-1]

    def cumulative(t: float) -> float:
        days, rest = divmod(t, DAY)
        i = min(int(rest // bin_len), len(intraday) - 1)
        return days * per_day + edges[i] + intraday[i] * (rest - i * bin_len) / bin_len

    width = duration / buckets
    return tuple(cumulative(start_utc + (b + 1) * width) - cumulative(start_utc + b * width) for b in range(buckets))


def learn_intraday_profile(trades: Iterable[tuple[float, Decimal | float]], bins: int = 24) -> tuple[float, ...]:
    """Learn an intraday volume curve from trades observed before.

    `trades` are (wall-clock UTC seconds, base quantity); days are folded
    onto one, so a few days of a symbol's trades give its typical curve.
    Returns `bins` weights for equal parts of the UTC day.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    volume = [0.0] * bins
    bin_len = DAY / bins
    for ts, qty in trades:
        volume[min(int((ts % DAY) // bin_len), bins - 1)] += float(qty)
    if sum(volume) <= 0:
        raise ValueError("no volume observed; cannot learn a profile")
    return tuple(volume)

