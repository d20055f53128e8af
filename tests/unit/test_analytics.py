"""Performance and risk metrics against values computed independently.

Expected figures come from the standard library (`statistics`, `math`) or by
hand, never from numpy, so a slip in the module's numpy code shows up.
"""

import math
import statistics
from decimal import Decimal

import msgspec
import pytest

from daemon import analytics as A
from daemon.model import Side

R = [0.01, -0.02, 0.015, 0.003, -0.007, 0.012, -0.011, 0.004]
SQRT252 = math.sqrt(252)
DAY = A.DAY_MS


def close(a, b, rel=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


# --- return and risk ratios ---------------------------------------------------------------


def test_volatility_and_sharpe_use_the_sample_deviation():
    sd = statistics.stdev(R)  # n - 1 in the denominator
    assert close(A.annual_volatility(R), sd * SQRT252)
    assert close(A.sharpe_ratio(R), statistics.fmean(R) / sd * SQRT252)
    rf = 0.001
    excess = [r - rf for r in R]
    assert close(A.sharpe_ratio(R, risk_free=rf), statistics.fmean(excess) / statistics.stdev(excess) * SQRT252)


def test_downside_deviation_averages_over_all_points():
    squares = [min(r, 0.0) ** 2 for r in R]
    expected = math.sqrt(sum(squares) / len(R)) * SQRT252  # all 8 points, not just the 3 losses
    assert close(A.downside_risk(R), expected)
    assert close(A.sortino_ratio(R), statistics.fmean(R) * 252 / expected)
    mar = 0.005
    squares = [min(r - mar, 0.0) ** 2 for r in R]
    downside = math.sqrt(sum(squares) / len(R)) * SQRT252
    assert close(A.sortino_ratio(R, required_return=mar), (statistics.fmean(R) - mar) * 252 / downside)


def test_compounded_returns():
    growth = math.prod(1 + r for r in R)
    assert close(A.total_return(R), growth - 1)
    assert close(A.annual_return(R), growth ** (252 / len(R)) - 1)
    assert close(A.annual_return(R, periods_per_year=365), growth ** (365 / len(R)) - 1)
    assert A.cum_returns([0.1, float("nan"), -0.5]) == pytest.approx([0.1, 0.1, -0.45])


def test_max_drawdown_counts_a_first_period_loss():
    assert close(A.max_drawdown([-0.1]), -0.1)
    # wealth 1 -> 1.1 -> 0.55 -> 0.66: the fall is from 1.1 to 0.55
    assert close(A.max_drawdown([0.1, -0.5, 0.2]), -0.5)
    assert A.max_drawdown([0.01, 0.02]) == 0.0


def test_calmar_is_annual_return_over_the_drawdown():
    returns = [0.1, -0.5, 0.2]
    expected = ((1.1 * 0.5 * 1.2) ** (252 / 3) - 1) / 0.5
    assert close(A.calmar_ratio(returns), expected)
    assert math.isnan(A.calmar_ratio([0.01, 0.02]))  # no drawdown


def test_nan_returns_are_skipped_by_deviations_but_count_in_periods():
    with_gap = [0.01, float("nan"), -0.02, 0.03]
    clean = [0.01, -0.02, 0.03]
    assert close(A.annual_volatility(with_gap), statistics.stdev(clean) * SQRT252)
    assert close(A.annual_return(with_gap), math.prod(1 + r for r in clean) ** (252 / 4) - 1)


# --- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    [
        A.total_return,
        A.annual_return,
        A.annual_volatility,
        A.sharpe_ratio,
        A.sortino_ratio,
        A.downside_risk,
        A.max_drawdown,
        A.calmar_ratio,
        A.historical_var,
        A.historical_cvar,
        A.parametric_var,
        A.parametric_cvar,
    ],
)
def test_empty_series_gives_nan(metric):
    assert math.isnan(metric([]))


def test_one_point():
    assert close(A.total_return([0.05]), 0.05)
    assert math.isnan(A.annual_volatility([0.05]))
    assert math.isnan(A.sharpe_ratio([0.05]))
    assert math.isnan(A.sortino_ratio([0.05]))
    assert math.isnan(A.parametric_var([0.05]))
    assert close(A.historical_var([-0.05]), 0.05)
    assert close(A.historical_cvar([-0.05]), 0.05)


def test_zero_volatility_gives_signed_infinity_or_nan():
    assert A.sharpe_ratio([0.5, 0.5, 0.5]) == math.inf
    assert A.sharpe_ratio([-0.5, -0.5]) == -math.inf
    assert math.isnan(A.sharpe_ratio([0.0, 0.0]))
    assert A.sortino_ratio([0.01, 0.02]) == math.inf  # no downside at all
    assert math.isnan(A.sortino_ratio([0.0, 0.0]))


def test_decimals_are_accepted():
    assert close(A.total_return([Decimal("0.5"), Decimal("-0.5")]), -0.25)


# --- value at risk ------------------------------------------------------------------------


LOSSES = [x / 100 for x in (-5, -3, -2, -1, 0, 1, 1, 2, 3, 4, -4, 2, 0, 1, -1, 3, 2, 1, 0, 2)]


@pytest.mark.parametrize("level, cut", [(0.95, 5), (0.99, 1)])
def test_historical_var_is_the_linear_quantile_as_a_positive_loss(level, cut):
    # statistics' "inclusive" quantiles interpolate linearly between order statistics.
    quantile = statistics.quantiles(LOSSES, n=100, method="inclusive")[cut - 1]
    assert close(A.historical_var(LOSSES, level), -quantile)
    assert A.historical_var(LOSSES, level) > 0


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_historical_cvar_averages_the_worst_points(level):
    worst = sorted(LOSSES)[: int((len(LOSSES) - 1) * (1 - level)) + 1]
    assert close(A.historical_cvar(LOSSES, level), -statistics.fmean(worst))
    assert A.historical_cvar(LOSSES, level) >= A.historical_var(LOSSES, level)


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_parametric_var_and_cvar_under_a_normal(level):
    mu, sd = statistics.fmean(LOSSES), statistics.stdev(LOSSES)
    normal = statistics.NormalDist(mu, sd)
    assert close(A.parametric_var(LOSSES, level), -normal.inv_cdf(1 - level), rel=1e-9)
    # CVaR by integrating the normal tail numerically: mean of the quantiles below 1 - level.
    steps = 20_000
    tail = [normal.inv_cdf((1 - level) * (k + 0.5) / steps) for k in range(steps)]
    assert math.isclose(A.parametric_cvar(LOSSES, level), -statistics.fmean(tail), rel_tol=1e-4)


def test_parametric_figures_match_the_textbook_multiples_of_sigma():
    symmetric = [-0.02, -0.01, 0.0, 0.01, 0.02]  # mean exactly 0
    sd = statistics.stdev(symmetric)
    assert math.isclose(A.parametric_var(symmetric, 0.95) / sd, 1.6448536, rel_tol=1e-7)
    assert math.isclose(A.parametric_var(symmetric, 0.99) / sd, 2.3263479, rel_tol=1e-7)
    assert math.isclose(A.parametric_cvar(symmetric, 0.95) / sd, 2.0627128, rel_tol=1e-7)
    assert math.isclose(A.parametric_cvar(symmetric, 0.99) / sd, 2.6652142, rel_tol=1e-7)


def test_var_of_all_gains_is_negative():
    assert A.historical_var([0.01, 0.02, 0.03], 0.95) < 0


@pytest.mark.parametrize("level", [95, 0, 1.0, -0.5])
def test_level_must_be_a_fraction(level):
    with pytest.raises(ValueError, match="between 0 and 1"):
        A.historical_var(LOSSES, level)
    with pytest.raises(ValueError, match="between 0 and 1"):
        A.parametric_cvar(LOSSES, level)


# --- equity curves ------------------------------------------------------------------------


def test_resample_takes_the_last_sample_of_each_day_and_carries_empty_days():
    times = [10, 5_000, DAY + 1, DAY + 7_000, 3 * DAY + 2]
    equity = [100, 104, 110, 99, 120]
    out = A.resample_returns(times, equity)
    assert out.starts_ms == [0, DAY, 2 * DAY, 3 * DAY]
    # day 0 closes at 104 (from the first sample, 100); day 1 at 99; day 2 carries 99; day 3 at 120
    assert out.returns == pytest.approx([0.04, 99 / 104 - 1, 0.0, 120 / 99 - 1])


def test_resample_a_run_shorter_than_a_period_still_gives_one_return():
    assert A.resample_returns([0, 60_000], [100, 101]).returns == pytest.approx([0.01])
    assert A.resample_returns([], []) == A.PeriodReturns([], [])


def test_resample_honours_a_custom_period_and_origin():
    hour = 3_600_000
    out = A.resample_returns([hour // 2, hour, 2 * hour], [100, 90, 99], period_ms=hour, origin_ms=hour // 2)
    assert out.starts_ms == [hour // 2, 3 * hour // 2]
    assert out.returns == pytest.approx([-0.1, 0.1])


def test_resample_refuses_unsorted_or_mismatched_input():
    with pytest.raises(ValueError, match="backwards"):
        A.resample_returns([2, 1], [1, 1])
    with pytest.raises(ValueError, match="one time per value"):
        A.resample_returns([1, 2], [1])


def test_simple_returns_from_non_positive_equity_are_nan():
    out = A.simple_returns([100, 0, 50])
    assert out[0] == -1.0 and math.isnan(out[1])


def test_drawdown_details_name_peak_trough_and_recovery():
    times = [1, 2, 3, 4, 5, 6, 7]
    equity = [100, 120, 120, 90, 100, 125, 110]
    dd = A.drawdown_details(times, equity)
    assert close(dd.max_drawdown, 90 / 120 - 1)
    assert (dd.peak_ms, dd.trough_ms, dd.recovery_ms) == (3, 4, 6)  # last time at the peak, first back above
    assert (dd.peak_value, dd.trough_value) == (120.0, 90.0)


def test_drawdown_details_without_recovery_or_without_drawdown():
    dd = A.drawdown_details([1, 2, 3], [100, 80, 90])
    assert (dd.peak_ms, dd.trough_ms, dd.recovery_ms) == (1, 2, None)
    assert A.drawdown_details([1, 2], [1, 2]) == A.Drawdown(max_drawdown=0.0)
    assert math.isnan(A.drawdown_details([], []).max_drawdown)


# --- trades -------------------------------------------------------------------------------


def test_trade_stats_by_hand():
    stats = A.trade_stats([10, -5, 0, 20, -10])
    assert (stats.count, stats.wins, stats.losses, stats.breakeven) == (5, 2, 2, 1)
    assert stats.win_rate == 0.5  # the break-even trade is left out
    assert stats.profit_factor == 2.0  # 30 / 15
    assert stats.expectancy == 3.0  # 15 / 5
    assert (stats.average_win, stats.average_loss) == (15.0, -7.5)
    assert (stats.best, stats.worst) == (20.0, -10.0)


def test_trade_stats_edges():
    assert A.trade_stats([1, 2]).profit_factor == math.inf
    assert A.trade_stats([0, 0]).profit_factor == 0.0
    assert math.isnan(A.trade_stats([0, 0]).win_rate)
    empty = A.trade_stats([])
    assert empty.count == 0 and math.isnan(empty.profit_factor) and math.isnan(empty.expectancy)
    assert A.trade_stats([Decimal("1.5"), Decimal("-0.5")]).profit_factor == 3.0


# --- report -------------------------------------------------------------------------------


def test_performance_report_over_a_few_days():
    times = [0, DAY // 2, DAY + 5, 2 * DAY + 5, 3 * DAY + 5]
    equity = [1000, 1010, 990, 1030, 1020]
    report = A.performance_report(times, equity, [5, -2, 3])
    daily = [0.01, 990 / 1010 - 1, 1030 / 990 - 1, 1020 / 1030 - 1]
    assert report.periods == 4
    assert close(report.total_return, 0.02)
    assert close(report.sharpe, statistics.fmean(daily) / statistics.stdev(daily) * SQRT252)
    assert close(report.drawdown.max_drawdown, 990 / 1010 - 1)
    assert report.trades.count == 3
    assert (report.start_equity, report.end_equity) == (1000.0, 1020.0)


def test_performance_report_of_one_day_and_of_nothing_encodes_to_json():
    short = A.performance_report([0, 1000], [100, 101])
    assert close(short.total_return, 0.01)
    assert math.isnan(short.sharpe)
    decoded = msgspec.json.decode(msgspec.json.encode(short))
    assert decoded["sharpe"] is None  # NaN travels as null
    empty = A.performance_report([], [])
    assert empty.periods == 0 and empty.start_ms is None
    msgspec.json.encode(empty)


# --- transaction-cost analysis ------------------------------------------------------------


def tca(side, price, *, venue="sim", exec_id="e1", qty=1.0, bench=100.0, fee=0.0):
    return A.TcaFill(venue=venue, symbol="BTCUSDT", exec_id=exec_id, side=side, qty=qty, price=price, benchmark=bench, fee=fee)


@pytest.mark.parametrize(
    "side, price, bps",
    [(Side.BUY, 100.10, 10.0), (Side.SELL, 99.95, 5.0), (Side.SELL, 100.05, -5.0)],
)
def test_slippage_is_positive_when_it_costs_for_both_sides(side, price, bps):
    summary = A.tca_by([tca(side, price)])["sim"]
    assert summary.slippage_bps == pytest.approx(bps)


def test_tca_aggregates_by_venue_weighted_by_notional():
    fills = [
        tca(Side.BUY, 100.10, qty=3, fee=0.03),  # 0.30 slippage on 300
        tca(Side.BUY, 99.90, qty=1, fee=0.01),  # -0.10 on 100
        tca(Side.SELL, 99.80, venue="binance", exec_id="e2", qty=2),  # 0.40 on 200
    ]
    by_venue = A.tca_by(fills)
    sim = by_venue["sim"]
    assert (sim.fills, sim.quantity) == (2, 4)
    assert sim.slippage == pytest.approx(0.2)
    assert sim.slippage_bps == pytest.approx(0.2 / 400 * 1e4)
    assert sim.fee_bps == pytest.approx(0.04 / 400 * 1e4)
    assert sim.total_bps == pytest.approx(0.24 / 400 * 1e4)
    assert by_venue["binance"].slippage_bps == pytest.approx(20.0)
    assert set(A.tca_by(fills, "exec_id")) == {"e1", "e2"}
    assert set(A.tca_by(fills, lambda f: f.symbol)) == {"BTCUSDT"}


def test_shortfall_by_venue():
    executions = [
        A.ExecutionCost(exec_id="a", venue="sim", symbol="BTCUSDT", side=Side.BUY, ordered_qty=2, filled_qty=2, decision_price=100, shortfall=0.4),
        A.ExecutionCost(exec_id="b", venue="sim", symbol="BTCUSDT", side=Side.SELL, ordered_qty=2, filled_qty=1, decision_price=100, shortfall=-0.2),
    ]
    sim = A.shortfall_by(executions)["sim"]
    assert sim.executions == 2
    assert sim.fill_rate == 0.75
    assert sim.shortfall_bps == pytest.approx(0.2 / 400 * 1e4)
    assert math.isnan(A.shortfall_by([A.ExecutionCost(exec_id="c", venue="x", symbol="s", side=Side.BUY, ordered_qty=0, filled_qty=0, decision_price=1, shortfall=0)])["x"].fill_rate)
