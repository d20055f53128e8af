"""The protocol between tradingd's actors.

Every message that crosses an actor boundary is defined here, as a frozen,
tagged `msgspec.Struct`. Inside the process messages travel as objects; they
are encoded only at the edges (journal, control socket), where the tag names
the type. Read top to bottom, this module tells what the system does:

    market data  feed -> schedulers, risk, positions       (conflated)
    orders       scheduler -> risk -> journal -> gateway    (lossless)
    outcomes     gateway -> journal -> positions, risk, scheduler (lossless)
    positions    position keeper -> risk (equity, balance mismatches)
    control      control server -> owning actor (request/reply)
    lifecycle    supervisors -> status, logs, systemd

Times: `ts` is trio's monotonic clock (seconds, float); `*_ms` fields are
wall-clock UTC milliseconds from the venue or the edge.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from daemon.model import OrderStatus, OrderType, Side, TimeInForce, TradingState


class Message(msgspec.Struct, frozen=True, tag=True, tag_field="type", kw_only=True):
    """Base of every actor message; the class name is the tag."""


# ---------------------------------------------------------------------------------------
# Lifecycle and supervision
# ---------------------------------------------------------------------------------------


class ActorStarted(Message):
    actor: str


class ActorStopped(Message):
    actor: str
    reason: str = "normal"


class ActorCrashed(Message):
    actor: str
    error: str


class ActorRestarting(Message):
    actor: str
    restarts: int
    delay: float


class SupervisorGaveUp(Message):
    """Restart intensity exceeded: the supervisor stops and escalates."""

    supervisor: str
    restarts: int
    period: float
    last_error: str


class Ready(Message):
    """Every core actor started and the venues are reconciled."""


class ShutdownRequested(Message):
    reason: str
    cancel_orders: bool = False
    emergency: bool = False


class ReloadRequested(Message):
    reason: str = "SIGHUP"


class SetLogLevel(Message):
    level: str
    actor: str | None = None


# ---------------------------------------------------------------------------------------
# Status (request/reply on the bus)
# ---------------------------------------------------------------------------------------


class StatusRequest(Message):
    pass


class ActorStatus(Message):
    name: str
    state: str  # starting | running | restarting | stopped | failed
    restarts: int = 0
    last_error: str | None = None
    started_at: float | None = None


class StatusReply(Message):
    pid: int
    version: str
    uptime: float
    trading_state: TradingState
    health: str  # HEALTHY | DEGRADED | CRITICAL
    reasons: tuple[str, ...] = ()
    actors: tuple[ActorStatus, ...] = ()
    extra: dict[str, Any] = {}


# ---------------------------------------------------------------------------------------
# Market data (conflated per key)
# ---------------------------------------------------------------------------------------


class Quote(Message):
    """Top of book. Conflated per (venue, symbol): only the latest matters."""

    venue: str
    symbol: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    ts: float
    venue_ms: int = 0

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


class Depth(Message):
    """The best levels of a local book, best first. Conflated per (venue, symbol)."""

    venue: str
    symbol: str
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    ts: float
    update_id: int = 0


class MarketTrade(Message):
    """A public trade. Every one is delivered (VWAP and POV count volume)."""

    venue: str
    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    taker_side: Side
    ts: float
    venue_ms: int = 0


class FeedStatus(Message):
    """Connection and freshness of one venue's market data.

    state: connecting | syncing | live | stale | down
    """

    venue: str
    state: str
    symbols: tuple[str, ...] = ()
    reconnects: int = 0
    last_frame_age: float | None = None
    detail: str = ""


# ---------------------------------------------------------------------------------------
# Orders: intent -> risk -> journal -> gateway
# ---------------------------------------------------------------------------------------


class OrderIntent(Message):
    """A child order an execution wants working. `client_order_id` is
    derived from (exec_id, seq) so that a re-send can never make a second order."""

    client_order_id: str
    exec_id: str
    seq: int
    venue: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce | None = TimeInForce.GTC
    quote_quantity: Decimal | None = None
    reduce_only: bool = False
    iceberg_qty: Decimal | None = None  # visible size of a native venue iceberg
    ts: float = 0.0


class Approval(Message):
    intent: OrderIntent


class Denial(Message):
    """The sentinel refused the intent. `code` is stable (e.g. MAX_ORDER_NOTIONAL)."""

    intent: OrderIntent
    code: str
    reason: str


class CancelOrder(Message):
    venue: str
    symbol: str
    client_order_id: str
    reason: str = ""


class CancelAllOrders(Message):
    venue: str
    symbol: str | None = None
    reason: str = ""


class OrderUpdate(Message):
    """What we know of an order's state at the venue, after each change."""

    venue: str
    symbol: str
    client_order_id: str
    status: OrderStatus
    side: Side
    quantity: Decimal
    filled_qty: Decimal = Decimal(0)
    price: Decimal | None = None
    avg_price: Decimal | None = None
    venue_order_id: str | None = None
    reason: str = ""
    venue_ms: int = 0
    ts: float = 0.0
    quote_filled: Decimal | None = None  # cumulative quote traded (Binance `Z`), exact unlike avg_price


class Fill(Message):
    """One execution of one of our orders. Unique by (venue, symbol, trade_id, side): Binance numbers
    trades per symbol, and a self-trade (our buy meets our sell) is one trade id with a fill on each side."""

    venue: str
    symbol: str
    client_order_id: str
    trade_id: str
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_asset: str
    is_maker: bool
    venue_order_id: str | None = None
    venue_ms: int = 0
    ts: float = 0.0


class BalanceUpdate(Message):
    venue: str
    asset: str
    free: Decimal
    locked: Decimal
    venue_ms: int = 0


class VenueStatus(Message):
    """Order-entry health of one venue. state: up | rate_limited | banned | down."""

    venue: str
    state: str
    detail: str = ""
    retry_after: float | None = None


# ---------------------------------------------------------------------------------------
# Risk
# ---------------------------------------------------------------------------------------


class TradingStateChanged(Message):
    """The trading state moved. With `venue`, only that venue's state changed
    (a per-venue REDUCING for stale data or a down venue); without, the global one."""

    state: TradingState
    previous: TradingState
    reason: str
    by: str
    venue: str | None = None


class BreakerTripped(Message):
    """A breaker latched. `kill` asks for the emergency stop (DESIGN §6) on top of `action`."""

    breaker: str
    detail: str
    action: TradingState
    venue: str | None = None
    kill: bool = False


# ---------------------------------------------------------------------------------------
# Positions: the position keeper -> risk sentinel, watch, anyone who asks
# ---------------------------------------------------------------------------------------


class PositionsSummary(Message):
    """Equity and PnL in the reporting currency, on topics.POSITIONS (read conflated).

    Published after fills (at a bounded rate) and on every sample interval, for
    the daily-loss, drawdown and VaR breakers. `equity` values every balance at
    the marks; when `equity_complete` is false some asset had no price
    (`missing`) and the figure is too low, so a breaker must not read it as a
    loss. `balance_mismatches` names the venues whose balances differ from the
    ledger and are not acknowledged yet: a restarted sentinel learns of them
    from the next summary.
    """

    currency: str
    equity: Decimal
    equity_complete: bool
    realised_pnl: Decimal  # net of fees
    unrealised_pnl: Decimal
    fees: Decimal
    gross_exposure: Decimal
    net_exposure: Decimal
    open_positions: int
    utc_ms: int
    ts: float
    missing: tuple[str, ...] = ()
    pending_fills: int = 0  # fills waiting for their instrument's definition
    balance_mismatches: tuple[str, ...] = ()


class PositionsQuery(Message):
    """Request on topics.POSITIONS_QUERY, answered with a `PositionsReply`."""

    venue: str | None = None
    symbol: str | None = None
    include_flat: bool = False


class PositionEntry(Message):
    venue: str
    symbol: str
    base: str
    quote: str
    quantity: Decimal  # signed: positive long, negative short
    avg_entry_price: Decimal | None
    mark: Decimal | None
    realised_pnl: Decimal  # quote currency, net of fees
    unrealised_pnl: Decimal | None  # None without a mark
    fees: Decimal
    last_fill_ms: int = 0


class PositionsReply(Message):
    """`pending` lists "venue:symbol" whose fills wait for the instrument's
    definition: their quantities are not in `positions` yet."""

    positions: tuple[PositionEntry, ...]
    summary: PositionsSummary
    pending: tuple[str, ...] = ()


class BalanceDifference(Message):
    asset: str
    ours: Decimal
    venue_total: Decimal  # free + locked
    difference: Decimal  # venue_total - ours
    tolerance: Decimal


class BalanceMismatch(Message):
    """On topics.BALANCE_CHECK: balances at `venue` differ from the ledger beyond
    tolerance for longer than the grace period. Latched until a
    `BalancesAcknowledged` for the venue; trading stays HALTED until then."""

    venue: str
    differences: tuple[BalanceDifference, ...]
    utc_ms: int


class BalancesAcknowledged(Message):
    """On topics.BALANCE_CHECK: an operator (`by`) adopted the venue's balances
    as the ledger's (`tradectl ack-balances`); the venue's mismatch is cleared."""

    venue: str
    by: str
    reason: str
    adopted: tuple[BalanceUpdate, ...]
    utc_ms: int


# ---------------------------------------------------------------------------------------
# Journal records: what executions and risk limits leave in the durable record
# ---------------------------------------------------------------------------------------


class ExecutionStateChanged(Message):
    """An execution moved along PENDING -> RUNNING <-> PAUSED -> COMPLETED | CANCELLED | FAILED
    (or INTERRUPTED after a restart). Journaled, so the history survives restarts."""

    exec_id: str
    state: str
    previous: str | None = None
    reason: str = ""
    by: str = ""


class ExecutionCheckpoint(Message):
    """What a scheduler needs to resume an execution after a restart.

    `next_seq` is the next child sequence number; the journal also knows the
    highest one it recorded an intent for, so a resumed execution never reuses
    a client order id even if it crashed between an intent and its checkpoint.
    `algo_state` is the algorithm's own JSON-able state.
    """

    exec_id: str
    next_seq: int
    filled_qty: Decimal
    avg_price: Decimal | None = None
    algo_state: dict[str, Any] = {}


class ExecutionProgress(Message):
    """A running execution at one instant, on topics.EXEC_PROGRESS (`tradectl watch ID`).

    Published at a bounded rate while it works and once more when it ends.
    Percentages are of the parent (its quantity, or its quote amount);
    `schedule_deviation_pct` is filled minus planned (negative: behind).
    `slippage_bps` is against the arrival mid, positive = cost for buys and
    sells alike; `participation` is our fills over the market volume since
    the start. Child counts: `children_sent` reached the risk sentinel's
    approval, `children_working` may still trade (UNKNOWN ones included).
    """

    exec_id: str
    state: str
    algo: str
    venue: str
    symbol: str
    side: Side
    quantity: Decimal | None  # the parent in base units, or None for a quote amount
    quote_amount: Decimal | None
    filled: Decimal
    filled_quote: Decimal
    filled_pct: float
    avg_price: float | None = None
    schedule_pct: float | None = None
    schedule_deviation_pct: float | None = None
    slippage_bps: float | None = None
    participation: float | None = None
    elapsed: float = 0.0
    remaining: float | None = None  # seconds to the end time, when there is one
    children_sent: int = 0
    children_working: int = 0
    children_filled: int = 0
    children_cancelled: int = 0
    children_rejected: int = 0  # venue rejects and risk denials
    note: str = ""


class RiskLimitChanged(Message):
    """An operator (`by`) changed a risk limit; `limit` names it (e.g. `max_order_notional`)."""

    limit: str
    value: str | None  # as the operator gave it: limits are decimals, booleans, names
    by: str
    previous: str | None = None
    reason: str = ""


# ---------------------------------------------------------------------------------------
# Control events (streamed to `watch`)
# ---------------------------------------------------------------------------------------


class VenueCancelReport(Message):
    """One venue's part of an emergency stop: cancel-all, verified by an open-orders query."""

    venue: str
    cancelled: int
    still_open: tuple[str, ...] = ()  # client order ids the venue still reports open
    attempts: int = 0
    elapsed: float = 0.0
    verified: bool = False  # an open-orders query confirmed the count
    error: str = ""


class FlattenReport(Message):
    venue: str
    symbol: str
    quantity: Decimal  # signed position before flattening
    client_order_id: str | None = None
    outcome: str = ""


class KillReport(Message):
    """The answer to `tradectl kill`: what the emergency stop did, and how long it took."""

    reason: str
    by: str
    venues: tuple[VenueCancelReport, ...] = ()
    executions_stopped: int = 0
    flattened: tuple[FlattenReport, ...] = ()
    elapsed: float = 0.0
    complete: bool = False  # every venue verified with zero open orders


class LogLine(Message):
    """A formatted log line, kept in the ring buffer and streamed to `logs -f`."""

    level: str
    actor: str
    event: str
    line: str
    ts_ms: int


# The union the journal and the control socket decode from their wire format.
ANY_MESSAGE = (
    ActorStarted
    | ActorStopped
    | ActorCrashed
    | ActorRestarting
    | SupervisorGaveUp
    | Ready
    | ShutdownRequested
    | ReloadRequested
    | SetLogLevel
    | StatusRequest
    | ActorStatus
    | StatusReply
    | Quote
    | Depth
    | MarketTrade
    | FeedStatus
    | OrderIntent
    | Approval
    | Denial
    | CancelOrder
    | CancelAllOrders
    | OrderUpdate
    | Fill
    | BalanceUpdate
    | VenueStatus
    | TradingStateChanged
    | BreakerTripped
    | PositionsSummary
    | PositionsQuery
    | PositionEntry
    | PositionsReply
    | BalanceDifference
    | BalanceMismatch
    | BalancesAcknowledged
    | ExecutionStateChanged
    | ExecutionCheckpoint
    | ExecutionProgress
    | RiskLimitChanged
    | VenueCancelReport
    | FlattenReport
    | KillReport
    | LogLine
)
