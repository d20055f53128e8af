"""Position accounting: fills in, positions, balances, PnL and equity out.

This is the pure core behind the position keeper actor. It has no I/O and no
clock: the caller hands it fills, marks and times, and it answers questions.
Everything is `Decimal`.

Positions are NETTING, one per (venue, symbol): a signed quantity built from
lots. The cost method decides which lots a reducing fill closes:

- AVERAGE (default): one lot whose cost is the running total, so the average
  entry price only changes when the position grows, and resets on a flip;
- FIFO: the oldest lot first; LIFO: the newest lot first.

The method moves PnL between "realised" and "unrealised" but never changes
their sum. Lots keep their *cost* (price x quantity) rather than a price, so
the sum equals the cash flows plus the position at the mark for every method,
which the property tests check.

Fees are charged to realised PnL on every fill, opening fills included, at
their value in the instrument's quote currency:

- quote-currency fee: as is;
- base-currency fee: the position and the base balance change by
  `side x qty - fee` (a buy of 1 BTC with a 0.001 BTC fee leaves 0.999 BTC; a
  sell of 1 BTC with a 0.001 BTC fee removes 1.001 BTC), and the fee is valued
  at the fill price. The cash spent on a buy stays price x gross quantity;
- third-asset fee (e.g. BNB): converted with the rate the caller passes
  (quote per unit of fee asset). Both amounts are kept. Without a rate the fee
  still leaves the balance, is kept as "unconverted" and is not charged to PnL,
  so nothing is lost and the gap is visible.

The rate used for a third-asset fee is returned in `AppliedFill.fee_rate`: the
caller journals it and passes it again on replay, because replaying the same
fills with the same rates in the same order must rebuild the same state.

Fills are idempotent by (venue, symbol, trade_id, side) (Binance numbers trades
per symbol; a self-trade is one trade id with a fill on each side): a fill seen
before changes nothing.

Balances per (venue, asset) are moved by fills from whatever was seeded with
`set_balances` (the venue's snapshot at start, or after an operator accepted a
reconciliation). `reconcile` compares them with the venue's view and returns
the differences as values; deciding what a mismatch means is the caller's job.

Equity is the sum of balances valued in a reporting currency through marks
(mids) or configured rates. An asset without a price is listed as missing,
never valued at 1.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import Decimal

import msgspec

from daemon.messages import BalanceUpdate, Fill, Quote
from daemon.model import Instrument, Side
from venues.base import Balance

ZERO = Decimal(0)
ONE = Decimal(1)


class CostMethod(enum.StrEnum):
    AVERAGE = "average"
    FIFO = "fifo"
    LIFO = "lifo"


class PositionSide(enum.StrEnum):
    FLAT = "FLAT"
    LONG = "LONG"
    SHORT = "SHORT"


class LedgerError(ValueError):
    """A fill or call the ledger cannot apply; nothing was changed."""


class UnknownInstrument(LedgerError):
    pass


class InvalidFill(LedgerError):
    pass


# ---------------------------------------------------------------------------------------
# Values handed out
# ---------------------------------------------------------------------------------------


class AppliedFill(msgspec.Struct, frozen=True, kw_only=True):
    """What one fill did. For a duplicate only `fill` and `duplicate` mean anything."""

    fill: Fill
    duplicate: bool = False
    quantity_change: Decimal = ZERO  # signed change of the position, after a base fee
    position: Decimal = ZERO  # signed quantity afterwards
    realised_pnl: Decimal = ZERO  # change of realised PnL in quote, net of the fee
    fee_quote: Decimal | None = None  # the fee in quote; None if it could not be converted
    fee_rate: Decimal | None = None  # quote per unit of fee asset used; journal it
    closed_trade: ClosedTrade | None = None


class ClosedTrade(msgspec.Struct, frozen=True, kw_only=True):
    """One round trip: from flat (or a flip) back to flat (or the next flip).

    Its PnL does not depend on the cost method, because every lot opened
    during the trip is closed by its end.
    """

    venue: str
    symbol: str
    side: PositionSide
    opened_ms: int
    closed_ms: int
    quantity: Decimal  # total quantity opened during the trip
    entry_price: Decimal  # quantity-weighted mean of opening prices
    exit_price: Decimal  # quantity-weighted mean of closing prices
    realised_pnl: Decimal  # net of fees, in quote
    fees: Decimal  # converted fees charged during the trip, in quote
    fills: int


class PositionSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    base: str
    quote: str
    method: CostMethod
    side: PositionSide
    quantity: Decimal  # signed: positive long, negative short
    avg_entry_price: Decimal | None  # None when flat
    cost_basis: Decimal  # cost of the open lots, in quote, unsigned
    realised_pnl: Decimal  # net of converted fees, in quote
    unrealised_pnl: Decimal | None  # None without a mark
    mark: Decimal | None
    fees: Decimal  # converted fees, in quote
    fees_by_asset: dict[str, Decimal] = {}  # fees in the asset they were paid in
    unconverted_fees: dict[str, Decimal] = {}  # third-asset fees without a rate
    bought: Decimal = ZERO  # gross quantities
    sold: Decimal = ZERO
    fills: int = 0
    opened_ms: int = 0  # start of the current round trip; 0 when flat
    last_fill_ms: int = 0


class BalanceMismatch(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    asset: str
    ours: Decimal
    venue_total: Decimal  # free + locked
    difference: Decimal  # venue_total - ours

    def describe(self) -> str:
        return (
            f"{self.venue} {self.asset}: ledger has {self.ours}, venue reports {self.venue_total} "
            f"(difference {self.difference})"
        )


class Equity(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    value: Decimal  # the priced part only
    missing: tuple[str, ...] = ()  # assets held without a price: value is incomplete

    @property
    def complete(self) -> bool:
        return not self.missing


class PnlSummary(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    realised: Decimal
    unrealised: Decimal
    fees: Decimal
    total: Decimal
    # Left out of the figures: quote currencies without a rate, and "venue:symbol" without a mark.
    missing: tuple[str, ...] = ()
    unconverted_fees: dict[str, Decimal] = {}


class Exposure(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    gross: Decimal  # sum of |quantity| x mark
    net: Decimal  # sum of quantity x mark
    missing: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Equity curve
# ---------------------------------------------------------------------------------------


class EquityCurve:
    """(time_ms, equity) samples on a regular grid with bounded memory.

    A sample is kept only if it is at least `interval_ms` after the previous
    kept one. When more than `max_points` are held, every other point after
    the first is dropped and the interval doubles, so the curve always spans
    the whole run (the first point stays: it is the baseline of the total
    return) at a coarser grid, and memory stays flat over any run length.
    Samples that go back in time (a wall-clock step) are ignored.

    The peak is tracked over every accepted sample, including ones later
    thinned out, so a drawdown from peak is never understated.
    """

    def __init__(self, interval_ms: int = 60_000, max_points: int = 2_880) -> None:
        if interval_ms <= 0:
            raise ValueError(f"equity curve interval must be positive, got {interval_ms} ms")
        if max_points < 3:
            raise ValueError(f"equity curve needs room for at least 3 points, got {max_points}")
        self.base_interval_ms = interval_ms
        self.interval_ms = interval_ms
        self.max_points = max_points
        self._points: list[tuple[int, Decimal]] = []
        self.peak: Decimal | None = None
        self.peak_ms: int | None = None

    def record(self, time_ms: int, equity: Decimal) -> bool:
        """Offer a sample; return True if it was kept."""
        if self._points and time_ms - self._points[-1][0] < self.interval_ms:
            return False
        self._points.append((time_ms, equity))
        if self.peak is None or equity > self.peak:
            self.peak, self.peak_ms = equity, time_ms
        if len(self._points) > self.max_points:
            self._thin()
        return True

    def _thin(self) -> None:
        first, rest = self._points[0], self._points[1:]
        # Keep the newest point: count parity from the end.
        kept = rest[len(rest) % 2 - 1 :: 2] if len(rest) % 2 == 0 else rest[::2]
        self._points = [first, *kept]
        self.interval_ms *= 2

    def points(self) -> list[tuple[int, Decimal]]:
        return list(self._points)

    def columns(self) -> tuple[list[int], list[Decimal]]:
        """Times and values as two lists, the shape analytics functions take."""
        return [t for t, _ in self._points], [v for _, v in self._points]

    @property
    def last(self) -> tuple[int, Decimal] | None:
        return self._points[-1] if self._points else None

    def __len__(self) -> int:
        return len(self._points)


# ---------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------


class _Lot:
    __slots__ = ("qty", "cost")

    def __init__(self, qty: Decimal, cost: Decimal) -> None:
        self.qty = qty  # unsigned
        self.cost = cost  # price x qty, unsigned


class _Trip:
    """Running figures of the current round trip."""

    __slots__ = ("side", "opened_ms", "open_qty", "open_notional", "close_qty", "close_notional", "pnl", "fees", "fills")

    def __init__(self, side: PositionSide, opened_ms: int) -> None:
        self.side = side
        self.opened_ms = opened_ms
        self.open_qty = ZERO
        self.open_notional = ZERO
        self.close_qty = ZERO
        self.close_notional = ZERO
        self.pnl = ZERO
        self.fees = ZERO
        self.fills = 0


class Position:
    """One NETTING position. Mutated only by `Ledger`; read it through snapshots."""

    def __init__(self, instrument: Instrument, method: CostMethod) -> None:
        self.instrument = instrument
        self.method = method
        self.direction = 0  # +1 long, -1 short, 0 flat
        self.qty = ZERO  # unsigned, = sum of lot quantities
        self.cost = ZERO  # unsigned, = sum of lot costs
        self._lots: deque[_Lot] = deque()
        self.realised = ZERO
        self.fees = ZERO
        self.fees_by_asset: dict[str, Decimal] = {}
        self.unconverted_fees: dict[str, Decimal] = {}
        self.bought = ZERO
        self.sold = ZERO
        self.fills = 0
        self.last_fill_ms = 0
        self.trip: _Trip | None = None

    @property
    def signed_qty(self) -> Decimal:
        return self.qty if self.direction >= 0 else -self.qty

    @property
    def side(self) -> PositionSide:
        return {1: PositionSide.LONG, -1: PositionSide.SHORT}.get(self.direction, PositionSide.FLAT)

    def unrealised(self, mark: Decimal) -> Decimal:
        return self.direction * (self.qty * mark - self.cost)

    # --- lots ---------------------------------------------------------------------------
    def _open(self, qty: Decimal, price: Decimal) -> None:
        cost = qty * price
        if self.method is CostMethod.AVERAGE and self._lots:
            lot = self._lots[0]
            lot.qty += qty
            lot.cost += cost
        else:
            self._lots.append(_Lot(qty, cost))
        self.qty += qty
        self.cost += cost

    def _close(self, qty: Decimal) -> Decimal:
        """Remove `qty` from the lots the method picks; return the cost removed."""
        removed = ZERO
        left = qty
        take_newest = self.method is CostMethod.LIFO
        while left > 0:
            lot = self._lots[-1] if take_newest else self._lots[0]
            if left >= lot.qty:
                removed += lot.cost
                left -= lot.qty
                if take_newest:
                    self._lots.pop()
                else:
                    self._lots.popleft()
            else:
                part = lot.cost * left / lot.qty
                lot.cost -= part
                lot.qty -= left
                removed += part
                left = ZERO
        self.qty -= qty
        self.cost -= removed
        if self.qty == 0:
            # Whatever rounding left in the cost belongs to the closed lots.
            removed += self.cost
            self.cost = ZERO
            self._lots.clear()
        return removed

    def trade(self, delta: Decimal, price: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        """Apply a signed quantity change at `price`.

        Returns (realised gross of fees, quantity closed, quantity opened).
        """
        if delta == 0:
            return ZERO, ZERO, ZERO
        step = 1 if delta > 0 else -1
        size = abs(delta)
        if self.direction in (0, step):
            self.direction = step
            self._open(size, price)
            return ZERO, ZERO, size
        closing = min(size, self.qty)
        removed = self._close(closing)
        realised = self.direction * (closing * price - removed)
        opening = size - closing
        if self.qty == 0:
            self.direction = 0
        if opening > 0:
            self.direction = step
            self._open(opening, price)
        return realised, closing, opening


class Ledger:
    """All positions and balances of the daemon, fed by fills, asked for PnL and equity."""

    def __init__(
        self,
        instruments: Iterable[Instrument] = (),
        *,
        method: CostMethod | str = CostMethod.AVERAGE,
        currency: str = "USDT",
        rates: Mapping[tuple[str, str], Decimal] | None = None,
        curve: EquityCurve | None = None,
        max_closed_trades: int = 10_000,
    ) -> None:
        self.method = CostMethod(method)
        self.currency = currency
        self.curve = curve if curve is not None else EquityCurve()
        self._instruments: dict[tuple[str, str], Instrument] = {}
        self._by_pair: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._positions: dict[tuple[str, str], Position] = {}
        self._balances: dict[tuple[str, str], Decimal] = {}
        self._marks: dict[tuple[str, str], Decimal] = {}
        self._rates: dict[tuple[str, str], Decimal] = {}
        self._seen: dict[tuple[str, str], set[tuple[str, Side]]] = {}  # (venue, trade id) -> (symbol, side)s
        self._closed: deque[ClosedTrade] = deque(maxlen=max_closed_trades)
        self.closed_trade_count = 0  # all round trips, including ones the bounded list dropped
        for instrument in instruments:
            self.add_instrument(instrument)
        for (asset, quote), price in (rates or {}).items():
            self.set_rate(asset, quote, price)

    # --- instruments, marks and rates -----------------------------------------------------
    def add_instrument(self, instrument: Instrument) -> None:
        key = (instrument.venue, instrument.symbol)
        if key not in self._instruments:
            self._by_pair.setdefault((instrument.base, instrument.quote), []).append(key)
        self._instruments[key] = instrument

    def instrument(self, venue: str, symbol: str) -> Instrument | None:
        return self._instruments.get((venue, symbol))

    def set_mark(self, venue: str, symbol: str, price: Decimal) -> None:
        """The price unrealised PnL and equity are valued at (the mid, by convention)."""
        if not price.is_finite() or price <= 0:
            raise ValueError(f"mark for {venue}:{symbol} must be a positive price, got {price}")
        self._marks[(venue, symbol)] = price

    def mark_quote(self, quote: Quote) -> None:
        """Mark at the quote's mid; a one-sided or crossed-out book (zero side) is skipped."""
        if quote.bid > 0 and quote.ask > 0:
            self.set_mark(quote.venue, quote.symbol, quote.mid)

    def mark(self, venue: str, symbol: str) -> Decimal | None:
        return self._marks.get((venue, symbol))

    def set_rate(self, asset: str, currency: str, price: Decimal) -> None:
        """A fixed conversion (e.g. USDC -> USDT at 1) for assets no instrument prices."""
        if not price.is_finite() or price <= 0:
            raise ValueError(f"rate {asset}->{currency} must be positive, got {price}")
        self._rates[(asset, currency)] = price

    def rate(self, asset: str, currency: str, *, venue: str | None = None) -> Decimal | None:
        """Units of `currency` per unit of `asset`, or None if nothing prices it.

        Looks at fixed rates, then marks of an instrument quoting the pair
        either way round (preferring `venue`), then through one intermediate
        asset (ETH -> BTC -> USDT), so cross pairs can be valued.
        """
        if asset == currency:
            return ONE
        direct = self._direct_rate(asset, currency, venue)
        if direct is not None:
            return direct
        for middle in sorted(self._neighbours(asset)):
            if middle == currency:
                continue
            first = self._direct_rate(asset, middle, venue)
            second = self._direct_rate(middle, currency, venue) if first is not None else None
            if second is not None:
                return first * second
        return None

    def _direct_rate(self, asset: str, currency: str, venue: str | None) -> Decimal | None:
        if (asset, currency) in self._rates:
            return self._rates[(asset, currency)]
        if (currency, asset) in self._rates:
            return ONE / self._rates[(currency, asset)]
        direct = self._pair_mark(asset, currency, venue)
        if direct is not None:
            return direct
        inverse = self._pair_mark(currency, asset, venue)
        if inverse is not None:
            return ONE / inverse
        return None

    def _neighbours(self, asset: str) -> set[str]:
        pairs = [*self._rates, *self._by_pair]
        return {b if a == asset else a for a, b in pairs if asset in (a, b)}

    def _pair_mark(self, base: str, quote: str, venue: str | None) -> Decimal | None:
        keys = self._by_pair.get((base, quote), ())
        ordered = sorted(keys, key=lambda k: k[0] != venue)
        for key in ordered:
            mark = self._marks.get(key)
            if mark is not None:
                return mark
        return None

    # --- fills ----------------------------------------------------------------------------
    def has_fill(self, venue: str, trade_id: str, symbol: str | None = None, side: Side | None = None) -> bool:
        """Whether this trade was applied; without `symbol` or `side`, in any symbol or on either side."""
        legs = self._seen.get((venue, trade_id), ())
        return any((symbol is None or s == symbol) and (side is None or d == side) for s, d in legs)

    def apply_fill(self, fill: Fill, *, fee_rate: Decimal | None = None) -> AppliedFill:
        """Account for one fill. Idempotent by (venue, symbol, trade_id, side).

        `fee_rate` is the price of a third-asset fee in the instrument's quote
        currency at fill time (ignored for base and quote fees). Raises
        `UnknownInstrument` or `InvalidFill` without changing anything.
        """
        if self.has_fill(fill.venue, fill.trade_id, fill.symbol, fill.side):
            return AppliedFill(fill=fill, duplicate=True)
        instrument = self._instruments.get((fill.venue, fill.symbol))
        if instrument is None:
            raise UnknownInstrument(
                f"fill {fill.venue}:{fill.trade_id} is for {fill.symbol}, which the ledger does not know; "
                "add the instrument before applying its fills"
            )
        self._validate(fill, fee_rate)

        price, qty, fee = fill.price, fill.qty, fill.fee
        fee_asset = fill.fee_asset if fee != 0 else ""
        base_fee = fee if fee_asset == instrument.base else ZERO
        if fee == 0:
            fee_quote, used_rate = ZERO, None
        elif fee_asset == instrument.quote:
            fee_quote, used_rate = fee, ONE
        elif fee_asset == instrument.base:
            fee_quote, used_rate = fee * price, price
        elif fee_rate is not None:
            fee_quote, used_rate = fee * fee_rate, fee_rate
        else:
            fee_quote, used_rate = None, None

        key = (fill.venue, fill.symbol)
        position = self._positions.get(key)
        if position is None:
            position = self._positions[key] = Position(instrument, self.method)

        sign = fill.side.sign
        delta = sign * qty - base_fee
        realised, closed_qty, opened_qty = position.trade(delta, price)
        charged = fee_quote if fee_quote is not None else ZERO
        position.realised += realised - charged
        position.fees += charged
        if fee_asset:
            _add(position.fees_by_asset, fee_asset, fee)
            if fee_quote is None:
                _add(position.unconverted_fees, fee_asset, fee)
        if fill.side is Side.BUY:
            position.bought += qty
        else:
            position.sold += qty
        position.fills += 1
        position.last_fill_ms = fill.venue_ms

        closed_trade = self._follow_trip(position, fill, realised, closed_qty, opened_qty, charged)

        _add(self._balances, (fill.venue, instrument.base), sign * qty)
        _add(self._balances, (fill.venue, instrument.quote), -sign * qty * price)
        if fee_asset:
            _add(self._balances, (fill.venue, fee_asset), -fee)

        self._seen.setdefault((fill.venue, fill.trade_id), set()).add((fill.symbol, fill.side))
        return AppliedFill(
            fill=fill,
            quantity_change=delta,
            position=position.signed_qty,
            realised_pnl=realised - charged,
            fee_quote=fee_quote,
            fee_rate=used_rate,
            closed_trade=closed_trade,
        )

    @staticmethod
    def _validate(fill: Fill, fee_rate: Decimal | None) -> None:
        where = f"fill {fill.venue}:{fill.trade_id}"
        for name, value in (("price", fill.price), ("qty", fill.qty), ("fee", fill.fee)):
            if not value.is_finite():
                raise InvalidFill(f"{where} has a non-finite {name} ({value}); check the venue decoder")
        if fill.price <= 0 or fill.qty <= 0:
            raise InvalidFill(f"{where} needs a positive price and quantity, got {fill.price} x {fill.qty}")
        if fill.fee != 0 and not fill.fee_asset:
            raise InvalidFill(f"{where} has a fee of {fill.fee} but no fee asset")
        if fee_rate is not None and (not fee_rate.is_finite() or fee_rate <= 0):
            raise InvalidFill(f"{where}: fee rate must be a positive price, got {fee_rate}")

    def _follow_trip(
        self,
        position: Position,
        fill: Fill,
        realised: Decimal,
        closed_qty: Decimal,
        opened_qty: Decimal,
        fee: Decimal,
    ) -> ClosedTrade | None:
        """Keep the round-trip figures; return the trip this fill finished, if any.

        A trip exists whenever the position is not flat. On a flip the fee is
        shared between the closing and the opening part in proportion to
        their quantities.
        """
        trip = position.trip
        if trip is None:
            if opened_qty > 0:
                position.trip = _new_trip(position.side, fill, opened_qty, fee)
            return None  # else a fee-only change on a flat position: no trip to charge
        trip.fills += 1
        if closed_qty == 0:
            # Growing the position, or a fee-only change: same trip.
            trip.open_qty += opened_qty
            trip.open_notional += opened_qty * fill.price
            trip.fees += fee
            trip.pnl -= fee
            return None
        fee_on_close = fee if opened_qty == 0 else fee * closed_qty / (closed_qty + opened_qty)
        trip.close_qty += closed_qty
        trip.close_notional += closed_qty * fill.price
        trip.fees += fee_on_close
        trip.pnl += realised - fee_on_close
        if position.direction != 0 and opened_qty == 0:
            return None  # reduced, still open
        finished = self._finish(position, trip, fill.venue_ms)
        position.trip = _new_trip(position.side, fill, opened_qty, fee - fee_on_close) if opened_qty else None
        return finished

    def _finish(self, position: Position, trip: _Trip, closed_ms: int) -> ClosedTrade:
        instrument = position.instrument
        closed = ClosedTrade(
            venue=instrument.venue,
            symbol=instrument.symbol,
            side=trip.side,
            opened_ms=trip.opened_ms,
            closed_ms=closed_ms,
            quantity=trip.open_qty,
            entry_price=trip.open_notional / trip.open_qty if trip.open_qty else ZERO,
            exit_price=trip.close_notional / trip.close_qty if trip.close_qty else ZERO,
            realised_pnl=trip.pnl,
            fees=trip.fees,
            fills=trip.fills,
        )
        self._closed.append(closed)
        self.closed_trade_count += 1
        return closed

    # --- reading positions ----------------------------------------------------------------
    def position(self, venue: str, symbol: str) -> PositionSnapshot | None:
        position = self._positions.get((venue, symbol))
        return None if position is None else self._snapshot(position)

    def positions(self, *, include_flat: bool = False) -> list[PositionSnapshot]:
        return [
            self._snapshot(p)
            for _, p in sorted(self._positions.items())
            if include_flat or p.direction != 0
        ]

    def quantity(self, venue: str, symbol: str) -> Decimal:
        position = self._positions.get((venue, symbol))
        return ZERO if position is None else position.signed_qty

    def _snapshot(self, position: Position) -> PositionSnapshot:
        instrument = position.instrument
        mark = self._marks.get((instrument.venue, instrument.symbol))
        return PositionSnapshot(
            venue=instrument.venue,
            symbol=instrument.symbol,
            base=instrument.base,
            quote=instrument.quote,
            method=position.method,
            side=position.side,
            quantity=position.signed_qty,
            avg_entry_price=position.cost / position.qty if position.qty else None,
            cost_basis=position.cost,
            realised_pnl=position.realised,
            unrealised_pnl=position.unrealised(mark) if mark is not None else None,
            mark=mark,
            fees=position.fees,
            fees_by_asset=dict(position.fees_by_asset),
            unconverted_fees=dict(position.unconverted_fees),
            bought=position.bought,
            sold=position.sold,
            fills=position.fills,
            opened_ms=position.trip.opened_ms if position.trip is not None else 0,
            last_fill_ms=position.last_fill_ms,
        )

    @property
    def closed_trades(self) -> tuple[ClosedTrade, ...]:
        """The most recent round trips, oldest first (bounded; see `closed_trade_count`)."""
        return tuple(self._closed)

    def pnl(self, currency: str | None = None) -> PnlSummary:
        """Realised, unrealised and fees of every position, converted to `currency`."""
        currency = currency or self.currency
        realised = unrealised = fees = ZERO
        missing: list[str] = []
        unconverted: dict[str, Decimal] = {}
        for (venue, symbol), position in sorted(self._positions.items()):
            quote = position.instrument.quote
            for asset, amount in position.unconverted_fees.items():
                _add(unconverted, asset, amount)
            rate = self.rate(quote, currency, venue=venue)
            mark = self._marks.get((venue, symbol))
            if rate is None:
                missing.append(quote)
            if position.direction != 0 and mark is None:
                missing.append(f"{venue}:{symbol}")
            if rate is None:
                continue
            realised += position.realised * rate
            fees += position.fees * rate
            if position.direction != 0 and mark is not None:
                unrealised += position.unrealised(mark) * rate
        return PnlSummary(
            currency=currency,
            realised=realised,
            unrealised=unrealised,
            fees=fees,
            total=realised + unrealised,
            missing=tuple(dict.fromkeys(missing)),
            unconverted_fees=unconverted,
        )

    def exposure(self, currency: str | None = None) -> Exposure:
        """Open positions valued at their marks: gross (sum of sizes) and net."""
        currency = currency or self.currency
        gross = net = ZERO
        missing: list[str] = []
        for (venue, symbol), position in sorted(self._positions.items()):
            if position.direction == 0:
                continue
            mark = self._marks.get((venue, symbol))
            rate = self.rate(position.instrument.quote, currency, venue=venue)
            if mark is None or rate is None:
                missing.append(f"{venue}:{symbol}")
                continue
            value = position.qty * mark * rate
            gross += value
            net += position.direction * value
        return Exposure(currency=currency, gross=gross, net=net, missing=tuple(missing))

    # --- balances -------------------------------------------------------------------------
    def balance(self, venue: str, asset: str) -> Decimal:
        return self._balances.get((venue, asset), ZERO)

    def balances(self, venue: str | None = None) -> dict[tuple[str, str], Decimal]:
        """Totals (free + locked) per (venue, asset), as fills and seeds left them."""
        return {k: v for k, v in sorted(self._balances.items()) if venue is None or k[0] == venue}

    def set_balances(
        self, venue: str, balances: Iterable[Balance | BalanceUpdate], *, replace: bool = True
    ) -> None:
        """Take the venue's balances as ours (at start, or when an operator accepts them).

        With `replace`, assets the venue does not list are set to zero (Binance
        omits empty balances); otherwise only the listed assets change.
        """
        given = {b.asset: b.free + b.locked for b in balances}
        if replace:
            for key in [k for k in self._balances if k[0] == venue]:
                self._balances[key] = ZERO
        for asset, total in given.items():
            self._balances[(venue, asset)] = total

    def reconcile(
        self,
        venue: str,
        balances: Iterable[Balance | BalanceUpdate],
        *,
        tolerance: Decimal | Mapping[str, Decimal] = ZERO,
        complete: bool = True,
    ) -> list[BalanceMismatch]:
        """Differences beyond `tolerance` between our balances and the venue's.

        `complete` says the venue listed every asset it holds (a full account
        snapshot), so an asset we hold and it omits counts as zero there; for a
        partial list (a `BalanceUpdate` batch) only the listed assets are compared.
        """
        theirs = {b.asset: b.free + b.locked for b in balances}
        assets = set(theirs)
        if complete:
            assets |= {asset for (v, asset) in self._balances if v == venue}
        mismatches = []
        for asset in sorted(assets):
            ours = self._balances.get((venue, asset), ZERO)
            venue_total = theirs.get(asset, ZERO)
            allowed = tolerance.get(asset, ZERO) if isinstance(tolerance, Mapping) else tolerance
            if abs(venue_total - ours) > allowed:
                mismatches.append(
                    BalanceMismatch(
                        venue=venue, asset=asset, ours=ours, venue_total=venue_total, difference=venue_total - ours
                    )
                )
        return mismatches

    def check_balance(
        self, update: BalanceUpdate, *, tolerance: Decimal | Mapping[str, Decimal] = ZERO
    ) -> BalanceMismatch | None:
        """Compare one venue balance push with ours.

        The venue may push a balance before or after the fill that caused it,
        so one mismatch can be transient; the caller decides how long to wait.
        """
        found = self.reconcile(update.venue, [update], tolerance=tolerance, complete=False)
        return found[0] if found else None

    # --- equity ---------------------------------------------------------------------------
    def equity(self, currency: str | None = None, *, venue: str | None = None) -> Equity:
        currency = currency or self.currency
        value = ZERO
        missing: set[str] = set()
        for (v, asset), amount in self._balances.items():
            if amount == 0 or (venue is not None and v != venue):
                continue
            rate = self.rate(asset, currency, venue=v)
            if rate is None:
                missing.add(asset)
            else:
                value += amount * rate
        return Equity(currency=currency, value=value, missing=tuple(sorted(missing)))

    def sample_equity(self, time_ms: int) -> Equity:
        """Value equity in the reporting currency and offer it to the curve.

        An incomplete valuation (an asset without a price) is not recorded:
        a hole would look like a drawdown.
        """
        equity = self.equity()
        if equity.complete:
            self.curve.record(time_ms, equity.value)
        return equity


def _new_trip(side: PositionSide, fill: Fill, qty: Decimal, fee: Decimal) -> _Trip:
    trip = _Trip(side, fill.venue_ms)
    trip.fills = 1
    trip.open_qty = qty
    trip.open_notional = qty * fill.price
    trip.fees = fee
    trip.pnl = -fee
    return trip


def _add(table: dict, key, amount: Decimal) -> None:
    table[key] = table.get(key, ZERO) + amount
