"""What the position keeper's operator commands exchange: requests to the actor, and views.

The requests travel on topics.POSITIONS_CONTROL between the control
commands (`actors.positions_commands`) and the actor; they are internal to
this part. The views are the JSON tradectl receives: exact decimals plus the
precision to show them with (`price_decimals`, `qty_decimals` from the
instrument's tick and step; `money_decimals` for the reporting currency).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from actors.positions_core import BalanceRow
from daemon.journal_store import JournaledFill
from daemon.messages import BalanceMismatch, BalancesAcknowledged, PositionsSummary


# ---------------------------------------------------------------------------------------
# Requests tradectl's commands send to the actor (internal to this part)
# ---------------------------------------------------------------------------------------


class PositionsViewRequest(msgspec.Struct, frozen=True, kw_only=True):
    venue: str | None = None
    symbol: str | None = None
    include_flat: bool = False


class PnlRequest(msgspec.Struct, frozen=True, kw_only=True):
    pass


class ReportRequest(msgspec.Struct, frozen=True, kw_only=True):
    since_ms: int
    until_ms: int


class BalancesRequest(msgspec.Struct, frozen=True, kw_only=True):
    venue: str | None = None


class AckRequest(msgspec.Struct, frozen=True, kw_only=True):
    venue: str | None
    by: str
    reason: str


# ---------------------------------------------------------------------------------------
# Views (JSON for tradectl)
# ---------------------------------------------------------------------------------------


class PositionRow(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    base: str
    quote: str
    side: str
    quantity: Decimal
    avg_entry_price: Decimal | None
    mark: Decimal | None
    notional: Decimal | None  # |quantity| x mark, quote currency
    unrealised_pnl: Decimal | None
    realised_pnl: Decimal
    fees: Decimal
    fills: int
    opened_ms: int
    last_fill_ms: int
    price_decimals: int
    qty_decimals: int


class PositionsView(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    money_decimals: int
    positions: list[PositionRow]
    summary: PositionsSummary
    pending: tuple[str, ...] = ()


class BalancesView(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    balance_grace: float
    rows: list[BalanceRow]
    mismatches: list[BalanceMismatch]


class AckView(msgspec.Struct, frozen=True, kw_only=True):
    acknowledged: list[BalancesAcknowledged]


class FillRow(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    time_ms: int  # the venue's trade time, else when it was journaled
    venue: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    maker: bool
    exec_id: str | None
    client_order_id: str
    trade_id: str
    price_decimals: int
    qty_decimals: int


class FillsView(msgspec.Struct, frozen=True, kw_only=True):
    fills: list[FillRow]
    matched: int  # fills that matched the filter; `fills` holds the latest `limit` of them


def fill_time(row: JournaledFill) -> int:
    """A fill's time: the venue's trade time, else when it was journaled."""
    return row.fill.venue_ms or row.recorded_ms
