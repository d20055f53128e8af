"""Iceberg: only a small tip works at the limit price at any time.

A tip of at most `display` rests at the limit; when it is done (filled, or
closed for any other reason) the next one follows `refill_delay` seconds
later. With `size_jitter` each tip is drawn between display * (1 - jitter)
and display, so the tip never shows more than `display`; with `time_jitter`
the refill delay varies by up to that share. Draws are keyed by the child's
sequence, so they are reproducible after a restart.

With `native`, the venue's own iceberg does the slicing: one order for the
rest (at most `max_parts` tips long) carrying `iceberg_qty = display`.
"""

from __future__ import annotations

from decimal import Decimal

from actors.algos.children import limit_priced
from actors.algos.engine import Algorithm, Exposure, Plan, draw
from actors.algos.params import ExecutionParams, IcebergParams
from actors.algos.state import MarketState, OrderView


class Iceberg(Algorithm):
    kind = "iceberg"

    def __init__(self, params: ExecutionParams) -> None:
        super().__init__(params)
        assert isinstance(params.algo, IcebergParams)
        self.iceberg = params.algo

    def tip_size(self, tip: int) -> Decimal:
        """The displayed size of tip number `tip` (0-based), on the step grid."""
        p, display = self.params, self.iceberg.display
        if not p.size_jitter:
            return display
        shrink = (draw(p.seed, "iceberg.display", tip) + 1.0) / 2.0 * p.size_jitter
        tip_qty = p.instrument.round_qty(display * (1 - Decimal(repr(shrink))))
        assert p.limit_price is not None
        return min(max(tip_qty, self.sizer.venue_min(p.limit_price)), display)

    def refill_delay(self, tip: int) -> float:
        p = self.params
        delay = self.iceberg.refill_delay
        if p.time_jitter:
            delay *= 1.0 + draw(p.seed, "iceberg.refill", tip) * p.time_jitter
        return delay

    def plan(self, now: float, market: MarketState, orders: OrderView, exposure: Exposure) -> Plan:
        p = self.params
        total = exposure.total
        if self.iceberg.native:
            return Plan(
                target=total,
                cap=total,
                style=p.child_style,
                note="native iceberg",
                max_live=1,
                child_cap=self.iceberg.display * self.iceberg.max_parts,
                priced=limit_priced(p),
                iceberg_qty=self.iceberg.display,
            )
        hold = None
        if orders.sent and orders.last_closed_at is not None:
            hold = orders.last_closed_at + self.refill_delay(orders.sent)
        return Plan(
            target=total,
            cap=total,
            style=p.child_style,
            note=f"tip {orders.sent + 1}",
            max_live=1,
            child_cap=self.tip_size(orders.sent),
            priced=limit_priced(p),
            hold_until=hold,
        )
