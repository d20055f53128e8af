"""How well an execution went: progress while it runs, a report when it ends.

Floats are fine here: these numbers are for people, not for venues.

Sign convention, everywhere: a positive cost or slippage is money lost,
for buys and sells alike. With s = +1 for a buy and -1 for a sell,
slippage against a benchmark B is s * (average price - B) / B in basis points.

Implementation shortfall (Perold) compares the execution with a paper
trade of the whole order at the decision price, and splits the difference:

    delay        s * filled * (arrival - decision)      the market moved before we started
    trading      s * sum q_j * (p_j - arrival)          what our fills cost against the arrival
    opportunity  s * unfilled * (end - decision)        what the part we did not get cost
    fees         explicit fees, in the quote currency

Each is also given in bps of the order's value at the decision price, and
the four add up to the total.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

import msgspec

from daemon.messages import Fill
from daemon.model import Instrument, Side
from actors.algos.ledger import ChildStats
from actors.algos.params import ExecutionParams
from actors.algos.state import OrderView

BPS = 10_000.0


def sign(side: Side) -> int:
    return 1 if side is Side.BUY else -1


def slippage_bps(side: Side, avg_price: float, benchmark: float) -> float:
    """Cost of trading at `avg_price` against `benchmark`, in bps (positive = cost)."""
    return sign(side) * (avg_price - benchmark) / benchmark * BPS


def average_price(fills: Iterable[Fill]) -> float | None:
    qty = notional = 0.0
    for f in fills:
        qty += float(f.qty)
        notional += float(f.qty) * float(f.price)
    return notional / qty if qty > 0 else None


class FeeTotal(msgspec.Struct, frozen=True, kw_only=True):
    """Fees in the quote currency, plus any that could not be converted."""

    quote: float = 0.0
    unpriced: dict[str, float] = {}


def fees_in_quote(
    fills: Iterable[Fill], instrument: Instrument, rates: Mapping[str, float] | None = None
) -> FeeTotal:
    """Sum fees in the quote currency.

    A fee in the quote asset counts as is, one in the base asset at the
    fill's price, any other asset (e.g. BNB) at `rates[asset]` (its price in
    the quote currency); assets without a rate are listed in `unpriced`
    rather than silently dropped.
    """
    quote = 0.0
    unpriced: dict[str, float] = {}
    for f in fills:
        fee = float(f.fee)
        if fee == 0:
            continue
        if f.fee_asset == instrument.quote:
            quote += fee
        elif f.fee_asset == instrument.base:
            quote += fee * float(f.price)
        elif rates is not None and f.fee_asset in rates:
            quote += fee * rates[f.fee_asset]
        else:
            unpriced[f.fee_asset] = unpriced.get(f.fee_asset, 0.0) + fee
    return FeeTotal(quote=quote, unpriced=unpriced)


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """A running execution at one instant.

    filled_pct and schedule_pct are shares of the parent in %;
    schedule_deviation_pct = filled_pct - schedule_pct (negative: behind).
    participation is our filled quantity over the market volume since the
    start (ours included).
    """

    filled: float
    filled_quote: float
    filled_pct: float
    avg_price: float | None
    schedule_pct: float | None
    schedule_deviation_pct: float | None
    slippage_bps: float | None
    participation: float | None
    elapsed: float
    children: ChildStats


def progress(
    *,
    params: ExecutionParams,
    orders: OrderView,
    fills: Sequence[Fill],
    children: ChildStats,
    now: float,
    arrival_mid: Decimal | None,
    market_volume: Decimal | None = None,
    schedule: float | None = None,
) -> Progress:
    """Progress of an execution; `schedule` is `Decision.schedule` (a share, 0..1)."""
    done = orders.filled_quote if params.in_quote else orders.filled
    filled_pct = float(done / params.total) * 100.0
    avg = average_price(fills)
    slip = None
    if avg is not None and arrival_mid is not None and arrival_mid > 0:
        slip = slippage_bps(params.side, avg, float(arrival_mid))
    participation = None
    if market_volume is not None and market_volume > 0:
        participation = float(orders.filled / market_volume)
    schedule_pct = None if schedule is None else schedule * 100.0
    return Progress(
        filled=float(orders.filled),
        filled_quote=float(orders.filled_quote),
        filled_pct=filled_pct,
        avg_price=avg,
        schedule_pct=schedule_pct,
        schedule_deviation_pct=None if schedule_pct is None else filled_pct - schedule_pct,
        slippage_bps=slip,
        participation=participation,
        elapsed=max(now - params.start, 0.0),
        children=children,
    )


# ---------------------------------------------------------------------------------------
# Implementation shortfall and the final report
# ---------------------------------------------------------------------------------------


class Shortfall(msgspec.Struct, frozen=True, kw_only=True):
    """Implementation shortfall in the quote currency and in bps of the order value."""

    delay: float
    trading: float
    opportunity: float
    fees: float
    total: float
    delay_bps: float
    trading_bps: float
    opportunity_bps: float
    fees_bps: float
    total_bps: float


def implementation_shortfall(
    *,
    side: Side,
    ordered: float,
    decision_price: float,
    arrival_price: float,
    end_price: float,
    fills: Iterable[tuple[float, float]],
    fees: float = 0.0,
) -> Shortfall:
    """Decompose the shortfall of an order of `ordered` (base units).

    `fills` are (quantity, price). `end_price` is the mid when the execution
    ended (it prices the unfilled part).
    """
    if ordered <= 0 or decision_price <= 0:
        raise ValueError("ordered quantity and decision price must be positive")
    s = sign(side)
    filled = 0.0
    trading = 0.0
    for qty, price in fills:
        filled += qty
        trading += s * qty * (price - arrival_price)
    delay = s * filled * (arrival_price - decision_price)
    opportunity = s * max(ordered - filled, 0.0) * (end_price - decision_price)
    total = delay + trading + opportunity + fees
    value = ordered * decision_price

    def bps(x: float) -> float:
        return x / value * BPS

    return Shortfall(
        delay=delay,
        trading=trading,
        opportunity=opportunity,
        fees=fees,
        total=total,
        delay_bps=bps(delay),
        trading_bps=bps(trading),
        opportunity_bps=bps(opportunity),
        fees_bps=bps(fees),
        total_bps=bps(total),
    )


class ExecutionReport(msgspec.Struct, frozen=True, kw_only=True):
    """The final word on an execution, for `exec show` and the journal."""

    algo: str
    venue: str
    symbol: str
    side: Side
    ordered: float
    filled: float
    filled_quote: float
    fill_rate: float
    avg_price: float | None
    decision_price: float
    arrival_mid: float
    end_mid: float
    slippage_bps: float | None
    market_vwap: float | None
    vwap_slippage_bps: float | None
    participation: float | None
    started_at: float
    ended_at: float
    duration: float
    shortfall: Shortfall
    unpriced_fees: dict[str, float]
    children: ChildStats
    finish: str | None = None


def final_report(
    *,
    params: ExecutionParams,
    fills: Sequence[Fill],
    children: ChildStats,
    decision_price: Decimal,
    arrival_mid: Decimal,
    end_mid: Decimal,
    started_at: float,
    ended_at: float,
    market_volume: Decimal | None = None,
    market_vwap: Decimal | None = None,
    fee_rates: Mapping[str, float] | None = None,
    finish: str | None = None,
) -> ExecutionReport:
    """The report at the end of an execution.

    decision_price: the mid when the operator submitted; arrival_mid: when
    the execution started working; end_mid: when it ended. A quote-amount
    parent is measured as the base quantity it was worth at the decision
    price. `market_vwap` (the market's VWAP over the execution window) adds a
    VWAP benchmark.
    """
    decision = float(decision_price)
    ordered = float(params.quantity) if params.quantity is not None else float(params.total) / decision
    filled = sum(float(f.qty) for f in fills)
    filled_quote = sum(float(f.qty) * float(f.price) for f in fills)
    avg = filled_quote / filled if filled > 0 else None
    fees = fees_in_quote(fills, params.instrument, fee_rates)
    shortfall = implementation_shortfall(
        side=params.side,
        ordered=ordered,
        decision_price=decision,
        arrival_price=float(arrival_mid),
        end_price=float(end_mid),
        fills=[(float(f.qty), float(f.price)) for f in fills],
        fees=fees.quote,
    )
    vwap = float(market_vwap) if market_vwap is not None else None
    return ExecutionReport(
        algo=params.kind,
        venue=params.venue,
        symbol=params.symbol,
        side=params.side,
        ordered=ordered,
        filled=filled,
        filled_quote=filled_quote,
        fill_rate=filled / ordered,
        avg_price=avg,
        decision_price=decision,
        arrival_mid=float(arrival_mid),
        end_mid=float(end_mid),
        slippage_bps=None if avg is None else slippage_bps(params.side, avg, float(arrival_mid)),
        market_vwap=vwap,
        vwap_slippage_bps=None if avg is None or not vwap else slippage_bps(params.side, avg, vwap),
        participation=filled / float(market_volume) if market_volume else None,
        started_at=started_at,
        ended_at=ended_at,
        duration=max(ended_at - started_at, 0.0),
        shortfall=shortfall,
        unpriced_fees=fees.unpriced,
        children=children,
        finish=finish,
    )
