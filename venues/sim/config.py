"""Configuration of the simulated venue: a ``[venues.NAME]`` table with ``type = "sim"``.

Every key has a default, so ``[venues.sim]`` with only ``type = "sim"`` gives
a working venue: BTCUSDT and ETHUSDT with Binance-like filters, a synthetic
market around 64 000 and 3 200 USDT, and a demo account funded with
100 000 USDT, 2 BTC and 20 ETH. Prices and quantities are decimal strings in
TOML (``tick_size = "0.01"``); rates and times are plain numbers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from daemon.model import Instrument

_Positive = Annotated[float, msgspec.Meta(gt=0)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0)]


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{key}: {message}")


def _multiple(value: Decimal, unit: Decimal) -> bool:
    return value % unit == 0


class SimInstrumentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One symbol: its filters, and how the synthetic market trades it.

    The market keeps `levels` price levels per side spaced `level_spacing`
    apart next to the touch, then `outer_levels` deeper ones spaced
    `outer_spacing` apart. Sizes are random around `level_qty` /
    `outer_qty`; a level eaten by trades comes back after about
    `refill_seconds`. Other participants trade `trades_per_second` on average
    over a session (more at its open and close), `trade_qty` each on average.
    """

    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal = Decimal(0)
    max_qty: Decimal = Decimal(0)
    min_price: Decimal = Decimal(0)
    max_price: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)
    max_notional: Decimal = Decimal(0)
    # --- the synthetic market -----------------------------------------------------------
    price: Decimal  # starting mid price
    volatility: _NonNegative = 0.6  # annualised, as for a geometric Brownian motion
    level_spacing: Decimal
    levels: Annotated[int, msgspec.Meta(ge=1, le=500)] = 20
    level_qty: Decimal
    outer_spacing: Decimal
    outer_levels: Annotated[int, msgspec.Meta(ge=0, le=500)] = 20
    outer_qty: Decimal
    trades_per_second: _NonNegative = 1.0
    trade_qty: Decimal
    refill_seconds: _Positive = 5.0

    def __post_init__(self) -> None:
        for key in (
            "tick_size",
            "step_size",
            "price",
            "level_spacing",
            "level_qty",
            "outer_spacing",
            "outer_qty",
            "trade_qty",
        ):
            _require(getattr(self, key) > 0, key, f"must be positive, got {getattr(self, key)}")
        for key in ("min_qty", "max_qty", "min_price", "max_price", "min_notional", "max_notional"):
            _require(getattr(self, key) >= 0, key, f"must not be negative (0 disables it), got {getattr(self, key)}")
        _require(_multiple(self.price, self.tick_size), "price", f"must be a multiple of tick_size {self.tick_size}")
        _require(
            _multiple(self.level_spacing, self.tick_size),
            "level_spacing",
            f"must be a multiple of tick_size {self.tick_size}",
        )
        _require(
            _multiple(self.outer_spacing, self.level_spacing),
            "outer_spacing",
            f"must be a multiple of level_spacing {self.level_spacing}",
        )
        for key in ("level_qty", "outer_qty", "trade_qty"):
            _require(
                getattr(self, key) >= self.step_size, key, f"must be at least one step_size ({self.step_size})"
            )

    def to_instrument(self, venue: str) -> Instrument:
        return Instrument(
            venue=venue,
            symbol=self.symbol,
            base=self.base,
            quote=self.quote,
            tick_size=self.tick_size,
            step_size=self.step_size,
            min_qty=self.min_qty,
            max_qty=self.max_qty,
            min_price=self.min_price,
            max_price=self.max_price,
            min_notional=self.min_notional,
            max_notional=self.max_notional,
        )


class SimAccountConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An account and what it starts with; fees default to the venue's."""

    name: str
    balances: dict[str, Decimal] = {}
    maker_fee: Decimal | None = None
    taker_fee: Decimal | None = None

    def __post_init__(self) -> None:
        _require(bool(self.name), "name", "must not be empty")
        for asset, amount in self.balances.items():
            _require(amount >= 0, f"balances.{asset}", f"must not be negative, got {amount}")
        for key in ("maker_fee", "taker_fee"):
            value = getattr(self, key)
            _require(value is None or 0 <= value < 1, key, f"must be a fraction in [0, 1), got {value}")


class VolatilityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Regimes and jumps on top of each instrument's own volatility.

    A *storm* multiplies volatility by `storm_multiplier` and trading by
    `storm_volume_multiplier`; storms start `storms_per_day` times a day on
    average and last `storm_minutes` on average. Jumps are sudden log-price
    moves with standard deviation `jump_size`. All off by default; tests
    provoke extreme moves on purpose with `MarketModel.force_spike` and
    `MarketModel.stress`.
    """

    scale: _NonNegative = 1.0  # multiplies every instrument's volatility
    storms_per_day: _NonNegative = 0.0
    storm_minutes: _Positive = 30.0
    storm_multiplier: _Positive = 4.0
    storm_volume_multiplier: _Positive = 2.0
    jumps_per_day: _NonNegative = 0.0
    jump_size: _NonNegative = 0.01


BTCUSDT = SimInstrumentConfig(
    symbol="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.00001"),
    min_qty=Decimal("0.00001"),
    max_qty=Decimal("9000"),
    min_price=Decimal("0.01"),
    max_price=Decimal("1000000"),
    min_notional=Decimal("5"),
    max_notional=Decimal("9000000"),
    price=Decimal("64000.00"),
    volatility=0.6,
    level_spacing=Decimal("5.00"),
    levels=20,
    level_qty=Decimal("0.15"),
    outer_spacing=Decimal("50.00"),
    outer_levels=20,
    outer_qty=Decimal("1.0"),
    trades_per_second=1.0,
    trade_qty=Decimal("0.02"),
    refill_seconds=5.0,
)

ETHUSDT = SimInstrumentConfig(
    symbol="ETHUSDT",
    base="ETH",
    quote="USDT",
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.0001"),
    min_qty=Decimal("0.0001"),
    max_qty=Decimal("9000"),
    min_price=Decimal("0.01"),
    max_price=Decimal("1000000"),
    min_notional=Decimal("5"),
    max_notional=Decimal("9000000"),
    price=Decimal("3200.00"),
    volatility=0.75,
    level_spacing=Decimal("0.50"),
    levels=20,
    level_qty=Decimal("2.0"),
    outer_spacing=Decimal("5.00"),
    outer_levels=20,
    outer_qty=Decimal("12"),
    trades_per_second=0.8,
    trade_qty=Decimal("0.3"),
    refill_seconds=5.0,
)

DEMO_ACCOUNT = SimAccountConfig(
    name="demo",
    balances={"USDT": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("20")},
)


class SimConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The simulated venue: engine, synthetic market and accounts.

    `seed` makes the market reproducible: the same seed and the same orders
    at the same (trio) times give the same fills. `latency` is the simulated
    round trip of every adapter call, in seconds. `market_step` is how often
    the market moves, in seconds of trio time. `session_seconds` is the length
    of the trading "day" whose volume curve is U-shaped (`volume_floor` is the
    quietest point relative to the session's average); `session_start` is how
    far into that session the market starts. `start_ms` fixes the venue's
    clock (UTC ms) at start; by default it is the real time at start.
    """

    type: Literal["sim"] = "sim"
    seed: int = 1
    instruments: tuple[SimInstrumentConfig, ...] = (BTCUSDT, ETHUSDT)
    accounts: tuple[SimAccountConfig, ...] = (DEMO_ACCOUNT,)
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    latency: _NonNegative = 0.0
    market_step: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    volatility: VolatilityConfig = VolatilityConfig()
    session_seconds: _Positive = 86400.0
    session_start: _NonNegative = 0.0
    volume_floor: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.35
    start_ms: int | None = None
    stream_buffer: Annotated[int, msgspec.Meta(ge=16)] = 10_000
    market_account: str = "market"
    history_limit: Annotated[int, msgspec.Meta(ge=0)] = 100_000

    def __post_init__(self) -> None:
        _require(bool(self.instruments), "instruments", "list at least one instrument")
        symbols = [i.symbol for i in self.instruments]
        _require(len(set(symbols)) == len(symbols), "instruments", f"a symbol is listed twice: {symbols}")
        names = [a.name for a in self.accounts]
        _require(len(set(names)) == len(names), "accounts", f"an account is listed twice: {names}")
        _require(
            self.market_account not in names,
            "market_account",
            f"{self.market_account!r} is the synthetic market's own account; name yours differently",
        )
        for key in ("maker_fee", "taker_fee"):
            value = getattr(self, key)
            _require(0 <= value < 1, key, f"must be a fraction in [0, 1), got {value}")


def _register() -> None:
    """Let the daemon's config loader decode ``[venues.NAME]`` tables with ``type = "sim"``."""
    from daemon.config import register_venue_type

    register_venue_type("sim", SimConfig)


_register()
