"""The `[risk]` configuration: every limit the sentinel enforces, and how to change one live.

The limits are one immutable value. Changing a limit at run time
(`tradectl risk set KEY VALUE`) builds a new `RiskLimits` through the same
decoder and validation as the config file, so a value the file would refuse
is refused live too, and the sentinel swaps the whole value at once: it never
sees a half-applied change.

Conventions:
- Money and quantities are `Decimal`; notionals are in the instrument's quote
  asset, and cross-instrument sums (gross exposure) assume the operator trades
  instruments quoted in one asset.
- A limit set to `None` (TOML: leave it out; live: the value `none`) is not
  enforced. Zero is a real limit: `max_order_qty = 0` refuses every order.
- Per-instrument overrides live under `instruments."<venue>:<symbol>"`; a
  field left out there falls back to the default above it.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

Action = Literal["reduce", "halt", "kill"]
"""What a tripped breaker does: REDUCING, HALTED, or HALTED plus the emergency stop."""

VarMethod = Literal["historical", "parametric"]
VAR_LEVELS = (0.95, 0.99)

NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]


class LimitError(ValueError):
    """A risk limit key or value that cannot be applied; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _require_non_negative(section: str, **values: Decimal | None) -> None:
    # msgspec has no numeric constraints for Decimal, so ranges are checked here.
    for name, value in values.items():
        if value is None:
            continue
        if not value.is_finite():
            raise ValueError(f"{section}{name} must be a finite number, not {value}")
        if value < 0:
            raise ValueError(f"{section}{name} must be zero or more, not {value}")


def _require_fraction(name: str, value: Decimal | None) -> None:
    if value is None:
        return
    if not value.is_finite() or not (0 < value < 1):
        raise ValueError(f"{name} is a fraction of equity and must lie strictly between 0 and 1 (0.1 = 10 %), not {value}")


class InstrumentLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Overrides for one instrument; `None` inherits the default."""

    max_order_qty: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_position: Decimal | None = None
    max_open_orders: NonNegativeInt | None = None

    def __post_init__(self) -> None:
        _require_non_negative(
            "",
            max_order_qty=self.max_order_qty,
            max_order_notional=self.max_order_notional,
            max_position=self.max_position,
        )


class DailyLossBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Trips when equity falls more than `limit` (quote money) below its level at the UTC day start."""

    enabled: bool = True
    limit: Decimal | None = None
    action: Action = "kill"

    def __post_init__(self) -> None:
        _require_non_negative("daily_loss.", limit=self.limit)


class DrawdownBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Trips when equity falls more than the fraction `limit` below its peak (0.1 = 10 %)."""

    enabled: bool = True
    limit: Decimal | None = None
    action: Action = "kill"

    def __post_init__(self) -> None:
        _require_fraction("drawdown.limit", self.limit)


class VarBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Trips when the value at risk of the equity curve exceeds `limit` (fraction of equity).

    Equity is sampled every `sample_seconds` (monotonic); VaR is computed over
    the returns of the last `window` samples once `min_samples` returns exist.
    A new `limit` applies at the next equity update; a new level, method or
    window at the next sample.
    """

    enabled: bool = True
    limit: Decimal | None = None
    level: float = 0.99
    method: VarMethod = "historical"
    window: Annotated[int, msgspec.Meta(ge=2)] = 500
    min_samples: Annotated[int, msgspec.Meta(ge=2)] = 30
    sample_seconds: PositiveSeconds = 60.0
    action: Action = "reduce"

    def __post_init__(self) -> None:
        _require_fraction("var.limit", self.limit)
        if self.level not in VAR_LEVELS:
            raise ValueError(f"var.level must be one of {', '.join(map(str, VAR_LEVELS))}, not {self.level}")
        if self.min_samples > self.window:
            raise ValueError(f"var.min_samples ({self.min_samples}) cannot exceed var.window ({self.window})")


class RejectsBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Trips when venue rejects within `window_seconds` exceed `max_rejects`."""

    enabled: bool = True
    max_rejects: PositiveInt = 20
    window_seconds: PositiveSeconds = 60.0
    action: Action = "halt"


class StaleDataBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Puts one venue in REDUCING when its feed reports stale/down, or sends no quote for `after_seconds`."""

    enabled: bool = True
    after_seconds: PositiveSeconds = 30.0


class VenueDownBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Puts one venue in REDUCING when its order entry is reported down or banned."""

    enabled: bool = True


class SupervisorBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Runs the emergency stop when a supervisor gives up on a core actor."""

    enabled: bool = True


class RiskLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The `[risk]` section. Defaults enforce rates and counts; size limits are the operator's to set."""

    # --- per order --------------------------------------------------------------------
    max_order_qty: Decimal | None = None
    max_order_notional: Decimal | None = None
    price_collar_bps: Decimal | None = Decimal(500)
    prevent_self_trade: bool = True  # refuse an order that would trade against one of our own resting orders
    # --- exposure ---------------------------------------------------------------------
    max_position: Decimal | None = None
    max_gross_exposure: Decimal | None = None
    # --- flow -------------------------------------------------------------------------
    max_orders_per_second: NonNegativeInt | None = 20
    max_orders_per_minute: NonNegativeInt | None = 600
    max_open_orders_per_instrument: NonNegativeInt | None = 50
    max_open_orders: NonNegativeInt | None = 200
    # --- market data and the trading day ----------------------------------------------
    stale_quote_seconds: PositiveSeconds = 10.0
    day_start_hour_utc: Annotated[int, msgspec.Meta(ge=0, le=23)] = 0
    # --- overrides and breakers -------------------------------------------------------
    instruments: dict[str, InstrumentLimits] = {}
    daily_loss: DailyLossBreaker = DailyLossBreaker()
    drawdown: DrawdownBreaker = DrawdownBreaker()
    var: VarBreaker = VarBreaker()
    rejects: RejectsBreaker = RejectsBreaker()
    stale_data: StaleDataBreaker = StaleDataBreaker()
    venue_down: VenueDownBreaker = VenueDownBreaker()
    supervisor: SupervisorBreaker = SupervisorBreaker()

    def __post_init__(self) -> None:
        _require_non_negative(
            "",
            max_order_qty=self.max_order_qty,
            max_order_notional=self.max_order_notional,
            price_collar_bps=self.price_collar_bps,
            max_position=self.max_position,
            max_gross_exposure=self.max_gross_exposure,
        )
        for name in ("stale_quote_seconds",):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number of seconds")
        for key in self.instruments:
            venue, sep, symbol = key.partition(":")
            if not sep or not venue or not symbol or "." in key:
                raise ValueError(
                    f"instrument override {key!r} must be written as \"<venue>:<symbol>\", e.g. \"binance:BTCUSDT\""
                )

    # --- effective per-instrument limits ---------------------------------------------
    def _override(self, venue: str, symbol: str) -> InstrumentLimits | None:
        return self.instruments.get(f"{venue}:{symbol}")

    def order_qty_limit(self, venue: str, symbol: str) -> Decimal | None:
        o = self._override(venue, symbol)
        return o.max_order_qty if o is not None and o.max_order_qty is not None else self.max_order_qty

    def order_notional_limit(self, venue: str, symbol: str) -> Decimal | None:
        o = self._override(venue, symbol)
        if o is not None and o.max_order_notional is not None:
            return o.max_order_notional
        return self.max_order_notional

    def position_limit(self, venue: str, symbol: str) -> Decimal | None:
        o = self._override(venue, symbol)
        return o.max_position if o is not None and o.max_position is not None else self.max_position

    def open_orders_limit(self, venue: str, symbol: str) -> int | None:
        o = self._override(venue, symbol)
        if o is not None and o.max_open_orders is not None:
            return o.max_open_orders
        return self.max_open_orders_per_instrument


def decode_limits(data: dict[str, Any]) -> RiskLimits:
    """Decode a parsed `[risk]` table (e.g. from tomllib) into `RiskLimits`.

    Raises `msgspec.ValidationError`, whose message names the offending key.
    """
    return msgspec.convert(data, RiskLimits)


# ---------------------------------------------------------------------------------------
# Run-time changes: `tradectl risk set KEY VALUE`
# ---------------------------------------------------------------------------------------

_NONE_WORDS = frozenset({"none", "null", "unlimited"})


def limit_keys(cls: type[msgspec.Struct] = RiskLimits, prefix: str = "") -> list[str]:
    """Every settable dotted key, for help texts and error messages."""
    keys: list[str] = []
    hints = get_type_hints(cls, include_extras=True)
    for name in cls.__struct_fields__:
        hint = hints[name]
        if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
            keys.extend(limit_keys(hint, f"{prefix}{name}."))
        elif get_origin(hint) is dict:
            keys.extend(limit_keys(InstrumentLimits, f"{prefix}{name}.<venue>:<symbol>."))
        else:
            keys.append(prefix + name)
    return keys


def _leaf_type(key: str) -> tuple[list[str], Any]:
    """Resolve a dotted key to its path inside the builtins form and its field type."""
    parts = key.split(".")
    cls: type[msgspec.Struct] = RiskLimits
    path: list[str] = []
    i = 0
    while i < len(parts):
        name = parts[i]
        hints = get_type_hints(cls, include_extras=True)
        if name not in cls.__struct_fields__:
            raise LimitError(key, f"unknown risk limit {key!r}; settable keys: {', '.join(limit_keys())}")
        hint = hints[name]
        path.append(name)
        last = i == len(parts) - 1
        if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
            if last:
                keys = ", ".join(limit_keys(hint, key + "."))
                raise LimitError(key, f"{key!r} is a section; name one of its keys: {keys}")
            cls = hint
        elif get_origin(hint) is dict:
            if len(parts) != i + 3:
                raise LimitError(
                    key, f"{key!r} needs an instrument and a field, e.g. instruments.binance:BTCUSDT.max_position"
                )
            path.append(parts[i + 1])
            i += 1
            cls = InstrumentLimits
        elif not last:
            raise LimitError(key, f"unknown risk limit {key!r}: {'.'.join(path)!r} has no sub-keys")
        else:
            return path, hint
        i += 1
    raise LimitError(key, f"{key!r} is a section, not a limit")  # pragma: no cover - loop always returns


def _allows_none(hint: Any) -> bool:
    return type(None) in get_args(hint)


def set_limit(limits: RiskLimits, key: str, value: str) -> RiskLimits:
    """Return new limits with `key` (dotted, e.g. `daily_loss.limit`) set from the text `value`.

    The value is parsed and validated exactly as the config file would be. On a
    bad key or value raise `LimitError` naming the key; `limits` is untouched.
    """
    key = key.strip()
    path, hint = _leaf_type(key)
    text = value.strip()
    data: dict[str, Any] = msgspec.to_builtins(limits)
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if text.lower() in _NONE_WORDS:
        if not _allows_none(hint):
            raise LimitError(key, f"risk limit {key!r} cannot be removed; give it a value")
        node[path[-1]] = None
    else:
        node[path[-1]] = _parse_scalar(key, text, hint)
    try:
        return msgspec.convert(data, RiskLimits, strict=False)
    except msgspec.ValidationError as exc:
        detail = str(exc).split(" - at `")[0]
        raise LimitError(key, f"cannot set risk limit {key!r} to {value!r}: {detail}") from None


def get_limit(limits: RiskLimits, key: str) -> Any:
    """The current value of a dotted key (None if unset), e.g. to audit a `risk set` as previous -> new."""
    path, _ = _leaf_type(key.strip())
    node: Any = limits
    for part in path:
        if isinstance(node, dict):
            node = node.get(part)
        elif node is not None:
            node = getattr(node, part)
    return node


def _parse_scalar(key: str, text: str, hint: Any) -> Any:
    """Check number syntax here so the error can say what was expected."""
    base = hint
    if get_origin(base) is not Literal and type(None) in get_args(base):
        base = next(a for a in get_args(base) if a is not type(None))
    if get_origin(base) is Annotated:
        base = get_args(base)[0]
    if base is Decimal:
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise LimitError(key, f"risk limit {key!r} expects a decimal number (or 'none'), got {text!r}") from None
        return str(number)
    if base is bool:
        lowered = text.lower()
        if lowered in ("true", "on", "yes", "1"):
            return True
        if lowered in ("false", "off", "no", "0"):
            return False
        raise LimitError(key, f"risk limit {key!r} expects true or false, got {text!r}")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise LimitError(key, f"risk limit {key!r} expects a whole number, got {text!r}") from None
    if base is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise LimitError(key, f"risk limit {key!r} expects a finite number, got {text!r}")
        return number
    if get_origin(base) is Literal:
        choices = get_args(base)
        if text not in choices:
            raise LimitError(key, f"risk limit {key!r} must be one of {', '.join(choices)}, got {text!r}")
        return text
    return text  # pragma: no cover - every leaf type is listed above
