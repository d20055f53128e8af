"""tradectl's commands over positions: positions, pnl, fills, report, balances, ack-balances.

Each handler runs in the control server's task. Everything but ``fills``
asks the position keeper on topics.POSITIONS_CONTROL, the actor that owns
the answer; ``fills`` reads the journal, which owns that one. Times the
operator types (``--since 24h``, ``2026-01-31``) are parsed here in the
daemon, so any client of the socket gets the same forms.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from actors.positions_core import decimals
from actors.positions_report import PnlView, ReportView, parse_since
from actors.positions_views import (
    AckRequest,
    AckView,
    BalancesRequest,
    BalancesView,
    FillRow,
    FillsView,
    PnlRequest,
    PositionsView,
    PositionsViewRequest,
    ReportRequest,
    fill_time,
)
from daemon import topics
from daemon.bus import Bus, NoHandler, RequestTimeout
from daemon.control import Caller, CommandError
from daemon.journal import Journal, JournalError
from daemon.journal_store import JournaledFill, wall_ms
from daemon.logs import describe_error
from daemon.model import Instrument

if TYPE_CHECKING:
    from daemon.app import Daemon

PAGE = 5_000  # fills per journal read
CONTROL_TIMEOUT = 60.0  # a report over a long history reads a lot of journal


class PositionsArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venue: str | None = None
    symbol: str | None = None
    all: bool = False  # include flat positions


class NoArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class FillsArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exec: str | None = None
    venue: str | None = None
    symbol: str | None = None
    since: str | None = None  # an age (24h, 7d) or an ISO date / date and time (UTC)
    since_ms: int | None = None
    limit: int = 100  # the latest N matching fills; 0 for all


class ReportArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    since: str = "24h"
    until: str | None = None


class BalancesArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venue: str | None = None


class AckArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str = ""
    venue: str | None = None


async def _ask(bus: Bus, body: Any, timeout: float = CONTROL_TIMEOUT) -> Any:
    try:
        return await bus.request(topics.POSITIONS_CONTROL, body, timeout=timeout)
    except NoHandler:
        raise CommandError("unavailable", "the position keeper is not running; see `tradectl status`") from None
    except RequestTimeout:
        raise CommandError("timeout", f"the position keeper did not answer within {timeout:g}s") from None


def register_commands(daemon: Daemon, journal: Journal, instruments: Mapping[tuple[str, str], Instrument]) -> None:
    bus = daemon.bus

    async def positions(args: PositionsArgs, caller: Caller) -> PositionsView:
        return await _ask(bus, PositionsViewRequest(venue=args.venue, symbol=args.symbol, include_flat=args.all))

    async def pnl(args: NoArgs, caller: Caller) -> PnlView:
        return await _ask(bus, PnlRequest())

    async def fills(args: FillsArgs, caller: Caller) -> FillsView:
        if args.limit < 0:
            raise CommandError("bad_args", f"limit: must be 0 (all) or a positive count, got {args.limit}")
        since_ms = args.since_ms
        if args.since is not None:
            since_ms = _since(args.since)
        rows: deque[JournaledFill] = deque(maxlen=args.limit or None)
        matched = 0
        after: int | None = None
        try:
            while True:
                page = await journal.fills(
                    exec_id=args.exec, venue=args.venue, symbol=args.symbol, since_ms=since_ms, after_seq=after, limit=PAGE
                )
                rows.extend(page)
                matched += len(page)
                if len(page) < PAGE:
                    break
                after = page[-1].seq
        except JournalError as exc:
            raise CommandError("unavailable", f"the journal cannot be read: {describe_error(exc)}") from None
        return FillsView(fills=[_fill_row(row, instruments) for row in rows], matched=matched)

    async def report(args: ReportArgs, caller: Caller) -> ReportView:
        now = wall_ms()
        since_ms = _since(args.since, now)
        until_ms = _since(args.until, now) if args.until else now
        if until_ms < since_ms:
            raise CommandError("bad_args", f"until ({args.until}) is before since ({args.since})")
        return await _ask(bus, ReportRequest(since_ms=since_ms, until_ms=until_ms))

    async def balances(args: BalancesArgs, caller: Caller) -> BalancesView:
        return await _ask(bus, BalancesRequest(venue=args.venue))

    async def ack_balances(args: AckArgs, caller: Caller) -> AckView:
        reason = args.reason.strip()
        if not reason:
            raise CommandError("bad_args", "reason: say why the venue's balances are right (it is kept in the audit trail)")
        return await _ask(bus, AckRequest(venue=args.venue, by=caller.user, reason=reason))

    c = daemon.commands
    c.add("positions", positions, PositionsArgs, help="open positions with marks and PnL (all: include flat ones)")
    c.add("pnl", pnl, NoArgs, help="realised and unrealised PnL, fees, equity and performance metrics")
    c.add("fills", fills, FillsArgs, help="fills from the journal (exec, venue, symbol, since, limit)")
    c.add("report", report, ReportArgs, help="transaction costs per execution and venue, and performance, since a time")
    c.add("balances", balances, BalancesArgs, help="ledger balances against the venues', with mismatches")
    c.add(
        "ack-balances",
        ack_balances,
        AckArgs,
        help="adopt the venues' balances after a mismatch (needs a reason; audited)",
        audited=True,
    )


def _since(text: str, now_ms: int | None = None) -> int:
    try:
        return parse_since(text, wall_ms() if now_ms is None else now_ms)
    except ValueError as exc:
        raise CommandError("bad_args", str(exc)) from None


def _fill_row(row: JournaledFill, instruments: Mapping[tuple[str, str], Instrument]) -> FillRow:
    f = row.fill
    instrument = instruments.get((f.venue, f.symbol))
    return FillRow(
        seq=row.seq,
        time_ms=fill_time(row),
        venue=f.venue,
        symbol=f.symbol,
        side=f.side.value,
        qty=f.qty,
        price=f.price,
        fee=f.fee,
        fee_asset=f.fee_asset,
        maker=f.is_maker,
        exec_id=row.exec_id,
        client_order_id=f.client_order_id,
        trade_id=f.trade_id,
        price_decimals=decimals(instrument.tick_size) if instrument else _places(f.price),
        qty_decimals=decimals(instrument.step_size) if instrument else _places(f.qty),
    )


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0
