"""Performance and risk analytics over equity curves, returns and closed trades.

Floats and numpy, not Decimal: these are statistics for people and breakers,
not money that moves. Inputs may be lists, numpy arrays or Decimals.

Conventions (those of empyrical, so figures compare with common tools):

- Returns are simple per-period returns (0.01 = +1 %). Metrics assume daily
  periods and annualise with 252 periods a year; pass `periods_per_year` for
  other periods. `resample_returns` turns an irregular equity curve into
  such returns.
- NaN returns are skipped by the means and deviations, and count as 0 when
  compounding; `annual_return` still counts them in the number of periods.
- Volatility is the *sample* standard deviation (ddof=1) x sqrt(252). Fewer
  than two returns: NaN.
- Sharpe = mean(r - rf) / std(r - rf, ddof=1) x sqrt(252), rf per period.
  Fewer than two returns: NaN. Zero deviation: +inf or -inf with the sign of
  the mean, NaN if the mean is zero too (plain IEEE division).
- Downside deviation = sqrt(mean(min(r - MAR, 0)^2)) x sqrt(252), the mean
  taken over *all* returns (a period above the target counts as a zero, it is
  not dropped). Empty: NaN.
- Sortino = mean(r - MAR) x 252 / downside deviation. Fewer than two returns:
  NaN; no downside at all: +inf for a positive mean, NaN for zero.
- Max drawdown is a fraction <= 0 (-0.25 = a 25 % fall from the peak). Over
  returns the wealth starts at 1 before the first return, so a first-period
  loss counts. Empty: NaN.
- Annual return is the compound rate prod(1 + r) ^ (252 / n) - 1.
- Calmar = annual return / |max drawdown|; NaN without a drawdown or when the
  ratio is infinite.
- VaR and CVaR are reported as a *positive loss fraction*: 0.02 means "lose
  2 % of the value". A negative figure means even the tail is a gain.
  Historical VaR is minus the `1 - level` quantile of the returns (numpy's
  linear interpolation); historical CVaR is minus the mean of the worst
  floor((n - 1)(1 - level)) + 1 returns. Parametric figures assume normal
  returns with the sample mean and deviation (ddof=1): VaR = z*sigma - mu, CVaR =
  sigma*phi(z)/(1 - level) - mu, z the `level` quantile of the standard normal.
  Empty input: NaN; parametric with fewer than two returns: NaN.
- Trade statistics follow quantstats: win rate = winners / (winners + losers),
  break-even trades excluded; profit factor = gross profit / gross loss, +inf
  with no losing trade, 0 when every trade broke even; expectancy is the mean
  PnL per trade. No trades: NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from statistics import NormalDist

import msgspec
import numpy as np

from daemon.model import Side

TRADING_DAYS = 252
DAY_MS = 86_400_000

_STANDARD_NORMAL = NormalDist()


def _as_array(values: Iterable[float]) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values.ravel()
    return np.asarray([float(v) for v in values], dtype=np.float64)


def _finite(returns: Iterable[float]) -> np.ndarray:
    array = _as_array(returns)
    return array[~np.isnan(array)]


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be a fraction between 0 and 1 (e.g. 0.95), got {level}")
    return float(level)


# ---------------------------------------------------------------------------------------
# From equity to returns
# ---------------------------------------------------------------------------------------


class PeriodReturns(msgspec.Struct, frozen=True):
    """Returns per period; `starts_ms[i]` is the start of the period of `returns[i]`."""

    starts_ms: list[int]
    returns: list[float]


def simple_returns(equity: Sequence[float]) -> np.ndarray:
    """Successive relative changes of an equity series (one shorter than the input).

    A change from zero or negative equity has no meaning and is NaN.
    """
    values = _as_array(equity)
    if values.size < 2:
        return np.empty(0)
    before, after = values[:-1], values[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(before > 0, after / before - 1.0, np.nan)
    return out


def resample_returns(
    times_ms: Sequence[int],
    equity: Sequence[float],
    *,
    period_ms: int = DAY_MS,
    origin_ms: int = 0,
) -> PeriodReturns:
    """Resample an irregular equity curve into one return per period.

    Periods are `[origin + k*period, origin + (k+1)*period)` (UTC days by
    default). A period's closing value is the last sample inside it; a period
    without samples carries the previous close (a return of 0). The first
    period's return is measured from the first sample, so a run shorter than
    one period still yields one return. Times must not decrease.
    """
    times = np.asarray(list(times_ms), dtype=np.int64)
    values = _as_array(equity)
    if times.size != values.size:
        raise ValueError(f"{times.size} times for {values.size} equity values; pass one time per value")
    if period_ms <= 0:
        raise ValueError(f"period must be positive, got {period_ms} ms")
    if times.size == 0:
        return PeriodReturns([], [])
    if np.any(np.diff(times) < 0):
        raise ValueError("equity times go backwards; sort the curve by time first")
    buckets = (times - origin_ms) // period_ms
    first, last = int(buckets[0]), int(buckets[-1])
    closes = np.full(last - first + 1, np.nan)
    is_last_in_bucket = np.append(buckets[1:] != buckets[:-1], True)
    closes[buckets[is_last_in_bucket] - first] = values[is_last_in_bucket]
    for i in range(1, closes.size):
        if np.isnan(closes[i]):
            closes[i] = closes[i - 1]
    returns = simple_returns(np.concatenate(([values[0]], closes)))
    starts = [origin_ms + (first + i) * period_ms for i in range(closes.size)]
    return PeriodReturns(starts, returns.tolist())


# ---------------------------------------------------------------------------------------
# Return and risk ratios (empyrical conventions; see the module docstring)
# ---------------------------------------------------------------------------------------


def cum_returns(returns: Iterable[float]) -> np.ndarray:
    """Compounded return up to each period; NaN counts as 0."""
    r = np.nan_to_num(_as_array(returns), nan=0.0)
    return np.cumprod(1.0 + r) - 1.0


def total_return(returns: Iterable[float]) -> float:
    r = _as_array(returns)
    if r.size == 0:
        return math.nan
    return float(np.prod(1.0 + np.nan_to_num(r, nan=0.0)) - 1.0)


def annual_return(returns: Iterable[float], *, periods_per_year: float = TRADING_DAYS) -> float:
    r = _as_array(returns)
    if r.size == 0:
        return math.nan
    growth = np.prod(1.0 + np.nan_to_num(r, nan=0.0))
    years = r.size / periods_per_year
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return float(growth ** (1.0 / years) - 1.0)


def annual_volatility(returns: Iterable[float], *, periods_per_year: float = TRADING_DAYS) -> float:
    r = _finite(returns)
    if r.size < 2:
        return math.nan
    return float(np.std(r, ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(
    returns: Iterable[float], *, risk_free: float = 0.0, periods_per_year: float = TRADING_DAYS
) -> float:
    r = _finite(returns) - float(risk_free)
    if r.size < 2:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.divide(np.mean(r), np.std(r, ddof=1)) * math.sqrt(periods_per_year))


def downside_risk(
    returns: Iterable[float], *, required_return: float = 0.0, periods_per_year: float = TRADING_DAYS
) -> float:
    r = _finite(returns)
    if r.size == 0:
        return math.nan
    below = np.minimum(r - float(required_return), 0.0)
    return float(math.sqrt(np.mean(below**2)) * math.sqrt(periods_per_year))


def sortino_ratio(
    returns: Iterable[float], *, required_return: float = 0.0, periods_per_year: float = TRADING_DAYS
) -> float:
    r = _finite(returns)
    if r.size < 2:
        return math.nan
    mean_annual = np.mean(r - float(required_return)) * periods_per_year
    downside = downside_risk(r, required_return=required_return, periods_per_year=periods_per_year)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.divide(mean_annual, downside))


def max_drawdown(returns: Iterable[float]) -> float:
    """Largest fall from a running peak of compounded wealth, as a fraction <= 0."""
    r = _as_array(returns)
    if r.size == 0:
        return math.nan
    wealth = np.concatenate(([1.0], 1.0 + cum_returns(r)))
    peaks = np.maximum.accumulate(wealth)
    return float(np.min(wealth / peaks - 1.0))


def calmar_ratio(returns: Iterable[float], *, periods_per_year: float = TRADING_DAYS) -> float:
    r = _as_array(returns)
    drawdown = max_drawdown(r)
    if not drawdown < 0:
        return math.nan
    ratio = annual_return(r, periods_per_year=periods_per_year) / abs(drawdown)
    return math.nan if math.isinf(ratio) else ratio


class Drawdown(msgspec.Struct, frozen=True, kw_only=True):
    """The deepest fall of an equity curve, with its dates (UTC ms).

    `peak_ms` is the last time the peak value was seen before the trough;
    `recovery_ms` the first time after the trough equity was back at the peak
    value, or None if it has not recovered.
    """

    max_drawdown: float  # fraction <= 0
    peak_ms: int | None = None
    peak_value: float = math.nan
    trough_ms: int | None = None
    trough_value: float = math.nan
    recovery_ms: int | None = None


def drawdown_details(times_ms: Sequence[int], equity: Sequence[float]) -> Drawdown:
    """Max drawdown of an equity curve (not returns), with peak, trough and recovery times."""
    times = list(times_ms)
    values = _as_array(equity)
    if len(times) != values.size:
        raise ValueError(f"{len(times)} times for {values.size} equity values; pass one time per value")
    if values.size == 0:
        return Drawdown(max_drawdown=math.nan)
    peaks = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        underwater = np.where(peaks > 0, values / peaks - 1.0, 0.0)
    trough = int(np.argmin(underwater))
    depth = float(underwater[trough])
    if depth >= 0:
        return Drawdown(max_drawdown=0.0)
    peak_value = peaks[trough]
    peak = int(np.flatnonzero(values[: trough + 1] == peak_value)[-1])
    recovered = np.flatnonzero(values[trough:] >= peak_value)
    recovery = times[trough + int(recovered[0])] if recovered.size else None
    return Drawdown(
        max_drawdown=depth,
        peak_ms=times[peak],
        peak_value=float(peak_value),
        trough_ms=times[trough],
        trough_value=float(values[trough]),
        recovery_ms=recovery,
    )


# ---------------------------------------------------------------------------------------
# Value at risk (positive numbers are losses; see the module docstring)
# ---------------------------------------------------------------------------------------


def historical_var(returns: Iterable[float], level: float = 0.95) -> float:
    r = _finite(returns)
    tail = 1.0 - _check_level(level)
    if r.size == 0:
        return math.nan
    return float(-np.percentile(r, 100.0 * tail))


def historical_cvar(returns: Iterable[float], level: float = 0.95) -> float:
    r = _finite(returns)
    tail = 1.0 - _check_level(level)
    if r.size == 0:
        return math.nan
    count = int((r.size - 1) * tail) + 1
    return float(-np.mean(np.sort(r)[:count]))


def _mean_std(returns: Iterable[float]) -> tuple[float, float] | None:
    r = _finite(returns)
    if r.size < 2:
        return None
    return float(np.mean(r)), float(np.std(r, ddof=1))


def parametric_var(returns: Iterable[float], level: float = 0.95) -> float:
    z = _STANDARD_NORMAL.inv_cdf(_check_level(level))
    moments = _mean_std(returns)
    if moments is None:
        return math.nan
    mean, std = moments
    return z * std - mean


def parametric_cvar(returns: Iterable[float], level: float = 0.95) -> float:
    level = _check_level(level)
    z = _STANDARD_NORMAL.inv_cdf(level)
    moments = _mean_std(returns)
    if moments is None:
        return math.nan
    mean, std = moments
    return std * _STANDARD_NORMAL.pdf(z) / (1.0 - level) - mean


# ---------------------------------------------------------------------------------------
# Closed trades
# ---------------------------------------------------------------------------------------


class TradeStats(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    wins: int
    losses: int
    breakeven: int
    win_rate: float
    profit_factor: float
    expectancy: float  # mean PnL per trade
    average_win: float
    average_loss: float  # <= 0
    gross_profit: float
    gross_loss: float  # <= 0
    best: float
    worst: float


def trade_stats(pnls: Iterable[float]) -> TradeStats:
    """Statistics of round-trip PnLs (e.g. `ClosedTrade.realised_pnl` of the ledger)."""
    p = _finite(pnls)
    wins, losses = p[p > 0], p[p < 0]
    gross_profit, gross_loss = float(wins.sum()), float(losses.sum())
    decided = wins.size + losses.size
    if p.size == 0:
        profit_factor = math.nan
    elif losses.size == 0:
        profit_factor = math.inf if wins.size else 0.0
    else:
        profit_factor = gross_profit / -gross_loss
    return TradeStats(
        count=int(p.size),
        wins=int(wins.size),
        losses=int(losses.size),
        breakeven=int(p.size - decided),
        win_rate=wins.size / decided if decided else math.nan,
        profit_factor=profit_factor,
        expectancy=float(p.mean()) if p.size else math.nan,
        average_win=float(wins.mean()) if wins.size else math.nan,
        average_loss=float(losses.mean()) if losses.size else math.nan,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        best=float(p.max()) if p.size else math.nan,
        worst=float(p.min()) if p.size else math.nan,
    )


# ---------------------------------------------------------------------------------------
# One report
# ---------------------------------------------------------------------------------------


class PerformanceReport(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int | None
    end_ms: int | None
    start_equity: float
    end_equity: float
    periods: int  # number of returns the ratios were computed over
    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    calmar: float
    drawdown: Drawdown
    var_95: float
    var_99: float
    cvar_95: float
    cvar_99: float
    parametric_var_95: float
    parametric_var_99: float
    parametric_cvar_95: float
    parametric_cvar_99: float
    trades: TradeStats


def performance_report(
    times_ms: Sequence[int],
    equity: Sequence[float],
    trade_pnls: Iterable[float] = (),
    *,
    period_ms: int = DAY_MS,
    origin_ms: int = 0,
    periods_per_year: float = TRADING_DAYS,
    risk_free: float = 0.0,
) -> PerformanceReport:
    """Every metric of this module for one equity curve and its closed trades.

    The ratios use the curve resampled into `period_ms` returns; the total
    return and the drawdown use the curve itself, so they are exact even for a
    run shorter than a period. NaN marks a figure the data cannot support
    (e.g. volatility from one day); encoded to JSON it becomes null.
    """
    times = list(times_ms)
    values = _as_array(equity)
    r = np.asarray(
        resample_returns(times, values, period_ms=period_ms, origin_ms=origin_ms).returns, dtype=np.float64
    )
    return PerformanceReport(
        start_ms=times[0] if times else None,
        end_ms=times[-1] if times else None,
        start_equity=float(values[0]) if values.size else math.nan,
        end_equity=float(values[-1]) if values.size else math.nan,
        periods=int(r.size),
        total_return=total_return(r),
        annual_return=annual_return(r, periods_per_year=periods_per_year),
        annual_volatility=annual_volatility(r, periods_per_year=periods_per_year),
        sharpe=sharpe_ratio(r, risk_free=risk_free, periods_per_year=periods_per_year),
        sortino=sortino_ratio(r, required_return=risk_free, periods_per_year=periods_per_year),
        calmar=calmar_ratio(r, periods_per_year=periods_per_year),
        drawdown=drawdown_details(times, values),
        var_95=historical_var(r, 0.95),
        var_99=historical_var(r, 0.99),
        cvar_95=historical_cvar(r, 0.95),
        cvar_99=historical_cvar(r, 0.99),
        parametric_var_95=parametric_var(r, 0.95),
        parametric_var_99=parametric_var(r, 0.99),
        parametric_cvar_95=parametric_cvar(r, 0.95),
        parametric_cvar_99=parametric_cvar(r, 0.99),
        trades=trade_stats(trade_pnls),
    )


# ---------------------------------------------------------------------------------------
# Transaction-cost analysis across executions and venues
# ---------------------------------------------------------------------------------------
#
# The cost of one execution (its shortfall decomposition) is computed where the
# execution is; here we only add executions and fills up, by venue, symbol or
# execution. Costs are positive when they hurt, for buys and sells alike.


class TcaFill(msgspec.Struct, frozen=True, kw_only=True):
    """One fill with the benchmark it is judged against (usually the arrival mid).

    `fee` is in the quote currency; `rate` converts quote to the reporting
    currency (1 when they are the same).
    """

    venue: str
    symbol: str
    exec_id: str
    side: Side
    qty: float
    price: float
    benchmark: float
    fee: float = 0.0
    rate: float = 1.0


class ExecutionCost(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one execution, as its final report states it, in quote currency.

    `shortfall` is the implementation shortfall (delay + trading + opportunity
    + fees), positive = cost; `ordered_qty x decision_price` is the paper
    portfolio it is measured against.
    """

    exec_id: str
    venue: str
    symbol: str
    side: Side
    ordered_qty: float
    filled_qty: float
    decision_price: float
    shortfall: float
    fees: float = 0.0
    rate: float = 1.0


class TcaSummary(msgspec.Struct, frozen=True, kw_only=True):
    fills: int
    quantity: float
    notional: float  # at the fill prices, reporting currency
    slippage: float  # sum of side x qty x (price - benchmark), reporting currency; positive = cost
    slippage_bps: float  # slippage / benchmark notional, x 1e4
    fees: float
    fee_bps: float
    total_cost: float  # slippage + fees
    total_bps: float


class ShortfallSummary(msgspec.Struct, frozen=True, kw_only=True):
    executions: int
    ordered_notional: float  # sum of ordered_qty x decision_price, reporting currency
    filled_qty: float
    fill_rate: float  # filled / ordered quantity
    shortfall: float
    shortfall_bps: float
    fees: float


Key = str | Callable[[object], str]


def _key_of(key: Key) -> Callable[[object], str]:
    if callable(key):
        return key
    return lambda record: str(getattr(record, key))


def _bps(amount: float, base: float) -> float:
    return amount / base * 1e4 if base else math.nan


def tca_by(fills: Iterable[TcaFill], key: Key = "venue") -> dict[str, TcaSummary]:
    """Slippage and fees per group of fills; `key` names a field or is a function.

    bps figures are weighted by notional: the group's cost over its benchmark
    notional, so a large fill weighs more than a small one.
    """
    group_of = _key_of(key)
    groups: dict[str, list[TcaFill]] = {}
    for fill in fills:
        groups.setdefault(group_of(fill), []).append(fill)
    out = {}
    for name, members in sorted(groups.items()):
        qty = sum(f.qty for f in members)
        notional = sum(f.qty * f.price * f.rate for f in members)
        bench_notional = sum(f.qty * f.benchmark * f.rate for f in members)
        slippage = sum(f.side.sign * f.qty * (f.price - f.benchmark) * f.rate for f in members)
        fees = sum(f.fee * f.rate for f in members)
        out[name] = TcaSummary(
            fills=len(members),
            quantity=qty,
            notional=notional,
            slippage=slippage,
            slippage_bps=_bps(slippage, bench_notional),
            fees=fees,
            fee_bps=_bps(fees, bench_notional),
            total_cost=slippage + fees,
            total_bps=_bps(slippage + fees, bench_notional),
        )
    return out


def shortfall_by(executions: Iterable[ExecutionCost], key: Key = "venue") -> dict[str, ShortfallSummary]:
    """Implementation shortfall added up per group of executions, weighted by ordered notional."""
    group_of = _key_of(key)
    groups: dict[str, list[ExecutionCost]] = {}
    for execution in executions:
        groups.setdefault(group_of(execution), []).append(execution)
    out = {}
    for name, members in sorted(groups.items()):
        ordered_qty = sum(e.ordered_qty for e in members)
        filled = sum(e.filled_qty for e in members)
        paper = sum(e.ordered_qty * e.decision_price * e.rate for e in members)
        shortfall = sum(e.shortfall * e.rate for e in members)
        out[name] = ShortfallSummary(
            executions=len(members),
            ordered_notional=paper,
            filled_qty=filled,
            fill_rate=filled / ordered_qty if ordered_qty else math.nan,
            shortfall=shortfall,
            shortfall_bps=_bps(shortfall, paper),
            fees=sum(e.fees * e.rate for e in members),
        )
    return out
