"""Execution analytics: slippage, shortfall, fees, progress, reports and pre-trade estimates."""

import math
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.algos import ExecutionParams, IcebergParams, OrderView, PovParams, TwapParams
from actors.algos.analytics import (
    fees_in_quote,
    final_report,
    implementation_shortfall,
    progress,
    slippage_bps,
)
from actors.algos.impact import (
    DAY,
    almgren_chriss_cost,
    almgren_chriss_trajectory,
    pre_trade_estimate,
    square_root_cost,
)
from actors.algos.ledger import ChildStats
from daemon.messages import Fill
from daemon.model import Instrument, Side

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"))


def fill(qty, price, fee="0", asset="USDT"):
    return Fill(venue="sim", symbol="BTCUSDT", client_order_id="td-e-1", trade_id=f"{qty}@{price}", side=Side.BUY,
                price=D(price), qty=D(qty), fee=D(fee), fee_asset=asset, is_maker=True)


def twap(side=Side.BUY, **overrides):
    fields = dict(instrument=BTC, side=side, quantity=D("10"), duration=3600.0, algo=TwapParams(slices=60))
    fields.update(overrides)
    return ExecutionParams(**fields)


# --- slippage and shortfall ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "avg", "bps"),
    [(Side.BUY, 100.10, 10.0), (Side.SELL, 99.95, 5.0), (Side.SELL, 100.05, -5.0), (Side.BUY, 99.90, -10.0)],
)
def test_slippage_is_positive_when_it_costs(side, avg, bps):
    assert slippage_bps(side, avg, 100.0) == pytest.approx(bps)


def test_shortfall_decomposition_by_hand():
    buy = implementation_shortfall(side=Side.BUY, ordered=10, decision_price=100, arrival_price=101, end_price=105,
                                   fills=[(4, 102), (2, 100)], fees=3)
    assert (buy.delay, buy.trading, buy.opportunity, buy.fees, buy.total) == (6, 2, 20, 3, 31)
    assert buy.total_bps == pytest.approx(310.0) and buy.opportunity_bps == pytest.approx(200.0)
    # the mirror-image sell costs the same
    sell = implementation_shortfall(side=Side.SELL, ordered=10, decision_price=100, arrival_price=99, end_price=95,
                                    fills=[(4, 98), (2, 100)], fees=3)
    assert (sell.delay, sell.trading, sell.opportunity, sell.total) == (6, 2, 20, 31)


prices = st.floats(min_value=1.0, max_value=1e5)


@given(
    side=st.sampled_from([Side.BUY, Side.SELL]),
    ordered=st.floats(min_value=0.01, max_value=100),
    decision=prices, arrival=prices, end=prices,
    fill_list=st.lists(st.tuples(st.floats(min_value=0.0, max_value=1.0), prices), max_size=8),
    fees=st.floats(min_value=0, max_value=100),
)
def test_shortfall_components_sum_to_paper_minus_real(side, ordered, decision, arrival, end, fill_list, fees):
    fills = [(share * ordered / 8, price) for share, price in fill_list]
    result = implementation_shortfall(side=side, ordered=ordered, decision_price=decision, arrival_price=arrival,
                                      end_price=end, fills=fills, fees=fees)
    parts = result.delay + result.trading + result.opportunity + result.fees
    assert parts == pytest.approx(result.total, rel=1e-9, abs=1e-6)
    bps = result.delay_bps + result.trading_bps + result.opportunity_bps + result.fees_bps
    assert bps == pytest.approx(result.total_bps, rel=1e-9, abs=1e-6)
    # independently: the paper portfolio (all at the decision price) minus the real one, both marked at the end
    s = 1 if side is Side.BUY else -1
    filled = sum(q for q, _ in fills)
    paper = s * ordered * (end - decision)
    real = s * (filled * end - sum(q * p for q, p in fills)) - fees
    assert result.total == pytest.approx(paper - real, rel=1e-9, abs=1e-4)


def test_shortfall_needs_a_positive_order():
    with pytest.raises(ValueError):
        implementation_shortfall(side=Side.BUY, ordered=0, decision_price=1, arrival_price=1, end_price=1, fills=[])


def test_fees_are_converted_to_quote_or_listed_as_unpriced():
    fills = [fill("1", "100", "0.1", "USDT"), fill("1", "100", "0.001", "BTC"), fill("1", "100", "0.01", "BNB"),
             fill("1", "100", "2", "XYZ")]
    total = fees_in_quote(fills, BTC, {"BNB": 300.0})
    assert total.quote == pytest.approx(0.1 + 0.1 + 3.0)
    assert total.unpriced == {"XYZ": 2.0}


# --- progress and report --------------------------------------------------------------------


def test_progress_of_a_running_twap():
    params = twap()
    fills = [fill("2", "100.5"), fill("1", "101")]
    orders = OrderView(filled=D("3"), filled_quote=D("302"))
    result = progress(params=params, orders=orders, fills=fills, children=ChildStats(sent=4), now=900.0,
                      arrival_mid=D("100"), market_volume=D("30"), schedule=0.25)
    assert result.filled_pct == pytest.approx(30.0) and result.schedule_pct == pytest.approx(25.0)
    assert result.schedule_deviation_pct == pytest.approx(5.0)
    assert result.avg_price == pytest.approx(302 / 3)
    assert result.slippage_bps == pytest.approx((302 / 3 - 100) / 100 * 1e4)
    assert result.participation == pytest.approx(0.1) and result.elapsed == 900.0
    empty = progress(params=params, orders=OrderView(), fills=[], children=ChildStats(), now=0.0, arrival_mid=None)
    assert empty.avg_price is None and empty.slippage_bps is None and empty.schedule_deviation_pct is None


def test_final_report_of_a_partly_filled_sell():
    params = twap(side=Side.SELL)
    fills = [fill("6", "99", "0.6"), fill("2", "98", "0.2")]
    report = final_report(params=params, fills=fills, children=ChildStats(sent=3, filled=2), decision_price=D("100"),
                          arrival_mid=D("100"), end_mid=D("97"), started_at=10.0, ended_at=3610.0,
                          market_volume=D("80"), market_vwap=D("98.5"), finish="ENDED")
    assert report.fill_rate == pytest.approx(0.8) and report.duration == 3600.0
    assert report.avg_price == pytest.approx((6 * 99 + 2 * 98) / 8)
    sf = report.shortfall
    assert sf.trading == pytest.approx(6 * 1 + 2 * 2) and sf.opportunity == pytest.approx(2 * 3)
    assert sf.fees == pytest.approx(0.8) and sf.total == pytest.approx(16.8)
    assert sf.total_bps == pytest.approx(16.8 / 1000 * 1e4)
    assert report.slippage_bps == pytest.approx(125.0)
    assert report.vwap_slippage_bps == pytest.approx(-(98.75 - 98.5) / 98.5 * 1e4)  # sold above the VWAP: a gain
    assert report.participation == pytest.approx(0.1) and report.finish == "ENDED"


def test_final_report_measures_a_quote_amount_in_base_at_the_decision_price():
    params = twap(quantity=None, quote_amount=D("1000"))
    report = final_report(params=params, fills=[fill("5", "100")], children=ChildStats(), decision_price=D("100"),
                          arrival_mid=D("100"), end_mid=D("100"), started_at=0.0, ended_at=1.0)
    assert report.ordered == pytest.approx(10.0) and report.fill_rate == pytest.approx(0.5)


# --- pre-trade estimates ----------------------------------------------------------------------


def test_square_root_impact_grows_with_size_like_a_square_root():
    sizes = [0.1, 1.0, 10.0, 100.0]
    impacts = [square_root_cost(quantity=q, price=60000, daily_volatility=0.03, daily_volume=10000).impact_bps
               for q in sizes]
    assert impacts == sorted(impacts) and impacts[0] > 0
    assert impacts[1] / impacts[0] == pytest.approx(math.sqrt(10))
    estimate = square_root_cost(quantity=100, price=60000, daily_volatility=0.03, daily_volume=10000,
                                horizon=3600, spread_bps=2, fee_bps=10)
    assert estimate.impact_bps == pytest.approx(0.03 * 0.1 * 1e4)
    assert estimate.expected_bps == pytest.approx(1 + 30 + 10)
    assert estimate.expected_quote == pytest.approx(41 / 1e4 * 6e6)
    assert estimate.participation == pytest.approx(100 / (10000 / 24))
    assert estimate.risk_bps == pytest.approx(0.03 * math.sqrt(1 / 24 / 3) * 1e4)


def test_almgren_chriss_without_risk_aversion_is_twap():
    est = almgren_chriss_cost(quantity=100, price=60000, daily_volatility=0.03, daily_volume=10000, horizon=DAY,
                              slices=10, spread_bps=2)
    assert est.trajectory == pytest.approx([100 * (1 - j / 10) for j in range(11)])
    spread = 2 / 1e4 * 60000
    eta, gamma, tau = spread / 100, spread / 1000, 0.1
    expected = 0.5 * gamma * 100**2 + spread / 2 * 100 + (eta - 0.5 * gamma * tau) * 100**2 / 1.0
    assert est.expected_quote == pytest.approx(expected)


def closed_form(x, t, n, sigma, eps, eta, gamma, lam):
    """The paper's closed forms for E and V, written out separately from the implementation."""
    tau = t / n
    eta_t = eta - 0.5 * gamma * tau
    kappa = math.acosh(lam * sigma**2 / eta_t * tau**2 / 2 + 1) / tau
    sh = math.sinh
    e = (0.5 * gamma * x**2 + eps * x
         + eta_t * x**2 * math.tanh(0.5 * kappa * tau) * (tau * sh(2 * kappa * t) + 2 * t * sh(kappa * tau))
         / (2 * tau**2 * sh(kappa * t) ** 2))
    v = (0.5 * sigma**2 * x**2 * (tau * sh(kappa * t) * math.cosh(kappa * (t - tau)) - t * sh(kappa * tau))
         / (sh(kappa * t) ** 2 * sh(kappa * tau)))
    return e, v


@pytest.mark.parametrize("lam", [1e-7, 1e-6, 2e-6])
def test_almgren_chriss_matches_the_closed_form_on_the_paper_example(lam):
    # S0 = 50, X = 1e6, T = 5 days, N = 5, sigma = 0.95 $/day^1/2, eps = 1/16, eta = 2.5e-6, gamma = 2.5e-7
    est = almgren_chriss_cost(quantity=1e6, price=50, daily_volatility=0.95 / 50, daily_volume=5e6, horizon=5 * DAY,
                              slices=5, risk_aversion=lam, eta=2.5e-6, gamma=2.5e-7, epsilon=0.0625)
    e, v = closed_form(1e6, 5.0, 5, 0.95, 0.0625, 2.5e-6, 2.5e-7, lam)
    assert est.expected_quote == pytest.approx(e, rel=1e-9)
    assert est.risk_quote == pytest.approx(math.sqrt(v), rel=1e-9)


def test_risk_aversion_trades_cost_for_risk_and_front_loads():
    def run(lam):
        return almgren_chriss_cost(quantity=1e6, price=50, daily_volatility=0.019, daily_volume=5e6, horizon=5 * DAY,
                                   slices=5, risk_aversion=lam, eta=2.5e-6, gamma=2.5e-7, epsilon=0.0625)
    calm, averse = run(0.0), run(2e-6)
    assert averse.expected_quote > calm.expected_quote and averse.risk_quote < calm.risk_quote
    assert averse.trajectory[1] < calm.trajectory[1]
    assert almgren_chriss_trajectory(10.0, 1.0, 4, 0.0) == pytest.approx((10, 7.5, 5, 2.5, 0))


def test_almgren_chriss_cost_is_monotone_in_size():
    costs = [almgren_chriss_cost(quantity=q, price=60000, daily_volatility=0.03, daily_volume=10000, horizon=3600,
                                 slices=60, spread_bps=2).expected_bps for q in (0.1, 1, 10, 100)]
    assert costs == sorted(costs) and len(set(costs)) == 4


def test_almgren_chriss_input_errors():
    with pytest.raises(ValueError, match="spread"):
        almgren_chriss_cost(quantity=1, price=1, daily_volatility=0.1, daily_volume=1, horizon=60, slices=1)
    with pytest.raises(ValueError, match="more slices"):
        almgren_chriss_cost(quantity=1, price=1, daily_volatility=0.1, daily_volume=1, horizon=DAY, slices=1,
                            eta=1e-3, gamma=1.0)
    with pytest.raises(ValueError, match="quantity"):
        square_root_cost(quantity=0, price=1, daily_volatility=0.1, daily_volume=1)


def test_pre_trade_estimate_picks_horizon_and_model_from_the_request():
    market = dict(price=60000.0, daily_volatility=0.03, daily_volume=10000.0, spread_bps=2.0, fee_bps=7.5)
    twap_est = pre_trade_estimate(twap(quantity=D("1")), **market)
    assert twap_est.model == "almgren-chriss" and twap_est.horizon == 3600.0 and len(twap_est.trajectory) == 61
    assert twap_est.fee_bps == 7.5 and twap_est.expected_bps > 7.5
    pov = pre_trade_estimate(twap(quantity=D("10"), duration=None, algo=PovParams(rate=0.1)), **market)
    assert pov.horizon == pytest.approx(10 / (0.1 * 10000) * DAY)
    ice = pre_trade_estimate(twap(quantity=D("1"), duration=None, limit_price=D("60000"),
                                  algo=IcebergParams(display=D("0.1"))), **market)
    assert ice.model == "square-root" and ice.horizon is None and ice.risk_bps == 0.0
    sq = pre_trade_estimate(twap(quantity=D("1")), model="square-root", **market)
    assert sq.model == "square-root"
    quote = pre_trade_estimate(twap(quantity=None, quote_amount=D("60000")), **market)
    assert quote.quantity == pytest.approx(1.0)
    with pytest.raises(ValueError, match="impact model"):
        pre_trade_estimate(twap(), model="magic", **market)
