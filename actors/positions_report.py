"""What `tradectl pnl` and `tradectl report` show: plain functions over the keeper's state.

No I/O here: the actor reads the journal (fills, executions) and hands the
rows in together with the ledger. Money in the views stays Decimal where it is
the ledger's own figure; statistics (ratios, VaR, transaction costs) are
floats from `daemon.analytics`, NaN where the data cannot support a figure.

Transaction-cost analysis judges each fill against its execution's arrival
mid, and each execution's implementation shortfall against its decision
price. Both come from what the execution journaled: the keys
``arrival_mid``, ``decision_price`` and ``end_mid`` (or a final ``report``
holding them) in the latest checkpoint's ``algo_state``, else in the
execution's parameters. A fill without such a benchmark (a manual order, an
execution that journaled none) is counted, not guessed at.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from actors.algos.analytics import implementation_shortfall
from actors.ledger import ClosedTrade, Ledger
from actors.positions_core import decimals
from daemon.analytics import (
    ExecutionCost,
    PerformanceReport,
    ShortfallSummary,
    TcaFill,
    TcaSummary,
    performance_report,
    shortfall_by,
    tca_by,
)
from daemon.journal_store import ExecutionRecord, JournaledFill
from daemon.messages import Fill

ZERO = Decimal(0)

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_since(text: str, now_ms: int) -> int:
    """A start time in UTC ms from what an operator types.

    An age (``90s``, ``30m``, ``24h``, ``7d``, ``2w``) counts back from
    `now_ms`; an ISO date (``2026-01-31``, midnight UTC) or date and time
    (``2026-01-31T12:00``, ``2026-01-31 12:00:00+02:00``) is taken as UTC
    unless it names its offset.
    """
    value = text.strip()
    if match := _AGE.match(value):
        amount = float(match.group(1))
        return now_ms - int(amount * _UNIT_MS[match.group(2).lower()])
    try:
        if len(value) == 10:
            moment = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time; use an age like 24h, 7d or 30m, a date like 2026-01-31, "
            "or a UTC date and time like 2026-01-31T12:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


# ---------------------------------------------------------------------------------------
# pnl
# ---------------------------------------------------------------------------------------


class PositionPnl(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    quote: str
    quantity: Decimal
    avg_entry_price: Decimal | None
    mark: Decimal | None
    realised_pnl: Decimal  # quote currency, net of fees
    unrealised_pnl: Decimal | None
    fees: Decimal
    fills: int
    price_decimals: int
    qty_decimals: int


class PnlView(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    money_decimals: int
    realised: Decimal
    unrealised: Decimal
    fees: Decimal
    total: Decimal
    equity: Decimal
    equity_complete: bool
    missing: tuple[str, ...]
    unconverted_fees: dict[str, Decimal]
    positions: list[PositionPnl]
    closed_trades: int
    curve_points: int
    performance: PerformanceReport


def trade_pnls(ledger: Ledger, trades: Iterable[ClosedTrade]) -> list[float]:
    """Round-trip PnLs in the reporting currency (at today's rate); trades without a rate are left out."""
    out = []
    for trade in trades:
        instrument = ledger.instrument(trade.venue, trade.symbol)
        rate = ledger.rate(instrument.quote, ledger.currency, venue=trade.venue) if instrument is not None else None
        if rate is not None:
            out.append(float(trade.realised_pnl * rate))
    return out


def pnl_view(ledger: Ledger, *, money_decimals: int = 2) -> PnlView:
    pnl = ledger.pnl()
    equity = ledger.equity()
    times, values = ledger.curve.columns()
    rows = []
    for p in ledger.positions(include_flat=True):
        instrument = ledger.instrument(p.venue, p.symbol)
        rows.append(
            PositionPnl(
                venue=p.venue,
                symbol=p.symbol,
                quote=p.quote,
                quantity=p.quantity,
                avg_entry_price=p.avg_entry_price,
                mark=p.mark,
                realised_pnl=p.realised_pnl,
                unrealised_pnl=p.unrealised_pnl,
                fees=p.fees,
                fills=p.fills,
                price_decimals=decimals(instrument.tick_size) if instrument else 8,
                qty_decimals=decimals(instrument.step_size) if instrument else 8,
            )
        )
    return PnlView(
        currency=ledger.currency,
        money_decimals=money_decimals,
        realised=pnl.realised,
        unrealised=pnl.unrealised,
        fees=pnl.fees,
        total=pnl.total,
        equity=equity.value,
        equity_complete=equity.complete and not pnl.missing,
        missing=tuple(dict.fromkeys((*equity.missing, *pnl.missing))),
        unconverted_fees=pnl.unconverted_fees,
        positions=rows,
        closed_trades=ledger.closed_trade_count,
        curve_points=len(ledger.curve),
        performance=performance_report(times, values, trade_pnls(ledger, ledger.closed_trades)),
    )


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------


class ExecutionPrices(msgspec.Struct, frozen=True, kw_only=True):
    """The benchmarks an execution journaled (None when it did not)."""

    arrival_mid: float | None = None
    decision_price: float | None = None
    end_mid: float | None = None
    report: dict[str, Any] | None = None  # the final report, as journaled


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def execution_prices(record: ExecutionRecord) -> ExecutionPrices:
    state: dict[str, Any] = dict(record.checkpoint.algo_state) if record.checkpoint is not None else {}
    try:
        params = record.decode_params()
    except (msgspec.DecodeError, ValueError):
        params = None
    report = state.get("report") if isinstance(state.get("report"), dict) else None
    places = [state, report or {}, params if isinstance(params, dict) else {}]

    def find(name: str) -> float | None:
        for place in places:
            if (number := _number(place.get(name))) is not None:
                return number
        return None

    return ExecutionPrices(
        arrival_mid=find("arrival_mid"),
        decision_price=find("decision_price"),
        end_mid=find("end_mid"),
        report=report,
    )


def fee_in_quote(fill: Fill, base: str, quote: str, ledger: Ledger) -> float | None:
    """The fee in the instrument's quote currency; a third-asset fee at today's rate, None without one."""
    if fill.fee == 0 or fill.fee_asset == quote:
        return float(fill.fee)
    if fill.fee_asset == base:
        return float(fill.fee * fill.price)
    rate = ledger.rate(fill.fee_asset, quote, venue=fill.venue)
    return float(fill.fee * rate) if rate is not None else None


class ReportView(msgspec.Struct, frozen=True, kw_only=True):
    since_ms: int
    until_ms: int
    currency: str
    money_decimals: int
    fills: int
    executions: int
    volume: float  # traded notional in the reporting currency
    fees: float  # in the reporting currency
    realised_pnl: float  # closed round trips in the window, reporting currency
    performance: PerformanceReport  # equity curve points and round trips inside the window
    tca_by_execution: dict[str, TcaSummary]
    tca_by_venue: dict[str, TcaSummary]
    shortfall_by_execution: dict[str, ShortfallSummary]
    shortfall_by_venue: dict[str, ShortfallSummary]
    unbenchmarked_fills: int  # fills without an execution benchmark: in volume and fees, not in TCA
    unpriced: list[str]  # currencies or fee assets without a rate: left out of the figures
    notes: list[str]


def build_report(
    *,
    ledger: Ledger,
    fills: Sequence[JournaledFill],
    executions: Mapping[str, ExecutionRecord],
    execution_fills: Mapping[str, Sequence[Fill]],
    since_ms: int,
    until_ms: int,
    money_decimals: int = 2,
) -> ReportView:
    """Costs and performance of everything between `since_ms` and `until_ms`.

    `fills` are the journal's fills in the window; `executions` the records of
    the executions they (or the window) belong to; `execution_fills` every
    fill of those executions, since an execution's shortfall covers all of it.
    """
    currency = ledger.currency
    unpriced: set[str] = set()
    prices = {exec_id: execution_prices(record) for exec_id, record in executions.items()}
    volume = fees = 0.0
    tca: list[TcaFill] = []
    unbenchmarked = 0
    for row in fills:
        fill = row.fill
        instrument = ledger.instrument(fill.venue, fill.symbol)
        if instrument is None:
            unpriced.add(f"{fill.venue}:{fill.symbol}")
            continue
        rate = ledger.rate(instrument.quote, currency, venue=fill.venue)
        if rate is None:
            unpriced.add(instrument.quote)
            continue
        fee = fee_in_quote(fill, instrument.base, instrument.quote, ledger)
        if fee is None:
            unpriced.add(fill.fee_asset)
            fee = 0.0
        volume += float(fill.qty * fill.price * rate)
        fees += fee * float(rate)
        benchmark = prices[row.exec_id].arrival_mid if row.exec_id in prices else None
        if benchmark is None:
            unbenchmarked += 1
            continue
        tca.append(
            TcaFill(
                venue=fill.venue,
                symbol=fill.symbol,
                exec_id=row.exec_id or "",
                side=fill.side,
                qty=float(fill.qty),
                price=float(fill.price),
                benchmark=benchmark,
                fee=fee,
                rate=float(rate),
            )
        )

    costs: list[ExecutionCost] = []
    for exec_id, record in sorted(executions.items()):
        cost = _execution_cost(record, prices[exec_id], execution_fills.get(exec_id, ()), ledger, unpriced)
        if cost is not None:
            costs.append(cost)

    trades = [t for t in ledger.closed_trades if since_ms <= t.closed_ms <= until_ms]
    pnls = trade_pnls(ledger, trades)
    points = [(t, v) for t, v in ledger.curve.points() if since_ms <= t <= until_ms]
    notes = []
    if len(ledger.closed_trades) < ledger.closed_trade_count:
        notes.append(f"only the latest {len(ledger.closed_trades)} round trips are kept in memory")
    all_points = ledger.curve.points()
    if all_points and all_points[0][0] > since_ms:
        notes.append("the equity curve starts when the daemon last started; performance covers that part only")
    return ReportView(
        since_ms=since_ms,
        until_ms=until_ms,
        currency=currency,
        money_decimals=money_decimals,
        fills=len(fills),
        executions=len(executions),
        volume=volume,
        fees=fees,
        realised_pnl=sum(pnls),
        performance=performance_report([t for t, _ in points], [v for _, v in points], pnls),
        tca_by_execution=tca_by(tca, "exec_id"),
        tca_by_venue=tca_by(tca, "venue"),
        shortfall_by_execution=shortfall_by(costs, "exec_id"),
        shortfall_by_venue=shortfall_by(costs, "venue"),
        unbenchmarked_fills=unbenchmarked,
        unpriced=sorted(unpriced),
        notes=notes,
    )


def _execution_cost(
    record: ExecutionRecord,
    prices: ExecutionPrices,
    fills: Sequence[Fill],
    ledger: Ledger,
    unpriced: set[str],
) -> ExecutionCost | None:
    """The execution's shortfall: from its final report when it journaled one, else
    computed from its fills against its decision price (or arrival mid)."""
    instrument = ledger.instrument(record.venue, record.symbol)
    if instrument is None:
        return None
    rate = ledger.rate(instrument.quote, ledger.currency, venue=record.venue)
    if rate is None:
        unpriced.add(instrument.quote)
        return None
    report = prices.report or {}
    shortfall = report.get("shortfall") if isinstance(report.get("shortfall"), dict) else None
    ordered = _number(report.get("ordered"))
    if shortfall is not None and ordered is not None and prices.decision_price is not None:
        try:
            return ExecutionCost(
                exec_id=record.exec_id,
                venue=record.venue,
                symbol=record.symbol,
                side=record.side,
                ordered_qty=ordered,
                filled_qty=float(report.get("filled", 0.0)),
                decision_price=prices.decision_price,
                shortfall=float(shortfall["total"]),
                fees=float(shortfall.get("fees", 0.0)),
                rate=float(rate),
            )
        except (KeyError, TypeError, ValueError):
            pass  # a report of another shape: compute it below
    decision = prices.decision_price or prices.arrival_mid
    ordered = float(record.quantity)
    if decision is None or ordered <= 0:
        return None
    fee_total = 0.0
    for fill in fills:
        fee = fee_in_quote(fill, instrument.base, instrument.quote, ledger)
        if fee is None:
            unpriced.add(fill.fee_asset)
        else:
            fee_total += fee
    mark = ledger.mark(record.venue, record.symbol)
    end = prices.end_mid or (float(mark) if mark is not None else None) or (float(fills[-1].price) if fills else decision)
    result = implementation_shortfall(
        side=record.side,
        ordered=ordered,
        decision_price=decision,
        arrival_price=prices.arrival_mid or decision,
        end_price=end,
        fills=[(float(f.qty), float(f.price)) for f in fills],
        fees=fee_total,
    )
    return ExecutionCost(
        exec_id=record.exec_id,
        venue=record.venue,
        symbol=record.symbol,
        side=record.side,
        ordered_qty=ordered,
        filled_qty=sum(float(f.qty) for f in fills),
        decision_price=decision,
        shortfall=result.total,
        fees=fee_total,
        rate=float(rate),
    )
