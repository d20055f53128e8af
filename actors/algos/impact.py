"""Pre-trade cost estimates, shown to the operator before an execution starts.

Two models, both standard and both crude; they give an order of magnitude,
not a promise:

- square root: impact = Y * sigma_daily * sqrt(Q / daily volume), plus half
  the spread and the fees. Independent of the horizon; the horizon only sets
  the timing risk (the spread of outcomes from the price moving meanwhile).
- Almgren-Chriss (2000): the optimal trajectory for a risk aversion lambda
  (lambda = 0 gives TWAP) with linear temporary impact eta, permanent impact
  gamma and a fixed half-spread cost epsilon per unit. Unless given, the
  impacts are calibrated from the spread the way the paper does: trading 1%
  of the daily volume per day costs one spread of temporary impact, and
  trading 10% of it moves the price permanently by one spread.

Time is in days of 86 400 seconds (crypto trades around the clock);
volatility is the daily standard deviation of returns (0.03 = 3%).
"""

from __future__ import annotations

import math

import msgspec

from actors.algos.params import ExecutionParams, PovParams, TwapParams

DAY = 86_400.0
BPS = 10_000.0


class CostEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """Expected cost of an execution, in bps of its value and in the quote currency.

    expected_bps = spread_bps + impact_bps + fee_bps. risk_bps is one standard
    deviation of the cost from price moves during the execution (0 when the
    horizon is unknown). participation is the quantity over the market
    volume expected during the horizon (None when the horizon is unknown).
    """

    model: str
    quantity: float
    price: float
    notional: float
    horizon: float | None
    participation: float | None
    spread_bps: float
    impact_bps: float
    fee_bps: float
    expected_bps: float
    expected_quote: float
    risk_bps: float
    risk_quote: float
    trajectory: tuple[float, ...] = ()


def _check_inputs(quantity: float, price: float, daily_volatility: float, daily_volume: float) -> None:
    for name, value in (("quantity", quantity), ("price", price), ("daily_volume", daily_volume)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value}")
    if not (math.isfinite(daily_volatility) and daily_volatility >= 0):
        raise ValueError(f"daily_volatility must be non-negative, got {daily_volatility}")


def square_root_cost(
    *,
    quantity: float,
    price: float,
    daily_volatility: float,
    daily_volume: float,
    horizon: float | None = None,
    spread_bps: float = 0.0,
    fee_bps: float = 0.0,
    coefficient: float = 1.0,
) -> CostEstimate:
    """The square-root impact estimate for `quantity` (base units) over `horizon` seconds."""
    _check_inputs(quantity, price, daily_volatility, daily_volume)
    impact_bps = coefficient * daily_volatility * math.sqrt(quantity / daily_volume) * BPS
    half_spread = spread_bps / 2.0
    expected_bps = half_spread + impact_bps + fee_bps
    notional = quantity * price
    risk_bps = 0.0
    participation = None
    if horizon is not None and horizon > 0:
        days = horizon / DAY
        # a position worked off linearly carries price risk sigma * sqrt(T / 3)
        risk_bps = daily_volatility * math.sqrt(days / 3.0) * BPS
        participation = quantity / (daily_volume * days)
    return CostEstimate(
        model="square-root",
        quantity=quantity,
        price=price,
        notional=notional,
        horizon=horizon,
        participation=participation,
        spread_bps=half_spread,
        impact_bps=impact_bps,
        fee_bps=fee_bps,
        expected_bps=expected_bps,
        expected_quote=expected_bps / BPS * notional,
        risk_bps=risk_bps,
        risk_quote=risk_bps / BPS * notional,
    )


def almgren_chriss_trajectory(quantity: float, horizon_days: float, slices: int, kappa: float) -> tuple[float, ...]:
    """Holdings x_0..x_N: x_j = X sinh(kappa (T - t_j)) / sinh(kappa T); kappa = 0 is linear."""
    tau = horizon_days / slices
    if kappa * horizon_days < 1e-9:
        return tuple(quantity * (1.0 - j / slices) for j in range(slices + 1))
    denominator = math.sinh(kappa * horizon_days)
    return tuple(quantity * math.sinh(kappa * (horizon_days - j * tau)) / denominator for j in range(slices + 1))


def almgren_chriss_cost(
    *,
    quantity: float,
    price: float,
    daily_volatility: float,
    daily_volume: float,
    horizon: float,
    slices: int,
    spread_bps: float = 0.0,
    fee_bps: float = 0.0,
    risk_aversion: float = 0.0,
    eta: float | None = None,
    gamma: float | None = None,
    epsilon: float | None = None,
) -> CostEstimate:
    """Expected cost and risk of the Almgren-Chriss trajectory over `horizon` seconds.

    risk_aversion is lambda in 1/quote-currency; eta, gamma and epsilon are in
    quote currency per unit (per unit per day for eta); missing ones are
    calibrated from `spread_bps` and `daily_volume`.
    """
    _check_inputs(quantity, price, daily_volatility, daily_volume)
    if not (horizon > 0 and slices >= 1):
        raise ValueError("horizon must be positive and slices at least 1")
    if risk_aversion < 0:
        raise ValueError("risk_aversion must be non-negative")
    spread = spread_bps / BPS * price
    if eta is None:
        if spread <= 0:
            raise ValueError("give spread_bps (or eta) to calibrate the temporary impact")
        eta = spread / (0.01 * daily_volume)
    if gamma is None:
        gamma = spread / (0.1 * daily_volume)
    if epsilon is None:
        epsilon = spread / 2.0
    sigma = daily_volatility * price
    x, big_t, n = quantity, horizon / DAY, slices
    tau = big_t / n
    eta_tilde = eta - 0.5 * gamma * tau
    if eta_tilde <= 0:
        raise ValueError("permanent impact outweighs temporary impact at this slice length; use more slices")
    kappa_tilde_sq = risk_aversion * sigma**2 / eta_tilde
    kappa = math.acosh(kappa_tilde_sq * tau**2 / 2.0 + 1.0) / tau
    holdings = almgren_chriss_trajectory(x, big_t, n, kappa)
    trades = [holdings[k - 1] - holdings[k] for k in range(1, n + 1)]
    permanent = 0.5 * gamma * x**2
    fixed = epsilon * sum(abs(t) for t in trades)
    temporary = eta_tilde / tau * sum(t * t for t in trades)
    variance = sigma**2 * tau * sum(h * h for h in holdings[1:])
    notional = x * price

    def bps(value: float) -> float:
        return value / notional * BPS

    spread_part = bps(fixed)
    impact_part = bps(permanent + temporary)
    expected_bps = spread_part + impact_part + fee_bps
    risk_quote = math.sqrt(variance)
    return CostEstimate(
        model="almgren-chriss",
        quantity=x,
        price=price,
        notional=notional,
        horizon=horizon,
        participation=x / (daily_volume * big_t),
        spread_bps=spread_part,
        impact_bps=impact_part,
        fee_bps=fee_bps,
        expected_bps=expected_bps,
        expected_quote=expected_bps / BPS * notional,
        risk_bps=bps(risk_quote),
        risk_quote=risk_quote,
        trajectory=holdings,
    )


def pre_trade_estimate(
    params: ExecutionParams,
    *,
    price: float,
    daily_volatility: float,
    daily_volume: float,
    spread_bps: float,
    fee_bps: float = 0.0,
    model: str = "almgren-chriss",
    risk_aversion: float = 0.0,
) -> CostEstimate:
    """The estimate for an execution request, from the instrument's market figures.

    The horizon is the request's; a POV without one is expected to last
    quantity / (rate x daily volume) days; an Iceberg without one has no
    horizon and gets the square-root estimate without timing risk.
    """
    quantity = float(params.quantity) if params.quantity is not None else float(params.total) / price
    horizon = params.horizon
    if horizon is None and isinstance(params.algo, PovParams):
        horizon = quantity / (params.algo.rate * daily_volume) * DAY
    if model not in ("almgren-chriss", "square-root"):
        raise ValueError(f"unknown impact model {model!r}; use almgren-chriss or square-root")
    if model == "square-root" or horizon is None:
        return square_root_cost(
            quantity=quantity,
            price=price,
            daily_volatility=daily_volatility,
            daily_volume=daily_volume,
            horizon=horizon,
            spread_bps=spread_bps,
            fee_bps=fee_bps,
        )
    if isinstance(params.algo, TwapParams) and params.algo.slices is not None:
        slices = params.algo.slices
    else:
        slices = max(1, min(round(horizon / 60.0), 1000))
    return almgren_chriss_cost(
        quantity=quantity,
        price=price,
        daily_volatility=daily_volatility,
        daily_volume=daily_volume,
        horizon=horizon,
        slices=slices,
        spread_bps=spread_bps,
        fee_bps=fee_bps,
        risk_aversion=risk_aversion,
    )
