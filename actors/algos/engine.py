"""The decision loop every algorithm shares.

An algorithm only says what it wants at this instant (a `Plan`: how much of
the parent should be working or done, how far it may run ahead, how to price
it). Everything that must be right for every algorithm lives here, once:

- no overfill: filled + every live child's remaining (in flight, working,
  being cancelled, UNKNOWN) never exceeds the parent;
- completion, end of horizon (stop, or finish by crossing), failure after
  repeated rejects, back-off after a reject;
- replacing resting children that went stale and cancelling any priced
  beyond the limit;
- escalating the child style when behind, per `Urgency`;
- rounding to the venue grid and folding dust (`children.ChildSizer`).

A decision depends only on the parameters and the arguments of `decide`, so
calling it again with the same inputs gives the same answer, and a restarted
scheduler picks up exactly where the last one was. The caller must record
the children it sends and the cancels it requests (a `ChildLedger` does)
before asking again; otherwise the same child would be asked for twice.
"""

from __future__ import annotations

import abc
import dataclasses
import random
from decimal import ROUND_DOWN, Decimal
from typing import ClassVar

from daemon.model import OrderStatus, Side
from actors.algos.children import ChildSizer, Priced, beyond_limit, price_child
from actors.algos.params import ChildStyle, ExecutionParams, Urgency, validate
from actors.algos.state import (
    CancelChild,
    Decision,
    Finish,
    LiveChild,
    MarketState,
    OrderView,
    PlaceChild,
)

ZERO = Decimal(0)
MAX_REJECT_BACKOFF = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What one algorithm wants at one instant, in the parent's units.

    target: how much should be filled or working by now.
    cap: never have more than this filled or working (run-ahead tolerance,
        participation cap); the engine also never exceeds the parent.
    style: the base style of new children (the engine may escalate it).
    behind: how far the fills lag the plan, in planned slices; drives escalation.
    max_working: how much may work at once (the catch-up bound), or None.
    max_live: how many children may be live at once, or None (the parameters').
    child_cap: the algorithm's own per-child limit in base units, or None.
    priced: a fixed price and type instead of the style's (Iceberg: at the limit).
    iceberg_qty: a native venue iceberg's visible size, or None.
    hold_until: send nothing before this time (Iceberg refill delay).
    min_child_units: the algorithm's preferred smallest child, or None; it
        keeps a target that moves with every trade from sending crumbs.
    """

    target: Decimal
    cap: Decimal
    style: ChildStyle
    wake_at: float | None = None
    note: str = ""
    behind: float = 0.0
    max_working: Decimal | None = None
    max_live: int | None = None
    child_cap: Decimal | None = None
    priced: Priced | None = None
    iceberg_qty: Decimal | None = None
    hold_until: float | None = None
    min_child_units: Decimal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Exposure:
    """How much of the parent is done or could still get done, in its units."""

    filled: Decimal
    working: Decimal
    total: Decimal

    @property
    def committed(self) -> Decimal:
        return self.filled + self.working

    @property
    def uncommitted(self) -> Decimal:
        return self.total - self.committed

    @property
    def unfilled(self) -> Decimal:
        return max(self.total - self.filled, ZERO)


def draw(seed: int, label: str, index: int) -> float:
    """A reproducible number in [-1, 1) for (seed, label, index).

    Keyed rather than sequential, so that a restarted scheduler draws the
    same jitter for slice 7 as the one that crashed, without saving any
    random state.
    """
    return random.Random(f"{seed}:{label}:{index}").uniform(-1.0, 1.0)


class Algorithm(abc.ABC):
    """The interface a scheduler drives: `decide` (and `schedule_fraction`).

    Subclasses implement `plan` and, when they have a schedule,
    `schedule_fraction`.
    """

    kind: ClassVar[str]

    def __init__(self, params: ExecutionParams) -> None:
        validate(params)
        self.params = params
        self.sizer = ChildSizer(params)

    # --- what subclasses say ---------------------------------------------------------
    @abc.abstractmethod
    def plan(self, now: float, market: MarketState, orders: OrderView, exposure: Exposure) -> Plan:
        """What this algorithm wants working at `now` (inside the horizon, with a quote)."""

    def schedule_fraction(self, now: float, market: MarketState) -> float | None:
        """The share of the parent the plan expects done by `now` (None: no schedule)."""
        return None

    # --- the shared loop ---------------------------------------------------------------
    def decide(self, now: float, market: MarketState, orders: OrderView) -> Decision:
        """What to change at `now`, given the market and our orders."""
        p = self.params
        exposure = self.exposure(orders, market)
        schedule = self.schedule_fraction(now, market)

        if exposure.filled >= exposure.total:
            return self._wind_down(orders, Finish.FILLED, ZERO, "the parent is filled", schedule)
        if not orders.live and self._only_dust_left(exposure, market):
            return Decision(
                finished=Finish.FILLED,
                residual=exposure.unfilled,
                note=f"done; {exposure.unfilled} left is below the venue minimum",
                schedule=schedule,
            )
        if orders.rejects_in_row >= p.max_rejects:
            note = f"{orders.rejects_in_row} children in a row were rejected; giving up"
            return self._wind_down(orders, Finish.FAILED, exposure.unfilled, note, schedule)
        if now < p.start:
            return Decision(wake_at=p.start, note="waiting for the start time", schedule=schedule)
        end = p.end_time
        if end is not None and now >= end:
            if p.finishes_at_end and now < end + p.end_overrun:
                return self._finish(now, market, orders, exposure, end + p.end_overrun, schedule)
            return self._wind_down(orders, Finish.ENDED, exposure.unfilled, "the end time has passed", schedule)
        if not market.has_quote:
            return Decision(wake_at=end, note="waiting for a quote", schedule=schedule)

        plan = self.plan(now, market, orders, exposure)
        style = _escalate(plan.style, plan.behind, p.urgency)
        priced = plan.priced or price_child(p, style, market)
        assert priced is not None
        if not orders.live and self._is_dust(exposure.uncommitted, priced.price):
            # judged again at the price a child would really get: what is left cannot be sent
            return Decision(
                finished=Finish.FILLED,
                residual=exposure.unfilled,
                note=f"done; {exposure.unfilled} left is below the venue minimum at {priced.price}",
                schedule=schedule,
            )
        cancels, stale_wake = self._stale_children(now, orders, priced)
        places: list[PlaceChild] = []
        notes = [plan.note] if plan.note else []
        backoff_until = self._backoff_until(orders)
        wakes = [plan.wake_at, end, stale_wake]
        if backoff_until is not None and now < backoff_until:
            notes.append(f"backing off after {orders.rejects_in_row} rejects")
            wakes.append(backoff_until)
        elif plan.hold_until is not None and now < plan.hold_until:
            notes.append(f"next child at {plan.hold_until:.3f}")
            wakes.append(plan.hold_until)
        else:
            places, why = self._new_children(now, plan, priced, orders, exposure)
            if why:
                notes.append(why)
        return Decision(
            place=tuple(places),
            cancel=tuple(cancels),
            wake_at=_earliest(wakes, now),
            note="; ".join(notes),
            schedule=schedule,
        )

    def cancel_all(self, orders: OrderView, reason: str) -> Decision:
        """Cancel every live child (pause, operator cancel); nothing new is sent."""
        return Decision(cancel=tuple(_cancels(orders.live, reason)), note=reason)

    # --- accounting --------------------------------------------------------------------
    def exposure(self, orders: OrderView, market: MarketState) -> Exposure:
        p = self.params
        if not p.in_quote:
            working = sum((c.remaining for c in orders.live), ZERO)
            return Exposure(filled=orders.filled, working=working, total=p.total)
        working = sum((c.remaining * self._unit_price(c, market) for c in orders.live), ZERO)
        return Exposure(filled=orders.filled_quote, working=working, total=p.total)

    def _unit_price(self, child: LiveChild, market: MarketState) -> Decimal:
        """The most a live child can cost per unit (quote-amount parents)."""
        if child.price is not None:
            return child.price
        # A child without a price (never sent by us) is counted at the worst
        # price the collar allows.
        reference = market.ask if self.params.side is Side.BUY else market.bid
        if reference is None:
            reference = self.params.limit_price or ZERO
        return reference * (1 + Decimal(repr(self.params.collar_bps)) / 10_000)

    def to_base(self, units: Decimal, price: Decimal) -> Decimal:
        """Parent units to a base quantity at `price` (rounded down to the step)."""
        if units <= 0:
            return ZERO
        qty = units / price if self.params.in_quote else units
        return self.params.instrument.round_qty(qty)

    def from_base(self, qty: Decimal, price: Decimal) -> Decimal:
        return qty * price if self.params.in_quote else qty

    def _is_dust(self, units: Decimal, price: Decimal) -> bool:
        return self.to_base(units, price) < self.sizer.venue_min(price)

    def _only_dust_left(self, exposure: Exposure, market: MarketState) -> bool:
        price = market.mid or self.params.limit_price
        if price is None:
            # Without a price only the quantity rules can be judged.
            if self.params.in_quote:
                return False
            inst = self.params.instrument
            return exposure.unfilled < max(inst.min_qty, inst.step_size)
        return self._is_dust(exposure.unfilled, price)

    # --- the pieces of a decision ------------------------------------------------------
    def _wind_down(
        self, orders: OrderView, finish: Finish, residual: Decimal, why: str, schedule: float | None
    ) -> Decision:
        live = [c for c in orders.live if finish is not Finish.FILLED or c.remaining > 0]
        if not live:
            return Decision(finished=finish, residual=residual, note=why, schedule=schedule)
        return Decision(
            cancel=tuple(_cancels(live, why)),
            note=f"{why}; waiting for {len(live)} children to close",
            schedule=schedule,
        )

    def _finish(
        self,
        now: float,
        market: MarketState,
        orders: OrderView,
        exposure: Exposure,
        deadline: float,
        schedule: float | None,
    ) -> Decision:
        """After the end time: clear resting children, then cross for the rest."""
        if orders.live:
            resting = [c for c in orders.live if not c.is_ioc]
            return Decision(
                cancel=tuple(_cancels(resting, "end time: finishing with crossing orders")),
                wake_at=deadline,
                note="end time: waiting for children to close before finishing",
                schedule=schedule,
            )
        priced = price_child(self.params, ChildStyle.CROSS, market)
        if priced is None:
            return Decision(wake_at=deadline, note="end time: waiting for a quote to finish", schedule=schedule)
        if priced.style is not ChildStyle.CROSS:
            return Decision(
                wake_at=deadline, note="end time: the limit price keeps the rest from crossing", schedule=schedule
            )
        backoff_until = self._backoff_until(orders)
        if backoff_until is not None and now < backoff_until:
            return Decision(wake_at=min(backoff_until, deadline), note="end time: backing off", schedule=schedule)
        plan = Plan(target=exposure.total, cap=exposure.total, style=ChildStyle.CROSS, note="finishing")
        places, why = self._new_children(now, plan, priced, orders, exposure)
        return Decision(
            place=tuple(places),
            wake_at=deadline,
            note="end time: finishing the rest" + (f"; {why}" if why else ""),
            schedule=schedule,
        )

    def _stale_children(self, now: float, orders: OrderView, priced: Priced) -> tuple[list[CancelChild], float | None]:
        """Cancel resting children priced beyond the limit, or off the wanted price for too long."""
        cancels: list[CancelChild] = []
        next_check: float | None = None
        for child in orders.live:
            if not child.acknowledged or child.is_ioc or child.price is None:
                continue
            if beyond_limit(self.params, child.price):
                cancels.append(CancelChild(client_order_id=child.client_order_id, reason="priced beyond the limit"))
                continue
            if child.price == priced.price:
                continue
            if child.style is not None and child.style.rank < priced.style.rank:
                reason = f"escalating to {priced.style.lower()}: behind the plan"
                cancels.append(CancelChild(client_order_id=child.client_order_id, reason=reason))
                continue
            due = child.placed_at + self.params.replace_after
            if now >= due:
                reason = f"stale: resting at {child.price}, wanted {priced.price} ({priced.style.lower()})"
                cancels.append(CancelChild(client_order_id=child.client_order_id, reason=reason))
            else:
                next_check = due if next_check is None else min(next_check, due)
        return cancels, next_check

    def _backoff_until(self, orders: OrderView) -> float | None:
        if orders.rejects_in_row <= 0 or orders.last_reject_at is None:
            return None
        delay = min(self.params.reject_backoff * 2 ** (orders.rejects_in_row - 1), MAX_REJECT_BACKOFF)
        return orders.last_reject_at + delay

    def _new_children(
        self, now: float, plan: Plan, priced: Priced, orders: OrderView, exposure: Exposure
    ) -> tuple[list[PlaceChild], str]:
        max_live = plan.max_live if plan.max_live is not None else self.params.max_live_children
        slots = max_live - len(orders.live)
        if slots <= 0:
            return [], ""
        ceiling = min(plan.cap, exposure.total)
        want_units = min(plan.target, ceiling) - exposure.committed
        allow_units = ceiling - exposure.committed
        if plan.max_working is not None:
            room = plan.max_working - exposure.working
            want_units = min(want_units, room)
            allow_units = min(allow_units, room)
        if want_units <= 0:
            return [], ""
        price = priced.price
        # Quantities are computed exactly, then rounded down to the step.
        sizes, why = self.sizer.split(
            want=self._to_base_exact(want_units, price),
            left=self.to_base(exposure.uncommitted, price),
            allow=self._to_base_exact(allow_units, price),
            price=price,
            slots=slots,
            cap=plan.child_cap,
            prefer=None if plan.min_child_units is None else self.to_base(plan.min_child_units, price),
        )
        reason = plan.note or priced.style.lower()
        places = [
            PlaceChild(
                quantity=qty,
                price=price,
                order_type=priced.order_type,
                time_in_force=priced.time_in_force,
                style=priced.style,
                reason=reason,
                iceberg_qty=self._iceberg_qty(plan, qty),
            )
            for qty in sizes
        ]
        return places, why

    def _to_base_exact(self, units: Decimal, price: Decimal) -> Decimal:
        if units <= 0:
            return ZERO
        return units / price if self.params.in_quote else units

    @staticmethod
    def _iceberg_qty(plan: Plan, qty: Decimal) -> Decimal | None:
        if plan.iceberg_qty is None or plan.iceberg_qty >= qty:
            return None
        return plan.iceberg_qty


def _cancels(children: list[LiveChild] | tuple[LiveChild, ...], reason: str) -> list[CancelChild]:
    return [
        CancelChild(client_order_id=c.client_order_id, reason=reason)
        for c in children
        if not c.cancel_requested and c.status is not OrderStatus.PENDING_CANCEL
    ]


def _escalate(style: ChildStyle, behind: float, urgency: Urgency) -> ChildStyle:
    """One notch more aggressive per the `Urgency` table, never less."""
    if urgency is Urgency.HIGH:
        notches = 2 if behind >= 2 else 1 if behind >= 1 else 0
    elif urgency is Urgency.MEDIUM:
        notches = 1 if behind >= 2 else 0
    else:
        notches = 0
    return style.escalated(notches)


def _earliest(times: list[float | None], now: float) -> float | None:
    future = [t for t in times if t is not None and t > now]
    return min(future) if future else None


def slices_behind(target: Decimal, filled: Decimal, slice_units: Decimal) -> float:
    """How many planned slices the fills lag `target`, the newest slice excepted."""
    if slice_units <= 0:
        return 0.0
    return max(float((target - filled) / slice_units) - 1.0, 0.0)


def quantize_fraction(value: float) -> Decimal:
    """A float share as a Decimal with enough digits for any venue step."""
    return Decimal(repr(value)).quantize(Decimal("1e-12"), rounding=ROUND_DOWN)
