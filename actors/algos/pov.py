"""POV: participate at a fixed share of the market's volume.

With `rate` our share of all volume since the start (ours included), the
target is rate / (1 - rate) times what others traded; our own fills print
publicly too, so they are taken out of the observed volume first. Children
are sized to the shortfall against that target, never leave our share above
rate * (1 + band) even if every working child fills at once, and escalate
(per `Urgency`) when our share drops below rate * (1 - band). Without an end
time the execution runs until the parent is done.
"""

from __future__ import annotations

from decimal import Decimal

from actors.algos.engine import Algorithm, Exposure, Plan
from actors.algos.params import ExecutionParams, PovParams
from actors.algos.state import MarketState, OrderView

MAX_RATE = 0.999


def own_for_others(rate: float, others: Decimal) -> Decimal:
    """Our volume that makes `rate` of the total when others traded `others`."""
    return others * Decimal(repr(rate / (1.0 - rate)))


class Pov(Algorithm):
    kind = "pov"

    def __init__(self, params: ExecutionParams) -> None:
        super().__init__(params)
        assert isinstance(params.algo, PovParams)
        self.pov = params.algo
        self.high_rate = min(self.pov.rate * (1 + self.pov.band), MAX_RATE)
        self.low_rate = self.pov.rate * (1 - self.pov.band)

    def schedule_fraction(self, now: float, market: MarketState) -> float | None:
        if self.params.in_quote:
            mid = market.mid
            if mid is None:
                return None
            due = market.volume * mid * Decimal(repr(self.pov.rate))
        else:
            due = market.volume * Decimal(repr(self.pov.rate))
        return min(float(due / self.params.total), 1.0)

    def plan(self, now: float, market: MarketState, orders: OrderView, exposure: Exposure) -> Plan:
        p = self.params
        mid = market.mid
        assert mid is not None
        others = market.others_volume(orders.filled)
        target = own_for_others(self.pov.rate, others)
        ceiling = own_for_others(self.high_rate, others)
        floor = own_for_others(self.low_rate, others)
        behind = 0.0
        if orders.filled < floor:
            # Below the band is as urgent as two slices behind: MEDIUM goes one
            # notch more aggressive, HIGH crosses.
            width = max(target - floor, self.sizer.venue_min(mid))
            behind = 2.0 + float((floor - orders.filled) / width)
        return Plan(
            target=self.from_base(target, mid),
            cap=self.from_base(ceiling, mid),
            style=p.child_style,
            note=f"{self.pov.rate:.1%} of {others} traded by others",
            behind=behind,
        )
