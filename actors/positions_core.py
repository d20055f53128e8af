"""The position keeper's pure core: the ledger, and what has to be remembered around it.

`actors.ledger.Ledger` does the accounting. This class adds the three things
a long-running keeper needs on top, without any I/O or clock of its own (the
actor passes `now`, trio's monotonic time, and wall-clock milliseconds in):

Fills before their instrument
    The ledger can only book a fill once it knows the instrument (base and
    quote assets). At start-up the journal is replayed before the gateways
    have loaded their venues' instruments, so fills of unknown instruments
    wait here, in journal order, and are booked the moment the instrument is
    added. Until then their venue's balances are not compared with the venue:
    the comparison would be against a ledger that is known to be incomplete.

Balances adopted from the venues
    The ledger's balances are whatever was adopted from a venue plus every
    fill since. An adoption (the venue's first report of an asset, or an
    operator's `ack-balances`) is journaled as two snapshots: what the ledger
    held just before (`SOURCE_BEFORE`) and what it took (`SOURCE_ADOPTED`).
    Replaying applies the *difference*, so adoptions and fills commute: the
    replay needs no ordering between the fill and balance tables and rebuilds
    exactly the balances the keeper had, even if a fill arrived while the
    adoption was being journaled.

Balance checks with a grace period
    The venue's push of a new balance and the fill that caused it travel on
    separate streams and arrive in either order, so a difference is only a
    *suspect* at first. If it is still there after `balance_grace` seconds it
    is declared: a `BalanceMismatch` that stays latched until an operator
    acknowledges the venue's balances.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Literal

import msgspec

from actors.ledger import AppliedFill, CostMethod, EquityCurve, Ledger, LedgerError, PositionSnapshot
from daemon.messages import (
    BalanceDifference,
    BalanceMismatch,
    BalanceUpdate,
    Fill,
    PositionEntry,
    PositionsSummary,
    Quote,
)
from daemon.model import Instrument, Side

ZERO = Decimal(0)

SOURCE_BEFORE = "positions.ledger"  # the ledger's balances just before an adoption
SOURCE_ADOPTED = "positions.adopted"  # the venue balances the ledger took
ADJUSTMENT_SOURCES = (SOURCE_BEFORE, SOURCE_ADOPTED)

InstrumentKey = tuple[str, str]


class PositionsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[positions]`` section.

    Decimals are strings in TOML (``BTC = "0.00000001"``). `rates` are fixed
    prices in the reporting currency for assets no instrument prices (e.g.
    ``USDC = "1"``). `balance_tolerance` is per asset; other assets use
    `default_tolerance`.
    """

    method: Literal["average", "fifo", "lifo"] = "average"
    currency: str = "USDT"
    equity_interval: float = 60.0  # seconds between equity curve samples
    publish_interval: float = 1.0  # at most one PositionsSummary per this many seconds after fills
    balance_grace: float = 30.0  # seconds a difference may last: fills and balance pushes race
    balance_tolerance: dict[str, Decimal] = {}
    default_tolerance: Decimal = ZERO
    rates: dict[str, Decimal] = {}
    curve_points: int = 2880  # equity samples kept in memory (older ones are thinned, see EquityCurve)
    money_decimals: int = 2  # how tradectl shows amounts in the reporting currency

    def __post_init__(self) -> None:
        if not self.currency:
            raise ValueError("currency: must name an asset, e.g. USDT")
        for key in ("equity_interval", "publish_interval"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")
        if self.balance_grace < 0:
            raise ValueError(f"balance_grace: must not be negative, got {self.balance_grace}")
        if not self.default_tolerance.is_finite() or self.default_tolerance < 0:
            raise ValueError(f"default_tolerance: must not be negative, got {self.default_tolerance}")
        for asset, value in self.balance_tolerance.items():
            if not value.is_finite() or value < 0:
                raise ValueError(f"balance_tolerance.{asset}: must not be negative, got {value}")
        for asset, value in self.rates.items():
            if not value.is_finite() or value <= 0:
                raise ValueError(f"rates.{asset}: must be a positive price in {self.currency}, got {value}")
        if self.curve_points < 3:
            raise ValueError(f"curve_points: must be at least 3, got {self.curve_points}")
        if not 0 <= self.money_decimals <= 18:
            raise ValueError(f"money_decimals: must be between 0 and 18, got {self.money_decimals}")

    def tolerance(self, asset: str) -> Decimal:
        return self.balance_tolerance.get(asset, self.default_tolerance)


def decimals(unit: Decimal) -> int:
    """Digits after the point of a tick or step size: 0.01 -> 2, 1 -> 0."""
    exponent = unit.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


class FillOutcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    PENDING = "pending"  # waiting for the instrument's definition
    REFUSED = "refused"  # the ledger cannot book it (see the error)


class Adoption(msgspec.Struct, frozen=True, kw_only=True):
    """Venue balances taken as the ledger's: per asset, what the ledger held
    (`before`) and what it takes (`after`). Applied as the difference."""

    venue: str
    before: tuple[BalanceUpdate, ...]
    after: tuple[BalanceUpdate, ...]
    by: str = ""
    reason: str = ""

    def deltas(self) -> dict[str, Decimal]:
        held = {b.asset: b.free + b.locked for b in self.before}
        return {b.asset: b.free + b.locked - held.get(b.asset, ZERO) for b in self.after}


class RefusedFill(msgspec.Struct, frozen=True, kw_only=True):
    fill: Fill
    error: str


class BalanceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One (venue, asset) for `tradectl balances`.

    status: ok | suspect (differs, within the grace period) | MISMATCH
    (declared, latched until acknowledged) | stale (the ledger moved since the
    venue's last figure, which is compared when the venue reports again) |
    unchecked (no live venue figure, or fills of the venue still wait for
    their instrument).
    """

    venue: str
    asset: str
    ours: Decimal | None
    venue_total: Decimal | None
    venue_free: Decimal | None
    venue_locked: Decimal | None
    difference: Decimal | None
    tolerance: Decimal
    venue_ms: int
    status: str


class PositionKeeper:
    """Ledger, pending fills, balance checks. Plain and synchronous: the actor feeds it."""

    def __init__(self, config: PositionsConfig, instruments: Iterable[Instrument] = ()) -> None:
        self.config = config
        interval_ms = max(1, int(config.equity_interval * 1000 * 0.9))  # a little slack for wall-clock jitter
        self.ledger = Ledger(
            method=CostMethod(config.method),
            currency=config.currency,
            rates={(asset, config.currency): price for asset, price in config.rates.items()},
            curve=EquityCurve(interval_ms=interval_ms, max_points=config.curve_points),
        )
        self._pending: dict[InstrumentKey, list[Fill]] = {}
        self._pending_ids: set[tuple[str, str, str, Side]] = set()
        self._refused_ids: set[tuple[str, str, str, Side]] = set()
        self.refused: deque[RefusedFill] = deque(maxlen=100)
        self.refused_count = 0
        self.fills_applied = 0
        self.duplicates = 0
        self.bad_quotes = 0
        self._venue_view: dict[tuple[str, str], BalanceUpdate] = {}
        self._live: set[tuple[str, str]] = set()
        self._suspects: dict[tuple[str, str], float] = {}
        self._declared: dict[str, dict[str, BalanceDifference]] = {}
        self.add_instruments(instruments)

    # --- instruments and fills -----------------------------------------------------------
    def add_instruments(self, instruments: Iterable[Instrument]) -> list[tuple[FillOutcome, AppliedFill | None]]:
        """Make instruments known; book the fills that waited for them, in journal order."""
        booked: list[tuple[FillOutcome, AppliedFill | None]] = []
        for instrument in instruments:
            key = (instrument.venue, instrument.symbol)
            if self.ledger.instrument(*key) != instrument:
                self.ledger.add_instrument(instrument)
            waiting = self._pending.pop(key, None)
            if waiting:
                for fill in waiting:
                    self._pending_ids.discard((fill.venue, fill.symbol, fill.trade_id, fill.side))
                    booked.append(self.apply_fill(fill))
        return booked

    def apply_fill(self, fill: Fill) -> tuple[FillOutcome, AppliedFill | None]:
        # trade ids are per symbol at Binance, and a self-trade is one id with a fill on each side
        ident = (fill.venue, fill.symbol, fill.trade_id, fill.side)
        if self.ledger.has_fill(fill.venue, fill.trade_id, fill.symbol, fill.side) or ident in self._pending_ids or ident in self._refused_ids:
            self.duplicates += 1
            return FillOutcome.DUPLICATE, None
        if self.ledger.instrument(fill.venue, fill.symbol) is None:
            self._pending.setdefault((fill.venue, fill.symbol), []).append(fill)
            self._pending_ids.add(ident)
            return FillOutcome.PENDING, None
        try:
            applied = self.ledger.apply_fill(fill)
        except (LedgerError, ArithmeticError) as exc:
            self._refused_ids.add(ident)
            self.refused.append(RefusedFill(fill=fill, error=str(exc)))
            self.refused_count += 1
            return FillOutcome.REFUSED, None
        self.fills_applied += 1
        return FillOutcome.APPLIED, applied

    def pending_count(self) -> int:
        return len(self._pending_ids)

    def pending_keys(self) -> tuple[str, ...]:
        return tuple(f"{venue}:{symbol}" for venue, symbol in sorted(self._pending))

    def venue_waits(self, venue: str) -> bool:
        """Whether fills of `venue` still wait for an instrument (its balances are incomplete)."""
        return any(v == venue for v, _ in self._pending)

    def on_quote(self, quote: Quote) -> bool:
        """Mark at the mid; False (and counted) for a quote that cannot be a mark."""
        try:
            self.ledger.mark_quote(quote)
        except (ValueError, ArithmeticError):
            self.bad_quotes += 1
            return False
        return True

    # --- balances: adoption --------------------------------------------------------------
    def restore(self, adjustments: Sequence[object], latest: Iterable[BalanceUpdate]) -> int:
        """Re-apply journaled adoptions and remember the venues' last reported balances.

        `adjustments` are the journaled snapshots of `ADJUSTMENT_SOURCES`
        oldest first (objects with venue, source and balances). Returns the
        number of adoptions applied. The last reported balances are shown,
        not compared: they may predate fills journaled after them.
        """
        before: dict[str, tuple[BalanceUpdate, ...]] = {}
        applied = 0
        for snapshot in adjustments:
            venue, source, balances = snapshot.venue, snapshot.source, tuple(snapshot.balances)  # type: ignore[attr-defined]
            if source == SOURCE_BEFORE:
                before[venue] = balances
            elif source == SOURCE_ADOPTED:
                self.apply_adoption(Adoption(venue=venue, before=before.pop(venue, ()), after=balances))
                applied += 1
        for update in latest:
            self._venue_view[(update.venue, update.asset)] = update
        return applied

    def apply_adoption(self, adoption: Adoption) -> None:
        for asset, delta in adoption.deltas().items():
            total = self.ledger.balance(adoption.venue, asset) + delta
            self.ledger.set_balances(
                adoption.venue,
                [BalanceUpdate(venue=adoption.venue, asset=asset, free=total, locked=ZERO)],
                replace=False,
            )

    def adoption(
        self,
        venue: str,
        *,
        by: str,
        reason: str,
        assets: Iterable[str] | None = None,
        live_only: bool = False,
    ) -> Adoption | None:
        """The adoption of `venue`'s reported balances (all, or only `assets`); None if it
        reported none. `live_only` leaves out figures restored from the journal, which
        may be older than fills booked since."""
        wanted = None if assets is None else set(assets)
        after = tuple(
            update
            for key, update in sorted(self._venue_view.items())
            if key[0] == venue
            and (wanted is None or key[1] in wanted)
            and (not live_only or key in self._live)
        )
        if not after:
            return None
        before = tuple(
            BalanceUpdate(venue=venue, asset=b.asset, free=self.ledger.balance(venue, b.asset), locked=ZERO, venue_ms=b.venue_ms)
            for b in after
        )
        return Adoption(venue=venue, before=before, after=after, by=by, reason=reason)

    def acknowledge(self, venue: str) -> bool:
        """Clear the venue's declared mismatch and suspects (after its balances were adopted)."""
        for key in [k for k in self._suspects if k[0] == venue]:
            del self._suspects[key]
        return self._declared.pop(venue, None) is not None

    # --- balances: checks ----------------------------------------------------------------
    def on_balances(self, updates: Iterable[BalanceUpdate], now: float) -> list[Adoption]:
        """Take live venue balances. Returns the adoptions to journal and apply:
        an asset the ledger has never held a balance of is taken as the venue reports it."""
        first_seen: dict[str, list[str]] = {}
        held = self.ledger.balances()
        for update in updates:
            key = (update.venue, update.asset)
            self._venue_view[key] = update
            self._live.add(key)
            if self.venue_waits(update.venue):
                continue
            if key not in held:
                first_seen.setdefault(update.venue, []).append(update.asset)
            else:
                self._check(key, now)
        adoptions = []
        for venue, assets in first_seen.items():
            adoption = self.adoption(venue, by="positions", reason="first balance the venue reported", assets=assets)
            if adoption is not None:
                adoptions.append(adoption)
        return adoptions

    def recheck(self, venue: str, now: float, *, all_live: bool = False) -> None:
        """Compare again after fills: a suspect the fill explains goes away.
        `all_live` also checks every live figure (after waiting fills were booked)."""
        if self.venue_waits(venue):
            return
        keys = [k for k in (self._live if all_live else self._suspects) if k[0] == venue]
        for key in keys:
            self._check(key, now)

    def _check(self, key: tuple[str, str], now: float) -> None:
        difference = self._difference(key)
        if difference is None:
            self._suspects.pop(key, None)
        else:
            self._suspects.setdefault(key, now)

    def _difference(self, key: tuple[str, str]) -> BalanceDifference | None:
        update = self._venue_view[key]
        tolerance = self.config.tolerance(update.asset)
        found = self.ledger.check_balance(update, tolerance=tolerance)
        if found is None:
            return None
        return BalanceDifference(
            asset=found.asset,
            ours=found.ours,
            venue_total=found.venue_total,
            difference=found.difference,
            tolerance=tolerance,
        )

    def due(self, now: float, utc_ms: int) -> list[BalanceMismatch]:
        """Declare the suspects that outlived the grace period; one message per venue
        that gained a declared asset, listing all of that venue's declared assets."""
        grew: set[str] = set()
        for key, since in list(self._suspects.items()):
            if now - since < self.config.balance_grace:
                continue
            del self._suspects[key]
            difference = self._difference(key)
            if difference is not None:
                self._declared.setdefault(key[0], {})[key[1]] = difference
                grew.add(key[0])
        return [
            BalanceMismatch(
                venue=venue,
                differences=tuple(d for _, d in sorted(self._declared[venue].items())),
                utc_ms=utc_ms,
            )
            for venue in sorted(grew)
        ]

    def venue_agrees(self, venue: str) -> bool:
        """Every live figure of `venue` matches the ledger within tolerance, nothing suspect or declared."""
        if self.venue_waits(venue) or venue in self._declared or any(k[0] == venue for k in self._suspects):
            return False
        keys = [k for k in self._live if k[0] == venue]
        return bool(keys) and all(self._difference(k) is None for k in keys)

    def mismatched_venues(self) -> tuple[str, ...]:
        return tuple(sorted(self._declared))

    def declared(self, venue: str | None = None) -> list[BalanceMismatch]:
        return [
            BalanceMismatch(venue=v, differences=tuple(d for _, d in sorted(found.items())), utc_ms=0)
            for v, found in sorted(self._declared.items())
            if venue is None or v == venue
        ]

    def suspects(self) -> dict[tuple[str, str], float]:
        return dict(self._suspects)

    def venues(self) -> list[str]:
        return sorted({v for v, _ in self._venue_view} | {v for v, _ in self.ledger.balances()})

    def balance_rows(self, venue: str | None = None) -> list[BalanceRow]:
        ours = self.ledger.balances(venue)
        keys = sorted(set(ours) | {k for k in self._venue_view if venue is None or k[0] == venue})
        rows = []
        for key in keys:
            v, asset = key
            reported = self._venue_view.get(key)
            mine = ours.get(key)
            total = reported.free + reported.locked if reported is not None else None
            difference = total - (mine or ZERO) if total is not None else None
            if asset in self._declared.get(v, {}):
                status = "MISMATCH"
            elif key in self._suspects:
                status = "suspect"
            elif key not in self._live or self.venue_waits(v):
                status = "unchecked"
            elif difference is not None and abs(difference) > self.config.tolerance(asset):
                status = "stale"
            else:
                status = "ok"
            rows.append(
                BalanceRow(
                    venue=v,
                    asset=asset,
                    ours=mine,
                    venue_total=total,
                    venue_free=reported.free if reported is not None else None,
                    venue_locked=reported.locked if reported is not None else None,
                    difference=difference,
                    tolerance=self.config.tolerance(asset),
                    venue_ms=reported.venue_ms if reported is not None else 0,
                    status=status,
                )
            )
        return rows

    # --- views ---------------------------------------------------------------------------
    def summary(self, utc_ms: int, ts: float) -> PositionsSummary:
        ledger = self.ledger
        equity = ledger.equity()
        pnl = ledger.pnl()
        exposure = ledger.exposure()
        return PositionsSummary(
            currency=self.config.currency,
            equity=equity.value,
            equity_complete=equity.complete and not pnl.missing and not exposure.missing,
            missing=tuple(dict.fromkeys((*equity.missing, *pnl.missing, *exposure.missing))),
            realised_pnl=pnl.realised,
            unrealised_pnl=pnl.unrealised,
            fees=pnl.fees,
            gross_exposure=exposure.gross,
            net_exposure=exposure.net,
            open_positions=len(ledger.positions()),
            pending_fills=self.pending_count(),
            balance_mismatches=self.mismatched_venues(),
            utc_ms=utc_ms,
            ts=ts,
        )

    def snapshots(
        self, venue: str | None = None, symbol: str | None = None, *, include_flat: bool = False
    ) -> list[PositionSnapshot]:
        return [
            p
            for p in self.ledger.positions(include_flat=include_flat)
            if (venue is None or p.venue == venue) and (symbol is None or p.symbol == symbol)
        ]

    def entries(
        self, venue: str | None = None, symbol: str | None = None, *, include_flat: bool = False
    ) -> tuple[PositionEntry, ...]:
        return tuple(
            PositionEntry(
                venue=p.venue,
                symbol=p.symbol,
                base=p.base,
                quote=p.quote,
                quantity=p.quantity,
                avg_entry_price=p.avg_entry_price,
                mark=p.mark,
                realised_pnl=p.realised_pnl,
                unrealised_pnl=p.unrealised_pnl,
                fees=p.fees,
                last_fill_ms=p.last_fill_ms,
            )
            for p in self.snapshots(venue, symbol, include_flat=include_flat)
        )

    def sample_equity(self, utc_ms: int) -> bool:
        """Offer the current equity to the curve; True if a point was kept.

        An incomplete valuation (an asset without a price) or an empty book
        (no balances adopted yet) is not a point: the first would look like a
        loss, the second would become the baseline every return is measured from.
        """
        equity = self.ledger.equity()
        if not equity.complete or equity.value <= 0:
            return False
        return self.ledger.curve.record(utc_ms, equity.value)
