"""Bus topic names, in one place. The policy each topic is read with is noted.

Publishers and subscribers both import these names, so a typo is an
AttributeError at import time rather than a silent dead topic.
"""

from __future__ import annotations

# market data: feed -> schedulers, risk, positions
QUOTE = "quote"  # Quote; read conflated by (venue, symbol)
DEPTH = "depth"  # Depth; read conflated by (venue, symbol)
TRADE = "trade"  # MarketTrade; read lossless (volume counts)
FEED_STATUS = "feed.status"  # FeedStatus; read conflated by venue

# order entry
RISK_SUBMIT = "risk.submit"  # request/reply: OrderIntent -> Approval | Denial (risk journals + forwards)


def orders(venue: str) -> str:
    """The gateway's inbox: approved OrderIntent, CancelOrder, CancelAllOrders (lossless)."""
    return f"orders.{venue}"


# outcomes: gateway (after the journal) -> positions, risk, schedulers
ORDER_UPDATE = "order.update"  # OrderUpdate; lossless
FILL = "fill"  # Fill; lossless, each trade once
BALANCE = "balance"  # BalanceUpdate; lossless
VENUE_STATUS = "venue.status"  # VenueStatus; lossless (rare)
INSTRUMENTS = "instruments"  # Instrument, or a list of them, when a gateway loads or refreshes exchange info

# risk
RISK_STATE = "risk.state"  # TradingStateChanged
RISK_BREAKER = "risk.breaker"  # BreakerTripped
ORDER_DENIED = "order.denied"  # Denial, for watch/logs

# positions
POSITIONS = "positions"  # PositionsSummary for risk and watch; read conflated (one key)
POSITIONS_QUERY = "positions.query"  # request/reply: PositionsQuery -> PositionsReply
POSITIONS_CONTROL = "positions.control"  # request/reply: tradectl's pnl, report, balances, ack-balances
BALANCE_CHECK = "positions.balance_check"  # BalanceMismatch, BalancesAcknowledged; lossless

# executions
EXEC_STATE = "exec.state"  # ExecutionStateChanged
EXEC_PROGRESS = "exec.progress"  # progress events (conflated by exec id)

# process
LIFECYCLE = "lifecycle"  # ShutdownRequested, ReloadRequested, SetLogLevel
