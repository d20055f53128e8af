"""TWAP: the parent released in equal slices over the horizon.

Slice i is released at start + i * interval, so the last one has a whole
interval to work before the end time. The schedule is cumulative: by slice k
the plan wants k/N of the parent filled or working, so whatever rounding or a
rejected child left over is carried into the next slice, and the last slice
takes everything that remains. Behind schedule, at most `catch_up` planned
slices work at once; ahead of it, a child may only overshoot by `run_ahead`
of a slice (when the minimum child size forces rounding up).

Randomisation (seeded, reproducible): `time_jitter` moves each slice time by
up to that share of an interval, `size_jitter` moves each cumulative target
by up to that share of a slice; the first slice still starts at the start
time and the last still completes the parent.
"""

from __future__ import annotations

import bisect
import math
from decimal import Decimal

from actors.algos.engine import Algorithm, Exposure, Plan, draw, quantize_fraction, slices_behind
from actors.algos.params import ExecutionParams, TwapParams
from actors.algos.state import MarketState, OrderView

DEFAULT_INTERVAL = 60.0


class Twap(Algorithm):
    kind = "twap"

    def __init__(self, params: ExecutionParams) -> None:
        super().__init__(params)
        assert isinstance(params.algo, TwapParams)
        self.twap = params.algo
        horizon = params.horizon
        assert horizon is not None
        if self.twap.slices is not None:
            self.slices = self.twap.slices
            self.interval = horizon / self.slices
        elif self.twap.interval is not None:
            self.interval = self.twap.interval
            self.slices = max(1, math.floor(horizon / self.interval + 1e-9))
        else:
            self.slices = max(1, math.ceil(horizon / DEFAULT_INTERVAL - 1e-9))
            self.interval = horizon / self.slices
        self.slice_times = self._times()
        self.fractions = self._fractions()

    def _times(self) -> tuple[float, ...]:
        p = self.params
        times = [p.start]
        for i in range(1, self.slices):
            shift = draw(p.seed, "twap.time", i) * p.time_jitter if p.time_jitter else 0.0
            times.append(p.start + (i + shift) * self.interval)
        return tuple(times)

    def _fractions(self) -> tuple[Decimal, ...]:
        """Cumulative share of the parent released by each slice (the last is exactly 1)."""
        p, n = self.params, self.slices
        out = []
        for i in range(n - 1):
            if p.size_jitter:
                out.append(quantize_fraction((i + 1 + draw(p.seed, "twap.size", i) * p.size_jitter) / n))
            else:
                out.append(Decimal(i + 1) / Decimal(n))
        out.append(Decimal(1))
        return tuple(out)

    @property
    def slice_units(self) -> Decimal:
        return self.params.total / self.slices

    def released(self, now: float) -> int:
        """How many slices are released at `now`."""
        return bisect.bisect_right(self.slice_times, now)

    def target_at(self, now: float) -> Decimal:
        """What should be filled or working at `now`, in the parent's units."""
        k = self.released(now)
        return self.params.total * self.fractions[k - 1] if k else Decimal(0)

    def schedule_fraction(self, now: float, market: MarketState) -> float | None:
        horizon = self.params.horizon
        assert horizon is not None
        return min(max((now - self.params.start) / horizon, 0.0), 1.0)

    def plan(self, now: float, market: MarketState, orders: OrderView, exposure: Exposure) -> Plan:
        k = self.released(now)
        target = self.target_at(now)
        slice_units = self.slice_units
        return Plan(
            target=target,
            cap=target + slice_units * Decimal(repr(self.twap.run_ahead)),
            style=self.params.child_style,
            wake_at=self.slice_times[k] if k < self.slices else None,
            note=f"slice {k}/{self.slices}",
            behind=slices_behind(target, exposure.filled, slice_units),
            max_working=slice_units * Decimal(repr(self.twap.catch_up)),
        )
