"""What `tradectl risk` shows: every limit with its current usage, the breakers, the state.

The snapshot is plain data (msgspec Structs of strings, numbers and Decimals)
so the control server can encode it to JSON as is. Each limit row carries the
dotted key that `tradectl risk set` accepts, so what an operator reads is what
they can change.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from actors.risk_breakers import DAILY_LOSS, DRAWDOWN, REJECTS, STALE_DATA, SUPERVISOR, VAR, VENUE_DOWN
from actors.risk_exposure import instrument_name
from daemon.model import Side, TradingState

if TYPE_CHECKING:
    from actors.risk_checks import RiskSentinel


class LimitUsage(msgspec.Struct, frozen=True, kw_only=True):
    """One limit: `key` for `risk set`, `scope` the instrument it applies to ("" = all)."""

    key: str
    limit: Decimal | None
    usage: Decimal | None = None
    scope: str = ""


class BreakerView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    enabled: bool
    limit: Decimal | None = None
    value: Decimal | None = None
    action: str = ""
    latched: bool = False
    latched_venues: list[str] = []
    detail: str = ""


class TripView(msgspec.Struct, frozen=True, kw_only=True):
    breaker: str
    action: TradingState
    detail: str
    age_seconds: float
    venue: str | None = None
    kill: bool = False


class VenueRisk(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    state: TradingState
    order_entry: str
    feed: str
    last_quote_age: float | None = None


class PositionRisk(msgspec.Struct, frozen=True, kw_only=True):
    instrument: str
    position: Decimal
    working_buy: Decimal
    working_sell: Decimal
    worst_case: Decimal
    mark: Decimal | None
    exposure: Decimal | None
    open_orders: int


class RiskSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    state: TradingState
    venues: list[VenueRisk]
    trips: list[TripView]
    limits: list[LimitUsage]
    breakers: list[BreakerView]
    positions: list[PositionRisk]
    open_orders: int
    gross_exposure: Decimal
    unpriced: list[str]
    approvals: int
    denials: dict[str, int]


def _dec(value: float | int | Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def build_snapshot(sentinel: RiskSentinel, now: float) -> RiskSnapshot:
    limits = sentinel.limits
    book = sentinel.book
    states = sentinel.states
    gross, unpriced = book.gross_exposure()

    positions: list[PositionRisk] = []
    per_instrument: list[LimitUsage] = []
    for key in sorted(book.exposed_keys()):
        name = instrument_name(key)
        worst = book.worst_case(key)
        mark = book.mark(key)
        open_count = book.open_order_count(key)
        positions.append(
            PositionRisk(
                instrument=name,
                position=book.position(key),
                working_buy=book.pending(key, Side.BUY),
                working_sell=book.pending(key, Side.SELL),
                worst_case=worst,
                mark=mark,
                exposure=None if mark is None else worst * mark,
                open_orders=open_count,
            )
        )
        override = limits.instruments.get(name)
        pos_key = f"instruments.{name}.max_position" if override and override.max_position is not None else "max_position"
        per_instrument.append(LimitUsage(key=pos_key, limit=limits.position_limit(*key), usage=worst, scope=name))
        oo_key = (
            f"instruments.{name}.max_open_orders"
            if override and override.max_open_orders is not None
            else "max_open_orders_per_instrument"
        )
        per_instrument.append(
            LimitUsage(key=oo_key, limit=_dec(limits.open_orders_limit(*key)), usage=Decimal(open_count), scope=name)
        )

    rows = [
        LimitUsage(key="max_order_qty", limit=limits.max_order_qty),
        LimitUsage(key="max_order_notional", limit=limits.max_order_notional),
        LimitUsage(key="price_collar_bps", limit=limits.price_collar_bps),
        LimitUsage(key="max_gross_exposure", limit=limits.max_gross_exposure, usage=gross),
        LimitUsage(
            key="max_orders_per_second",
            limit=_dec(limits.max_orders_per_second),
            usage=Decimal(book.submits_within(now, 1.0)),
        ),
        LimitUsage(
            key="max_orders_per_minute",
            limit=_dec(limits.max_orders_per_minute),
            usage=Decimal(book.submits_within(now, 60.0)),
        ),
        LimitUsage(key="max_open_orders", limit=_dec(limits.max_open_orders), usage=Decimal(book.open_order_count())),
        LimitUsage(key="stale_quote_seconds", limit=_dec(limits.stale_quote_seconds)),
    ]
    for name, override in sorted(limits.instruments.items()):
        for field in ("max_order_qty", "max_order_notional"):
            value = getattr(override, field)
            if value is not None:
                rows.append(LimitUsage(key=f"instruments.{name}.{field}", limit=value, scope=name))
    rows += per_instrument

    return RiskSnapshot(
        state=states.state,
        venues=_venues(sentinel, now),
        trips=[
            TripView(
                breaker=t.breaker,
                action=t.action,
                detail=t.detail,
                age_seconds=max(0.0, now - t.at),
                venue=t.venue,
                kill=t.kill,
            )
            for t in states.trips
        ],
        limits=rows,
        breakers=_breakers(sentinel, now),
        positions=positions,
        open_orders=book.open_order_count(),
        gross_exposure=gross,
        unpriced=[instrument_name(k) for k in unpriced],
        approvals=sentinel.approvals,
        denials=dict(sentinel.denials),
    )


def _venues(sentinel: RiskSentinel, now: float) -> list[VenueRisk]:
    book = sentinel.book
    names = set(sentinel.venue_status) | set(sentinel.feed_status) | set(book.venue_last_quote)
    names |= set(sentinel.states.venue_states) | {k[0] for k in book.instruments}
    return [
        VenueRisk(
            venue=v,
            state=sentinel.states.state_for(v),
            order_entry=sentinel.venue_status.get(v, "unknown"),
            feed=sentinel.feed_status.get(v, "unknown"),
            last_quote_age=None if v not in book.venue_last_quote else max(0.0, now - book.venue_last_quote[v]),
        )
        for v in sorted(names)
    ]


def _breakers(sentinel: RiskSentinel, now: float) -> list[BreakerView]:
    limits = sentinel.limits
    eq = sentinel.equity
    states = sentinel.states

    def latched_venues(name: str) -> list[str]:
        return sorted(t.venue for t in states.trips if t.breaker == name and t.venue is not None)

    var_cfg = limits.var
    historical = eq.var(limits, "historical")
    parametric = eq.var(limits, "parametric")
    var_value = historical if var_cfg.method == "historical" else parametric
    var_detail = (
        f"{var_cfg.method} at {var_cfg.level:g} over {max(eq.sample_count - 1, 0)} returns "
        f"(min {var_cfg.min_samples}); historical {_fmt(historical)}, parametric {_fmt(parametric)}"
    )
    return [
        BreakerView(
            name=DAILY_LOSS,
            enabled=limits.daily_loss.enabled,
            limit=limits.daily_loss.limit,
            value=eq.daily_loss,
            action=limits.daily_loss.action,
            latched=states.is_latched(DAILY_LOSS),
            detail=(
                f"reference equity {_or_none(eq.day_start_equity)} (day start or last resume); "
                f"days start {limits.day_start_hour_utc:02d}:00 UTC"
            ),
        ),
        BreakerView(
            name=DRAWDOWN,
            enabled=limits.drawdown.enabled,
            limit=limits.drawdown.limit,
            value=eq.drawdown,
            action=limits.drawdown.action,
            latched=states.is_latched(DRAWDOWN),
            detail=f"peak equity {_or_none(eq.peak)} (since start or last resume)",
        ),
        BreakerView(
            name=VAR,
            enabled=var_cfg.enabled,
            limit=var_cfg.limit,
            value=_dec(var_value),
            action=var_cfg.action,
            latched=states.is_latched(VAR),
            detail=var_detail,
        ),
        BreakerView(
            name=REJECTS,
            enabled=limits.rejects.enabled,
            limit=Decimal(limits.rejects.max_rejects),
            value=Decimal(sentinel.rejects.count(now, limits)),
            action=limits.rejects.action,
            latched=states.is_latched(REJECTS),
            detail=f"venue rejects in the last {limits.rejects.window_seconds:g} s",
        ),
        BreakerView(
            name=STALE_DATA,
            enabled=limits.stale_data.enabled,
            limit=_dec(limits.stale_data.after_seconds),
            action="reduce venue",
            latched_venues=latched_venues(STALE_DATA),
            latched=bool(latched_venues(STALE_DATA)),
            detail="seconds without a quote from a venue, or its feed reported stale/down",
        ),
        BreakerView(
            name=VENUE_DOWN,
            enabled=limits.venue_down.enabled,
            action="reduce venue",
            latched_venues=latched_venues(VENUE_DOWN),
            latched=bool(latched_venues(VENUE_DOWN)),
            detail="order entry reported down or banned",
        ),
        BreakerView(
            name=SUPERVISOR,
            enabled=limits.supervisor.enabled,
            action="kill",
            latched=states.is_latched(SUPERVISOR),
            detail="a supervisor gave up on a core actor",
        ),
    ]


def _or_none(value: Decimal | None) -> str:
    return "not yet known" if value is None else str(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4%}"
