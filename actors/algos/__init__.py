"""Execution algorithms: pure code that decides which child orders should work.

A scheduler drives one algorithm per execution. Nothing here does I/O,
reads a clock or knows about trio; every time is passed in.

    algo = make_algorithm(params)            # validated; ParameterError names the field
    ledger = ChildLedger(exec_id, params)
    guard = VolatilityGuard(config)          # actors.algos.volatility

    on every event (quote, public trade, order update, fill, denial) and at
    decision.wake_at:
        feed the event in: ledger.apply_update / apply_fill / denied /
        outcome_unknown, guard.observe(now, mid), count public volume
        decision = algo.decide(now, market, ledger.view())
        for place in decision.place:   intent = ledger.open(place, now)  -> risk sentinel
        for cancel in decision.cancel: ledger.cancel_sent(cancel.client_order_id, now) -> gateway
        stop when decision.finished is set

    pause (volatility verdict or operator): act on algo.cancel_all(view, reason)
    and stop asking until resumed; the schedule catches up within its bounds.

Progress and the final report come from `actors.algos.analytics`
(`progress`, `final_report`); the pre-trade estimate from
`actors.algos.impact.pre_trade_estimate`.
"""

from actors.algos.engine import Algorithm
from actors.algos.iceberg import Iceberg
from actors.algos.ledger import ChildLedger, ChildStats, UnknownChild
from actors.algos.params import (
    ChildStyle,
    ExecutionParams,
    IcebergParams,
    ParameterError,
    PovParams,
    TwapParams,
    Urgency,
    VwapParams,
    amend,
    parse_params,
    validate,
)
from actors.algos.pov import Pov
from actors.algos.state import CancelChild, Decision, Finish, LiveChild, MarketState, OrderView, PlaceChild
from actors.algos.twap import Twap
from actors.algos.vwap import Vwap

ALGORITHMS: dict[type, type[Algorithm]] = {
    TwapParams: Twap,
    VwapParams: Vwap,
    IcebergParams: Iceberg,
    PovParams: Pov,
}


def make_algorithm(params: ExecutionParams) -> Algorithm:
    """The algorithm for `params` (validated; raises ParameterError)."""
    return ALGORITHMS[type(params.algo)](params)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "CancelChild",
    "ChildLedger",
    "ChildStats",
    "ChildStyle",
    "Decision",
    "ExecutionParams",
    "Finish",
    "Iceberg",
    "IcebergParams",
    "LiveChild",
    "MarketState",
    "OrderView",
    "ParameterError",
    "PlaceChild",
    "Pov",
    "PovParams",
    "Twap",
    "TwapParams",
    "UnknownChild",
    "Urgency",
    "Vwap",
    "VwapParams",
    "amend",
    "make_algorithm",
    "parse_params",
    "validate",
]
