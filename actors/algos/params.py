"""What an operator asks of an execution: the parent order and how to work it.

`ExecutionParams` is the whole request, frozen: the algorithms are pure
functions of it (plus the clock, the market and our orders), so a scheduler
that restarts from its checkpoint rebuilds exactly the same schedule from the
same parameters. Amending an execution means building new parameters
(`amend`), never mutating these.

Times are monotonic seconds on the driving shell's clock. After a restart the
clock has a new origin, so the shell re-bases `start`/`end` (for example with
`msgspec.structs.replace`) before it resumes.

`validate` turns every inconsistent request into a `ParameterError` that names
the offending field, in the words an operator can act on.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from daemon.model import Instrument, Side

ZERO = Decimal(0)


class ParameterError(ValueError):
    """An execution request that cannot be run as given; `param` names the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class Urgency(enum.StrEnum):
    """How hard to push when the execution falls behind its plan.

    LOW never escalates and stops at the end time. MEDIUM makes new children
    one notch more aggressive (PASSIVE -> MID -> CROSS) once two planned
    slices are unfilled, and stops at the end time. HIGH escalates one notch
    at one slice behind and crosses at two, and by default finishes the
    remainder at the end time with crossing children (see `finish_at_end`).
    """

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class ChildStyle(enum.StrEnum):
    """Where a child order is priced.

    PASSIVE: at our side's touch (a buy at the best bid), post-only by default.
    MID: at the mid, rounded away from crossing.
    CROSS: a LIMIT IOC on the far touch plus at most `collar_bps` (a buy at
    ask * (1 + collar)), so it takes liquidity but never sweeps the book
    beyond the collar.
    """

    PASSIVE = "PASSIVE"
    MID = "MID"
    CROSS = "CROSS"

    @property
    def rank(self) -> int:
        return _STYLE_ORDER.index(self)

    def escalated(self, notches: int) -> ChildStyle:
        return _STYLE_ORDER[min(self.rank + max(notches, 0), len(_STYLE_ORDER) - 1)]


_STYLE_ORDER = (ChildStyle.PASSIVE, ChildStyle.MID, ChildStyle.CROSS)


class _AlgoParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    pass


class TwapParams(_AlgoParams, tag="twap"):
    """An even schedule: the parent is released in `slices` equal parts.

    Give either `slices` or `interval` (seconds between slices); with neither,
    one slice a minute. `catch_up` bounds how much may work at once after
    falling behind, in planned slices. `run_ahead` is how far ahead of the
    schedule a child may put us (as a fraction of a slice) when the minimum
    child size forces rounding up.
    """

    slices: int | None = None
    interval: float | None = None
    catch_up: float = 3.0
    run_ahead: float = 0.5


class VwapParams(_AlgoParams, tag="vwap"):
    """Follow the market's volume curve over the horizon.

    `profile` holds the relative market volume expected in equal-width buckets
    spanning the horizon (see `actors.algos.vwap.profile_from_intraday` and
    `profile_from_volumes` to build it from an intraday curve or from volume
    observed before); empty means flat. With `expected_volume` (the market
    volume forecast for the whole horizon) the schedule adapts to the volume
    actually observed: when the market trades more than forecast we go
    faster, and slower when it is quiet. `max_participation` caps our share
    of the market volume observed so far (a finishing sweep after the end
    time, see `ExecutionParams`, is not capped). Children are released every
    `interval` seconds (default: the horizon / 60).
    """

    profile: tuple[float, ...] = ()
    expected_volume: Decimal | None = None
    max_participation: float | None = None
    interval: float | None = None
    catch_up: float = 3.0
    run_ahead: float = 0.5


class IcebergParams(_AlgoParams, tag="iceberg"):
    """Work only `display` at a time at the limit price.

    A new tip is sent `refill_delay` seconds after the previous one is done.
    The common `size_jitter` randomises the tip size downwards (a tip never
    shows more than `display`) and `time_jitter` the refill delay. With
    `native`, the venue's own iceberg is used instead (needs
    `Instrument.iceberg_allowed`): one order carrying `icebergQty = display`,
    at most `max_parts` tips long.
    """

    display: Decimal
    refill_delay: float = 0.0
    native: bool = False
    max_parts: int = 10


class PovParams(_AlgoParams, tag="pov"):
    """Participate at `rate` of the market volume since the start.

    `rate` is our share of the total (ours included), so our target is
    rate / (1 - rate) times the volume traded by others. `band` is the
    tolerated relative deviation: our share stays within rate * (1 +- band).
    """

    rate: float
    band: float = 0.2


AlgoParams = TwapParams | VwapParams | IcebergParams | PovParams


class ExecutionParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A parent order and the execution parameters common to every algorithm.

    Exactly one of `quantity` (base units) and `quote_amount` (quote units to
    spend or raise) is given. `end` or `duration` sets the horizon (needed by
    TWAP and VWAP; POV and Iceberg run until done without one).

    At the end time the execution either stops (cancels what works and
    reports the rest unfilled) or, with `finish_at_end`, sends the rest as
    crossing children within the collar and the limit for at most
    `end_overrun` seconds, then stops. `finish_at_end=None` means: finish
    when `urgency` is HIGH.

    With `quote_amount`, children are sized so that at their own prices
    they commit at most the amount. A buy never pays more than its price, so
    it never spends more than the amount. A sell may be filled above its
    price; that price improvement (for a crossing child, at most the collar)
    is the only way its proceeds can exceed the amount.

    Other fields: `collar_bps` bounds crossing children; `min_child` and
    `max_child` bound child sizes (base units) besides the venue's filters;
    `replace_after` is how long a resting child may sit off the wanted price
    before it is replaced; `size_jitter`/`time_jitter` (fractions, < 0.5)
    randomise sizes and times reproducibly from `seed`; after a reject the
    next child waits `reject_backoff` seconds, doubling per reject in a row,
    and after `max_rejects` in a row the execution fails.
    """

    instrument: Instrument
    side: Side
    algo: AlgoParams
    quantity: Decimal | None = None
    quote_amount: Decimal | None = None
    limit_price: Decimal | None = None
    start: float = 0.0
    end: float | None = None
    duration: float | None = None
    urgency: Urgency = Urgency.MEDIUM
    child_style: ChildStyle = ChildStyle.PASSIVE
    post_only: bool | None = None
    collar_bps: float = 20.0
    min_child: Decimal | None = None
    max_child: Decimal | None = None
    max_live_children: int = 4
    replace_after: float = 15.0
    size_jitter: float = 0.0
    time_jitter: float = 0.0
    seed: int = 0
    finish_at_end: bool | None = None
    end_overrun: float = 60.0
    max_rejects: int = 10
    reject_backoff: float = 1.0

    @property
    def venue(self) -> str:
        return self.instrument.venue

    @property
    def symbol(self) -> str:
        return self.instrument.symbol

    @property
    def kind(self) -> str:
        return type(self.algo).__struct_config__.tag  # type: ignore[attr-defined, no-any-return]

    @property
    def in_quote(self) -> bool:
        """True when the parent is a quote amount rather than a base quantity."""
        return self.quote_amount is not None

    @property
    def total(self) -> Decimal:
        """The parent's size in its own units (base quantity or quote amount)."""
        total = self.quote_amount if self.quote_amount is not None else self.quantity
        assert total is not None, "validate() guarantees a quantity or a quote amount"
        return total

    @property
    def end_time(self) -> float | None:
        if self.end is not None:
            return self.end
        if self.duration is not None:
            return self.start + self.duration
        return None

    @property
    def horizon(self) -> float | None:
        end = self.end_time
        return None if end is None else end - self.start

    @property
    def finishes_at_end(self) -> bool:
        if self.finish_at_end is not None:
            return self.finish_at_end
        return self.urgency is Urgency.HIGH

    @property
    def posts_only(self) -> bool:
        """Whether resting children are post-only (LIMIT_MAKER).

        Iceberg tips rest at the operator's limit, which may be marketable on
        purpose, so they are not post-only unless asked.
        """
        if self.post_only is not None:
            return self.post_only
        return not isinstance(self.algo, IcebergParams)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def validate(params: ExecutionParams) -> None:
    """Raise `ParameterError` for the first thing that makes `params` unworkable."""
    inst = params.instrument
    if not inst.trading:
        raise ParameterError("instrument", f"{inst.symbol} is not trading at {inst.venue}; pick a trading symbol")
    _validate_size(params)
    if params.limit_price is not None:
        _positive_on_grid("limit_price", params.limit_price, inst.tick_size, "tick size")
    _validate_times(params)
    _finite_range("collar_bps", params.collar_bps, 0.0, 10_000.0, low_open=True)
    _finite_range("size_jitter", params.size_jitter, 0.0, 0.5, high_open=True)
    _finite_range("time_jitter", params.time_jitter, 0.0, 0.5, high_open=True)
    _finite_range("replace_after", params.replace_after, 0.0, math.inf, low_open=True)
    _finite_range("end_overrun", params.end_overrun, 0.0, math.inf)
    _finite_range("reject_backoff", params.reject_backoff, 0.0, math.inf)
    if params.max_live_children < 1:
        raise ParameterError("max_live_children", "must be at least 1")
    if params.max_rejects < 1:
        raise ParameterError("max_rejects", "must be at least 1")
    _validate_child_bounds(params)
    algo = params.algo
    if isinstance(algo, TwapParams):
        _validate_twap(params, algo)
    elif isinstance(algo, VwapParams):
        _validate_vwap(params, algo)
    elif isinstance(algo, IcebergParams):
        _validate_iceberg(params, algo)
    elif isinstance(algo, PovParams):
        _validate_pov(algo)
    else:  # pragma: no cover - the union is closed
        raise ParameterError("algo", f"unknown algorithm {algo!r}")


def _validate_size(params: ExecutionParams) -> None:
    inst = params.instrument
    if (params.quantity is None) == (params.quote_amount is None):
        raise ParameterError("quantity", "give exactly one of quantity (base units) and quote_amount")
    if params.quantity is not None:
        _positive_on_grid("quantity", params.quantity, inst.step_size, "step size")
        if inst.min_qty and params.quantity < inst.min_qty:
            raise ParameterError(
                "quantity", f"{params.quantity} is below the venue minimum {inst.min_qty} for {inst.symbol}"
            )
    else:
        assert params.quote_amount is not None
        if not params.quote_amount.is_finite() or params.quote_amount <= 0:
            raise ParameterError(
                "quote_amount", f"must be a positive amount of {inst.quote}, got {params.quote_amount}"
            )
        if inst.min_notional and params.quote_amount < inst.min_notional:
            raise ParameterError(
                "quote_amount", f"{params.quote_amount} is below the venue minimum notional {inst.min_notional}"
            )


def _validate_times(params: ExecutionParams) -> None:
    if not math.isfinite(params.start):
        raise ParameterError("start", "must be a finite time")
    if params.end is not None and params.duration is not None:
        raise ParameterError("duration", "give either end or duration, not both")
    if params.duration is not None:
        _finite_range("duration", params.duration, 0.0, math.inf, low_open=True)
    if params.end is not None and not (math.isfinite(params.end) and params.end > params.start):
        raise ParameterError("end", f"must be after the start ({params.start}), got {params.end}")
    if params.end_time is None and isinstance(params.algo, TwapParams | VwapParams):
        raise ParameterError("duration", f"{params.kind.upper()} needs a horizon: give duration or end")


def _validate_child_bounds(params: ExecutionParams) -> None:
    inst = params.instrument
    for name in ("min_child", "max_child"):
        value = getattr(params, name)
        if value is not None:
            _positive_on_grid(name, value, inst.step_size, "step size")
    if params.max_child is not None:
        if inst.min_qty and params.max_child < inst.min_qty:
            raise ParameterError(
                "max_child", f"{params.max_child} is below the venue minimum {inst.min_qty}; no child could be sent"
            )
        if params.min_child is not None and params.min_child > params.max_child:
            raise ParameterError("min_child", f"{params.min_child} is above max_child {params.max_child}")


def _validate_twap(params: ExecutionParams, twap: TwapParams) -> None:
    horizon = params.horizon
    assert horizon is not None
    if twap.slices is not None and twap.interval is not None:
        raise ParameterError("slices", "give either slices or interval, not both")
    if twap.slices is not None and twap.slices < 1:
        raise ParameterError("slices", f"must be at least 1, got {twap.slices}")
    if twap.interval is not None:
        _finite_range("interval", twap.interval, 0.0, horizon, low_open=True)
    _finite_range("catch_up", twap.catch_up, 1.0, math.inf)
    _finite_range("run_ahead", twap.run_ahead, 0.0, math.inf)


def _validate_vwap(params: ExecutionParams, vwap: VwapParams) -> None:
    horizon = params.horizon
    assert horizon is not None
    if any(not math.isfinite(w) or w < 0 for w in vwap.profile):
        raise ParameterError("profile", "weights must be finite and non-negative")
    if vwap.profile and sum(vwap.profile) <= 0:
        raise ParameterError("profile", "at least one weight must be positive")
    if vwap.expected_volume is not None and not (vwap.expected_volume.is_finite() and vwap.expected_volume > 0):
        raise ParameterError("expected_volume", f"must be a positive market volume, got {vwap.expected_volume}")
    if vwap.max_participation is not None:
        _finite_range("max_participation", vwap.max_participation, 0.0, 1.0, low_open=True, high_open=True)
    if vwap.interval is not None:
        _finite_range("interval", vwap.interval, 0.0, horizon, low_open=True)
    _finite_range("catch_up", vwap.catch_up, 1.0, math.inf)
    _finite_range("run_ahead", vwap.run_ahead, 0.0, math.inf)


def _validate_iceberg(params: ExecutionParams, ice: IcebergParams) -> None:
    inst = params.instrument
    if params.limit_price is None:
        raise ParameterError("limit_price", "an iceberg rests at a limit price; give one")
    _positive_on_grid("display", ice.display, inst.step_size, "step size")
    if inst.min_qty and ice.display < inst.min_qty:
        raise ParameterError("display", f"{ice.display} is below the venue minimum {inst.min_qty}")
    if inst.min_notional and ice.display * params.limit_price < inst.min_notional:
        raise ParameterError(
            "display",
            f"{ice.display} at {params.limit_price} is below the venue minimum notional {inst.min_notional}",
        )
    if params.quantity is not None and ice.display > params.quantity:
        raise ParameterError("display", f"{ice.display} is larger than the whole quantity {params.quantity}")
    _finite_range("refill_delay", ice.refill_delay, 0.0, math.inf)
    if ice.max_parts < 1:
        raise ParameterError("max_parts", "must be at least 1")
    if ice.native:
        if not inst.iceberg_allowed:
            raise ParameterError(
                "native", f"{inst.venue} does not allow iceberg orders on {inst.symbol}; drop native to slice locally"
            )
        if params.quantity is None:
            raise ParameterError("native", "a native iceberg needs a base quantity, not a quote amount")


def _validate_pov(pov: PovParams) -> None:
    _finite_range("rate", pov.rate, 0.0, 1.0, low_open=True, high_open=True)
    _finite_range("band", pov.band, 0.0, 1.0, high_open=True)


def _positive_on_grid(name: str, value: Decimal, grid: Decimal, grid_name: str) -> None:
    if not value.is_finite() or value <= 0:
        raise ParameterError(name, f"must be positive, got {value}")
    if value % grid != 0:
        below = (value // grid) * grid
        raise ParameterError(
            name, f"{value} is not a multiple of the {grid_name} {grid}; use {below} or {below + grid}"
        )


def _finite_range(
    name: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if math.isnan(value) or too_low or too_high or (math.isinf(value)):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ParameterError(name, f"must be in {left}{low:g}, {high:g}{right}, got {value}")


# ---------------------------------------------------------------------------------------
# Building and amending
# ---------------------------------------------------------------------------------------


def parse_params(args: Mapping[str, Any], instrument: Instrument) -> ExecutionParams:
    """Decode a request (e.g. from the control socket) and validate it.

    `args` holds the fields of `ExecutionParams` except `instrument`, with the
    algorithm under `algo` (`{"kind": "twap", "slices": 30}`); decimals may be
    strings or numbers. Errors come out as `ParameterError` naming the field.
    """
    if "instrument" in args:
        raise ParameterError("instrument", "is looked up from the venue and symbol; do not pass it")
    try:
        params = msgspec.convert({**args, "instrument": instrument}, ExecutionParams, from_attributes=False)
    except msgspec.ValidationError as exc:
        raise ParameterError(_field_of(str(exc)), str(exc)) from None
    validate(params)
    return params


def _field_of(message: str) -> str:
    """The field a msgspec validation message points at, named as `validate` names it.

    msgspec says "Object contains unknown field `x` - at `$.algo`" or
    "Expected `float`, got `str` - at `$.algo.rate`"; both give the bare
    field name ("x", "rate"), which is also the operator's option name.
    """
    for marker in ("unknown field `", "required field `"):
        if marker in message:
            return message.split(marker, 1)[1].split("`", 1)[0]
    if "at `$." in message:
        return message.rsplit("at `$.", 1)[1].rstrip("`").split("[", 1)[0].rsplit(".", 1)[-1]
    return "params"


_UNSET: Any = object()


def amend(
    params: ExecutionParams, *, limit_price: Decimal | None = _UNSET, end: float | None = _UNSET
) -> ExecutionParams:
    """The parameters with a new limit price and/or end time, validated.

    Working children priced beyond a new limit are cancelled by the next
    decision; a later end stretches the remaining schedule.
    """
    changes: dict[str, Any] = {}
    if limit_price is not _UNSET:
        changes["limit_price"] = limit_price
    if end is not _UNSET:
        changes["end"] = end
        changes["duration"] = None
    amended = msgspec.structs.replace(params, **changes)
    validate(amended)
    return amended
